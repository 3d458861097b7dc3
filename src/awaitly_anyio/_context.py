"""What a workflow body receives: ``ctx.step``, ``ctx.steps``, ``ctx.deps`` and its identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import Any, Generic, TypeVar, cast

from typing_extensions import TypeVar as _TypeVarWithDefault
from typing_extensions import Unpack

from ._policies import EMPTY_CONTEXT, CallOptions, Policy, WithPolicy, call_options, policy_step
from ._result import Ok
from ._run import RunState
from ._step_groups import Step
from ._versions import PATCH_PREFIX

__all__ = ["BoundStep", "BoundSteps", "Deps", "WorkflowContext", "override_deps"]

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


def override_deps(workflow_name: str, deps: object, given: object) -> object:
    """The deps of one run given ``run(..., deps=given)`` over the workflow's ``deps``.

    Over a `Deps` (a workflow made with a mapping, or none), ``given`` must be a
    mapping: it is merged over them (its entries replace the workflow's of the same
    name; the others stay).  Over any other deps object, ``given`` replaces it and
    may not be a mapping (that would change what ``ctx.deps`` is).  Raises
    ``TypeError`` naming the workflow."""
    if isinstance(deps, Deps):
        if not isinstance(given, Mapping):
            raise TypeError(
                f"workflow {workflow_name!r}: run(deps=...) must be a mapping of "
                f"dependencies (merged over the workflow's), not {given!r}"
            )
        # Deps checks the names, the given ones with the rest.
        return Deps({**deps._items, **cast("Mapping[str, object]", given)})
    if isinstance(given, Mapping):
        raise TypeError(
            f"workflow {workflow_name!r}: its deps are a {type(deps).__name__}, so "
            f"run(deps=...) must be one too (it replaces them), not a mapping"
        )
    return given


class BoundStep:
    """One dependency as a step: ``ctx.steps.fetch_user`` (see `BoundSteps`).

    Calling it, ``await ctx.steps.fetch_user(42)``, runs ``fetch_user(42)`` as a step
    named after the dependency, under the dependency's `Policy` if it has one (see
    `policy`).  ``options(...)`` gives the same dependency with other settings for
    the calls made through it: ``await ctx.steps.charge_card.options(timeout=5)(card)``
    (``None`` turns a setting off; ``key=`` keys the step).  A bad option raises
    ``TypeError``/``ValueError`` naming it, from ``options`` itself.
    """

    __slots__ = ("_counts", "_fn", "_key", "_name", "_policy", "_step", "_steps")

    def __init__(
        self,
        steps: BoundSteps,
        name: str,
        fn: Callable[..., Any],
        policy: Policy | None,
        key: str | None = None,
    ) -> None:
        self._steps = steps
        self._step = steps._step
        self._counts = steps._counts
        self._name = name
        self._fn = fn
        self._policy = policy
        self._key = key

    @property
    def policy(self) -> Policy | None:
        """The policy its calls run under (``None``: a plain step)."""
        return self._policy

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run the dependency with these arguments as a step and give its value (a
        coroutine to await).  Failures end the workflow as any step's do; cancellation
        propagates."""
        counts = self._counts
        name = self._name
        count = counts.get(name, 0) + 1
        counts[name] = count
        if count != 1:
            name = f"{name}#{count}"
        call = partial(self._fn, *args, **kwargs)
        policy = self._policy
        if policy is not None:
            return policy_step(self._step, name, call, policy, self._key)
        if self._key is not None:
            return self._step(name, call, key=self._key)
        return self._step(name, call)

    def options(self, **options: Unpack[CallOptions]) -> BoundStep:
        """This dependency with ``options`` over its policy (``retry``, ``timeout``,
        ``limiter``, ``breaker``) and the step's ``key``, for the calls made
        through what it returns."""
        policy, key = call_options(self._policy, self._key, options)
        return BoundStep(self._steps, self._name, self._fn, policy, key)

    def __repr__(self) -> str:
        return f"<BoundStep {self._name!r} policy={self._policy!r}>"


class BoundSteps:
    """``ctx.steps.fetch_user(*args)`` runs ``deps.fetch_user(*args)`` as a step named after it.

    Repeated calls are numbered so every step name in a run is unique:
    ``fetch_user``, ``fetch_user#2``, ``fetch_user#3``.  A dependency wrapped with
    `policy` runs under its policy; ``ctx.steps.fetch_user.options(...)`` changes
    it for one call (see `BoundStep`).
    """

    # A __dict__ for the bound steps already made: after the first ``ctx.steps.name``
    # of a run, the next ones are a plain attribute lookup, not a failed one and a call
    # of __getattr__ (which cost a bound step more than the step itself).
    __slots__ = ("__dict__", "_counts", "_deps", "_step")

    def __init__(self, step: Step, deps: object) -> None:
        self._step = step
        self._deps = deps
        self._counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> BoundStep:
        deps = self._deps
        if isinstance(deps, Deps):
            # By item, not attribute: a dependency called ``get`` or ``items`` is the
            # dependency, not the mapping's method.
            try:
                dep = deps._items[name]
            except KeyError:
                dep = getattr(deps, name)  # raises the AttributeError naming the known ones
        else:
            dep = getattr(deps, name)
        if not callable(dep):
            raise TypeError(f"dependency {name!r} is not callable, so it cannot be a step")
        if isinstance(dep, WithPolicy):
            wrapped = cast("WithPolicy[..., Any]", dep)
            bound = BoundStep(self, name, wrapped.__wrapped__, wrapped.policy)
        else:
            bound = BoundStep(self, name, dep, None)
        self.__dict__[name] = bound
        return bound


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

    __slots__ = ("_context", "_run", "_steps", "deps", "input", "step")

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

    def __init__(
        self,
        run: RunState,
        deps: D,
        input: Any = None,
        context: Mapping[str, Any] = EMPTY_CONTEXT,
    ) -> None:
        self._context = context
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

    def patched(self, name: str) -> bool:
        """Whether this run takes the code path of patch ``name`` (a change deployed
        while runs were in flight): ``if ctx.patched("tax-v2"): ... else: ...``.

        ``True`` for a run that reaches this point for the first time (it started
        after the patch, or had not got this far); ``False`` for a run that had gone
        past this point before (it has recorded steps beyond it still to replay), so
        it keeps the path it took.  The answer is recorded with the run's next step
        (under ``awaitly.patch:<name>``), so it never changes for a run.  Without a
        store every run is new: ``True``.  ``ValueError`` for a name that is not a
        non-empty string.  See docs/changing-workflows.md."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a patch needs a non-empty string name, not {name!r}")
        run = self._run
        track = run.track
        if track is None:
            return True
        key = PATCH_PREFIX + name
        found = run.completed.get(key)
        if found is not None:
            return bool(found.value)
        applies = not track.passed()
        # Saved before the run's next step executes (Step._save_markers): a run that
        # records nothing after this point may decide again, the same way.
        track.unsaved.append((key, applies))
        run.remember(key, Ok(applies))
        return applies

    @property
    def context(self) -> Mapping[str, Any]:
        """The run's context, ``workflow.run(..., context=...)`` (read-only; empty when
        none was given), also carried on every event of the run."""
        return self._context

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
