"""A stored run as a diagram: Mermaid source (`run_to_mermaid`) and plain text
(`run_to_text`), from its snapshot and, when they were kept, its events.

The diagram is a flowchart in execution order: the run's start, each recorded step
(its outcome, attempts and duration), and the run's status at the end (what a
waiting run waits for, a pending run's queue).  Events add what a snapshot does not
record: steps without a key, retries and timeouts.  Both functions are pure (no
I/O): load the snapshot first (``await store.load(id)``, and ``await store.info(id)``
for the wait, queue and lease).

Every stored text that reaches the diagram (the run's id, its workflow's name, step
names, errors) is escaped for Mermaid (``#35;``-style entity codes, so a hostile
name cannot close a label or add a node) and has secrets in URLs masked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

import attrs

from ._dashboard_html import masked
from ._redact import redact_text
from ._result import Err, Ok
from ._snapshot import SnapshotInfo, WorkflowSnapshot
from ._versions import step_label
from .events import (
    StepComplete,
    StepFailed,
    StepRetry,
    StepSkipped,
    StepStart,
    StepTimeout,
    StepWaiting,
    WorkflowEvent,
)

__all__ = ["DiagramStep", "diagram_steps", "run_to_mermaid", "run_to_text"]

_WIDTH = 60  # characters of a value or an error shown in a diagram


@attrs.frozen
class DiagramStep:
    """One step of a run's diagram, in execution order.

    ``outcome`` is ``"ok"``, ``"error"``, ``"waiting"`` (a step that emitted
    ``step_waiting`` and no outcome yet) or ``"running"`` (started, no outcome);
    ``detail`` is the value or the error, shortened, secrets masked."""

    key: str
    name: str
    outcome: str
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    detail: str = ""
    retries: int = 0
    timeouts: int = 0


def short(value: object, width: int = _WIDTH) -> str:
    """``value`` on one line (a string as it is, anything else as JSON-like text), at
    most ``width`` characters, with what looks like a secret masked (see
    `awaitly_anyio._dashboard_html.masked`)."""
    shown = masked(value)
    text = shown if isinstance(shown, str) else _compact(shown)
    text = redact_text(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


def _error_text(error: object) -> str:
    if isinstance(error, BaseException):
        return short(f"{type(error).__name__}: {error}")
    return short(error)


def diagram_steps(
    snapshot: WorkflowSnapshot, events: Iterable[WorkflowEvent] | None = None
) -> list[DiagramStep]:
    """The steps of ``snapshot`` in execution order, with what ``events`` (the run's
    events, in the order they were emitted, if they were kept) add: steps without a
    key, retries, timeouts, and a step still waiting or running."""
    steps: dict[str, DiagramStep] = {}
    for key, record in snapshot.steps.items():
        took = None
        if record.started_at is not None and record.finished_at is not None:
            took = max((record.finished_at - record.started_at).total_seconds(), 0.0) * 1000
        result = record.result
        if isinstance(result, Ok):
            outcome, detail = "ok", short(result.value)
        elif isinstance(result, Err):
            outcome, detail = "error", _error_text(result.error)
        else:  # pragma: no cover - StepRecord validates its result
            outcome, detail = "?", ""
        steps[key] = DiagramStep(
            key,
            _name_of(key),
            outcome,
            record.attempts,
            record.started_at,
            record.finished_at,
            took,
            detail,
        )
    if events is None:
        return list(steps.values())
    ordered: dict[str, DiagramStep] = {}
    unkeyed = 0
    for event in events:
        if not isinstance(
            event,
            StepStart | StepComplete | StepFailed | StepRetry | StepTimeout | StepWaiting,
        ) and not isinstance(event, StepSkipped):
            continue
        if event.workflow_id != snapshot.workflow_id:
            continue
        if event.step_key is not None:
            key = event.step_key
        else:
            if isinstance(event, StepStart):
                unkeyed += 1
            key = f"{event.name}\x00{unkeyed}"  # a step without a key: one per start
        step = ordered.get(key) or steps.get(key) or DiagramStep(key, event.name, "running")
        if step.name != event.name and event.step_key is not None:
            step = attrs.evolve(step, name=event.name)
        if isinstance(event, StepRetry):
            step = attrs.evolve(step, retries=step.retries + 1)
        elif isinstance(event, StepTimeout):
            step = attrs.evolve(step, timeouts=step.timeouts + 1)
        elif isinstance(event, StepWaiting) and step.outcome == "running":
            step = attrs.evolve(step, outcome="waiting")
        elif isinstance(event, StepComplete) and key not in steps:
            step = attrs.evolve(step, outcome="ok", duration_ms=event.duration_ms)
        elif isinstance(event, StepFailed) and key not in steps:
            step = attrs.evolve(
                step,
                outcome="error",
                duration_ms=event.duration_ms,
                detail=_error_text(event.error),
            )
        ordered[key] = step
    # Recorded steps the events did not mention (the events of an earlier attempt were
    # not kept) come first: they ran before.
    missing = [step for key, step in steps.items() if key not in ordered]
    return missing + list(ordered.values())


def _name_of(key: str) -> str:
    """A step's name from its key: the key, or the step name of an automatic key (one
    the durable run made, ``awaitly.step:PARENT#1/NAME#2``)."""
    return step_label(key)


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 1 else f"{ms:.2f} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _end(snapshot: WorkflowSnapshot, info: SnapshotInfo | None) -> str:
    """The run's last node: its status, and what it waits for or where it is queued."""
    status = snapshot.status if info is None or info.damaged else info.status
    if status == "waiting" and info is not None:
        what: str = info.wait_kind or "a value"
        if info.waiting_for is not None:
            what = f"{what} {info.waiting_for!r}"
        until = "" if info.wake_at is None else f" until {info.wake_at.isoformat()}"
        return f"waiting for {short(what)}{until}"
    if status == "pending" and info is not None and info.queue is not None:
        return f"pending on queue {short(info.queue)}"
    if status == "failed":
        error = snapshot.metadata.get("awaitly.error")
        if isinstance(error, str):
            return f"failed: {short(error)}"
    if status == "completed" and snapshot.result is not None:
        if isinstance(snapshot.result, Ok):
            return f"completed: {short(snapshot.result.value)}"
        return f"completed with an error: {_error_text(snapshot.result.error)}"
    return str(status)


def _step_line(n: int, step: DiagramStep) -> str:
    parts = [step.outcome]
    if step.attempts > 1:
        parts.append(f"{step.attempts} attempts")
    if step.retries:
        parts.append(f"{step.retries} retries")
    if step.timeouts:
        parts.append(f"{step.timeouts} timeouts")
    took = _duration(step.duration_ms)
    if took:
        parts.append(took)
    head = f"{n}. {short(step.name)} [{', '.join(parts)}]"
    return f"{head} {step.detail}" if step.detail else head


def run_to_text(
    snapshot: WorkflowSnapshot,
    *,
    info: SnapshotInfo | None = None,
    events: Iterable[WorkflowEvent] | None = None,
) -> str:
    """Run ``snapshot`` as a plain-text diagram: its start, each step in execution
    order (outcome, attempts, duration, value or error), and its status; ``info``
    (``await store.info(id)``) adds what a waiting run waits for and a pending run's
    queue; ``events`` adds steps without a key, retries and timeouts.

    Values and errors are shortened to one line with secrets in URLs masked.  Pure:
    no I/O, nothing raised for any snapshot."""
    lines = [f"run {short(snapshot.workflow_id)} of {short(snapshot.workflow_name)}", "  |"]
    for n, step in enumerate(diagram_steps(snapshot, events), 1):
        lines.append(f"  +-- {_step_line(n, step)}")
        lines.append("  |")
    lines.append(f"  +== {_end(snapshot, info)}")
    return "\n".join(lines) + "\n"


# Characters a Mermaid label may hold as they are; anything else is written as an
# entity code (#35; is '#'), so no stored text can end a label, a node or a line.
_MERMAID_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:/+-=*!?@$%'…"
)


def mermaid_label(text: str) -> str:
    """``text`` as the inside of a quoted Mermaid label (``id["..."]``)."""
    return "".join(c if c in _MERMAID_SAFE else f"#{ord(c)};" for c in text)


_CLASSES: Mapping[str, str] = {
    "ok": "fill:#e6f4ea,stroke:#1e7d32",
    "error": "fill:#fdecea,stroke:#c62828",
    "waiting": "fill:#fff8e1,stroke:#f9a825",
    "running": "fill:#e3f2fd,stroke:#1565c0",
    "final": "fill:#f5f5f5,stroke:#616161",
}


def run_to_mermaid(
    snapshot: WorkflowSnapshot,
    *,
    info: SnapshotInfo | None = None,
    events: Iterable[WorkflowEvent] | None = None,
) -> str:
    """Run ``snapshot`` as Mermaid flowchart source (``flowchart TD``): a start node,
    one node per step in execution order (outcome, attempts, duration; styled by
    outcome: ok, error, waiting, running), and an end node with the run's status.
    ``info`` and ``events`` add what `run_to_text` says they add.

    Paste it into any Mermaid renderer (GitHub and GitLab Markdown, mkdocs-material,
    Jupyter through ``IPython.display.Markdown``).  Every stored text is escaped as
    Mermaid entity codes and has secrets masked.  Pure: no I/O, nothing raised."""
    lines = ["flowchart TD"]
    title = f"{short(snapshot.workflow_name)} / {short(snapshot.workflow_id)}"
    lines.append(f'    start(["{mermaid_label(title)}"])')
    previous = "start"
    used: set[str] = set()
    for n, step in enumerate(diagram_steps(snapshot, events), 1):
        node = f"s{n}"
        label = _step_line(n, step)
        lines.append(f'    {node}["{mermaid_label(label)}"]')
        lines.append(f"    {previous} --> {node}")
        klass = step.outcome if step.outcome in _CLASSES else "running"
        lines.append(f"    class {node} {klass}")
        used.add(klass)
        previous = node
    lines.append(f'    finish(["{mermaid_label(_end(snapshot, info))}"])')
    lines.append(f"    {previous} --> finish")
    lines.append("    class finish final")
    used.add("final")
    lines.extend(f"    classDef {name} {style}" for name, style in _CLASSES.items() if name in used)
    return "\n".join(lines) + "\n"
