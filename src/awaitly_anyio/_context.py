"""What a workflow body receives: ``ctx.step``, ``ctx.steps``, ``ctx.deps`` and its identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import Any, Generic, TypeVar

from typing_extensions import TypeVar as _TypeVarWithDefault

from ._run import RunState
from ._step_groups import Step

__all__ = ["BoundSteps", "Deps", "WorkflowContext"]

D = TypeVar("D")
# The type of ``ctx.input``: ``WorkflowContext[Deps, Order]`` says the run's input is an
# Order (``workflow.run(body, input=Order(...))`` is then checked); ``WorkflowContext[Deps]``
# leaves it ``Any``, as before.
I = _TypeVarWithDefault("I", default=Any)  # noqa: E741


class Deps(Mapping[str, Any]):
    """A mapping of dependencies that also allows attribute access: ``deps.fetch_user``."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items = dict(items or {})
        names: list[object] = list(self._items)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"dependency names must be strings, not {name!r}")

    def __getattr__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise AttributeError(f"no dependency named {name!r} (known: {known})") from None

    def __getitem__(self, name: str) -> Any:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Deps({self._items!r})"


class BoundSteps:
    """``ctx.steps.fetch_user(*args)`` runs ``deps.fetch_user(*args)`` as a step named after it.

    Repeated calls are numbered so every step name in a run is unique:
    ``fetch_user``, ``fetch_user#2``, ``fetch_user#3``.
    """

    __slots__ = ("_counts", "_deps", "_step")

    def __init__(self, step: Step, deps: object) -> None:
        self._step = step
        self._deps = deps
        self._counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        dep = getattr(self._deps, name)
        if not callable(dep):
            raise TypeError(f"dependency {name!r} is not callable, so it cannot be a step")
        counts = self._counts

        def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            count = counts.get(name, 0) + 1
            counts[name] = count
            step_name = name if count == 1 else f"{name}#{count}"
            return self._step(step_name, partial(dep, *args, **kwargs))

        return call


# The variants of ``ctx.step``, the attributes of `Step` the reference documents.
_VARIANTS = ("retry", "with_timeout", "try_", "sleep", "skip", "all", "race", "for_each")


class WorkflowContext(Generic[D, I]):
    """The body's handle on its run.  ``deps`` is whatever the workflow was created with
    (a mapping becomes `Deps`, so ``ctx.deps.name`` works either way).

    ``input`` is the run's input (``workflow.run(body, input=...)``, kept with a
    durable run).  Its type is the second parameter: annotate the body with
    ``WorkflowContext[Deps, Order]`` to have ``ctx.input`` typed as ``Order`` (and
    the ``input=`` given to ``run`` checked); with ``WorkflowContext[Deps]`` it is
    ``Any``.  The type is not checked at runtime.
    """

    __slots__ = ("_run", "_steps", "deps", "input", "step")

    step: Step
    """Run a step: ``await ctx.step(name, fn, key=..., retry=..., timeout=...)``.  The
    variants are its attributes: ``ctx.step.retry``, ``with_timeout``, ``try_``,
    ``sleep``, ``skip``, ``all``, ``race`` and ``for_each`` (see ``Step``)."""

    deps: D
    """The workflow's dependencies, as given to ``create_workflow`` (a mapping is
    wrapped in ``Deps``, so ``ctx.deps.name`` works either way)."""

    input: I
    """The run's input (``workflow.run(body, input=...)``), kept with a durable run so
    that whoever resumes it gets it back; ``None`` when none was given."""

    def __init__(self, run: RunState, deps: D, input: Any = None) -> None:
        self.step = Step(run)
        self._run = run
        self._steps: BoundSteps | None = None
        self.deps = deps
        self.input = input

    @property
    def workflow_id(self) -> str:
        """The run's id: the one it was given, or a uuid4 string."""
        return self._run.workflow_id

    @property
    def workflow_name(self) -> str:
        """The name of the workflow this run belongs to."""
        return self._run.name

    @property
    def steps(self) -> BoundSteps:
        """The dependencies as steps: ``ctx.steps.fetch_user(42)`` (made on first use)."""
        if self._steps is None:
            self._steps = BoundSteps(self.step, self.deps)
        return self._steps

    def __repr__(self) -> str:
        return (
            f"WorkflowContext(workflow_name={self.workflow_name!r}, "
            f"workflow_id={self.workflow_id!r})"
        )
