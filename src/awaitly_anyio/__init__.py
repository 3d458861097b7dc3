"""awaitly-anyio: typed, Result-returning workflows for asyncio and trio.

The public API is this module's ``__all__``; everything else is private.
"""

from __future__ import annotations

import contextlib

from . import events, logs
from ._cache import MemoryCache, StoreCache
from ._circuit_breaker import (
    BreakerStats,
    CircuitBreaker,
    CircuitState,
    RedisCircuitBreaker,
    create_circuit_breaker,
)
from ._clock import Clock, SystemClock
from ._collector import ResumeStateCollector, create_resume_state_collector
from ._context import BoundStep, BoundSteps, Deps, WorkflowContext
from ._diagram import run_to_mermaid, run_to_text
from ._durable import IfRunning
from ._errors import (
    AllFailedError,
    AlreadyDeliveredError,
    ApprovalRejectedError,
    AwaitlyError,
    CircuitOpenError,
    CompensationError,
    CompensationFailure,
    HookTokenError,
    InputConflictError,
    InputValidationError,
    LeaseLostError,
    LimiterQueueFullError,
    RateLimitExceededError,
    RunFinishedError,
    RunInProgressError,
    RunParkedError,
    RunStateError,
    SerializationError,
    SharedStateUnavailableError,
    SnapshotDecodeError,
    StepTimeoutError,
    StoredException,
    StoreError,
    UnexpectedError,
    WaitTimeoutError,
    WorkflowDriftError,
    WorkflowMismatchError,
    WorkflowVersionError,
    is_unexpected_error,
)
from ._host import HostAtCapacityError, HostClosedError, RunHandle, WorkflowHost
from ._lifespan import WorkflowLifespan
from ._policies import Guard, Policy, WithPolicy, policy
from ._queues import Queue, QueuedRun, enqueue
from ._ratelimit import OnUnavailable, RateLimiter, RedisRateLimiter, create_rate_limiter
from ._recovery import RecoveredRun, WorkflowRegistry, claim_abandoned, recover, recovery_loop
from ._result import (
    Err,
    Ok,
    Result,
    UnwrapError,
    all_ok,
    attempt,
    attempt_async,
    err,
    first_ok,
    ok,
    partition,
    settle,
)
from ._resume import ResumeState, StepRecord, SupportsResume
from ._rows import MAX_MESSAGE_BYTES
from ._saga import Compensation
from ._schedules import (
    Schedule,
    ScheduleInfo,
    SchedulePass,
    add_schedule,
    fire_schedules,
    list_schedules,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    run_schedules,
    tick_run_id,
)
from ._singleflight import Singleflight
from ._snapshot import (
    FORMAT_VERSION,
    RunStatus,
    SnapshotInfo,
    SnapshotPage,
    WaitKind,
    WorkflowSnapshot,
)
from ._step import Backoff, RetryPolicy
from ._step_cache import CacheLookup, StepCache
from ._step_groups import Step
from ._store import (
    CheckpointStore,
    Claim,
    ClaimOutcome,
    EncodedStep,
    LeaseStore,
    MailboxStore,
    QueueStore,
    SendWatch,
    SnapshotStore,
    StoredSchedule,
)
from ._versions import Migration
from ._waiting import approve, pending_approvals, reject, resolve_hook, send
from ._waits import Approval, Hook
from ._workflow import Workflow, create_workflow, run
from .config import Secret, Settings, SettingsError
from .dashboard import create_dashboard_app
from .health import HealthTracker, create_health_app, create_health_tracker
from .logs import WorkflowLogFilter, add_log_context, current_log_context, log_context
from .serialization import TypeRegistry, register_type, result_from_json, result_to_json
from .stores import open_store

__version__ = "0.1.0"

__all__ = [
    "AllFailedError",
    "AlreadyDeliveredError",
    "Approval",
    "ApprovalRejectedError",
    "AwaitlyError",
    "Backoff",
    "BoundStep",
    "BoundSteps",
    "BreakerStats",
    "CacheLookup",
    "CheckpointStore",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Claim",
    "ClaimOutcome",
    "Clock",
    "Compensation",
    "CompensationError",
    "CompensationFailure",
    "Deps",
    "EncodedStep",
    "Err",
    "FORMAT_VERSION",
    "Guard",
    "HealthTracker",
    "Hook",
    "HookTokenError",
    "HostAtCapacityError",
    "HostClosedError",
    "IfRunning",
    "InputConflictError",
    "InputValidationError",
    "LeaseLostError",
    "LeaseStore",
    "LimiterQueueFullError",
    "MAX_MESSAGE_BYTES",
    "MailboxStore",
    "MemoryCache",
    "Migration",
    "Ok",
    "OnUnavailable",
    "Policy",
    "Queue",
    "QueueStore",
    "QueuedRun",
    "RateLimitExceededError",
    "RateLimiter",
    "RecoveredRun",
    "RedisCircuitBreaker",
    "RedisRateLimiter",
    "Result",
    "ResumeState",
    "ResumeStateCollector",
    "RetryPolicy",
    "RunFinishedError",
    "RunHandle",
    "RunInProgressError",
    "RunParkedError",
    "RunStateError",
    "RunStatus",
    "Schedule",
    "ScheduleInfo",
    "SchedulePass",
    "Secret",
    "SendWatch",
    "SerializationError",
    "Settings",
    "SettingsError",
    "SharedStateUnavailableError",
    "Singleflight",
    "SnapshotDecodeError",
    "SnapshotInfo",
    "SnapshotPage",
    "SnapshotStore",
    "Step",
    "StepCache",
    "StepRecord",
    "StepTimeoutError",
    "StoreCache",
    "StoreError",
    "StoredException",
    "StoredSchedule",
    "SupportsResume",
    "SystemClock",
    "TypeRegistry",
    "UnexpectedError",
    "UnwrapError",
    "WaitKind",
    "WaitTimeoutError",
    "WithPolicy",
    "Workflow",
    "WorkflowContext",
    "WorkflowHost",
    "WorkflowLifespan",
    "WorkflowLogFilter",
    "WorkflowDriftError",
    "WorkflowMismatchError",
    "WorkflowVersionError",
    "WorkflowRegistry",
    "WorkflowSnapshot",
    "add_log_context",
    "all_ok",
    "add_schedule",
    "approve",
    "attempt",
    "attempt_async",
    "claim_abandoned",
    "create_circuit_breaker",
    "create_dashboard_app",
    "create_health_app",
    "create_health_tracker",
    "create_rate_limiter",
    "create_resume_state_collector",
    "create_workflow",
    "current_log_context",
    "enqueue",
    "err",
    "events",
    "fire_schedules",
    "first_ok",
    "is_unexpected_error",
    "list_schedules",
    "log_context",
    "logs",
    "ok",
    "open_store",
    "partition",
    "pause_schedule",
    "pending_approvals",
    "policy",
    "recover",
    "recovery_loop",
    "register_type",
    "reject",
    "remove_schedule",
    "resolve_hook",
    "result_from_json",
    "result_to_json",
    "resume_schedule",
    "run",
    "run_schedules",
    "run_to_mermaid",
    "run_to_text",
    "send",
    "settle",
    "tick_run_id",
]


def _rewrite_modules() -> None:
    # Like trio's facade: exported objects say they come from the package, so reprs,
    # tracebacks, pickles and docs name the public path, not a private module.
    for name in __all__:
        obj = globals()[name]
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith("awaitly_anyio._"):
            # A type alias or a constant has no module of its own to rewrite.
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = __name__


_rewrite_modules()
