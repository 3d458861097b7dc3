"""awaitly-anyio: typed, Result-returning workflows for asyncio and trio.

The public API is this module's ``__all__``; everything else is private.
"""

from __future__ import annotations

from . import events, logs
from .circuit_breaker import CircuitBreaker, CircuitState, create_circuit_breaker
from .clock import Clock, SystemClock
from .collector import ResumeStateCollector, create_resume_state_collector
from .config import Secret, Settings, SettingsError
from .context import BoundSteps, Deps, WorkflowContext
from .errors import (
    CircuitOpenError,
    LeaseLostError,
    RateLimitExceededError,
    RunInProgressError,
    SerializationError,
    SharedStateUnavailableError,
    SnapshotDecodeError,
    StepTimeoutError,
    StoredException,
    StoreError,
    UnexpectedError,
    WorkflowMismatchError,
    is_unexpected_error,
)
from .health import HealthTracker, create_health_app, create_health_tracker
from .host import HostAtCapacityError, HostClosedError, RunHandle, WorkflowHost
from .lifespan import WorkflowLifespan
from .logs import WorkflowLogFilter, add_log_context, current_log_context, log_context
from .ratelimit import RateLimiter, create_rate_limiter
from .recovery import RecoveredRun, WorkflowRegistry, recover, recovery_loop
from .result import Err, Ok, Result, UnwrapError, err, ok
from .resume import ResumeState, StepRecord, SupportsResume
from .serialization import TypeRegistry, register_type
from .snapshot import RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot
from .step import Backoff, RetryPolicy, Step
from .store import CheckpointStore, Claim, EncodedStep, LeaseStore, SnapshotStore, open_store
from .workflow import Workflow, create_workflow, run

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BoundSteps",
    "CheckpointStore",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Claim",
    "Clock",
    "Deps",
    "EncodedStep",
    "Err",
    "HealthTracker",
    "HostAtCapacityError",
    "HostClosedError",
    "LeaseLostError",
    "LeaseStore",
    "Ok",
    "RateLimitExceededError",
    "RateLimiter",
    "RecoveredRun",
    "Result",
    "ResumeState",
    "ResumeStateCollector",
    "RetryPolicy",
    "RunHandle",
    "RunInProgressError",
    "RunStatus",
    "Secret",
    "SerializationError",
    "Settings",
    "SettingsError",
    "SharedStateUnavailableError",
    "SnapshotDecodeError",
    "SnapshotInfo",
    "SnapshotPage",
    "SnapshotStore",
    "Step",
    "StepRecord",
    "StepTimeoutError",
    "StoreError",
    "StoredException",
    "SupportsResume",
    "SystemClock",
    "TypeRegistry",
    "UnexpectedError",
    "UnwrapError",
    "Workflow",
    "WorkflowContext",
    "WorkflowHost",
    "WorkflowLifespan",
    "WorkflowLogFilter",
    "WorkflowMismatchError",
    "WorkflowRegistry",
    "WorkflowSnapshot",
    "add_log_context",
    "create_circuit_breaker",
    "create_health_app",
    "create_health_tracker",
    "create_rate_limiter",
    "create_resume_state_collector",
    "create_workflow",
    "current_log_context",
    "err",
    "events",
    "is_unexpected_error",
    "log_context",
    "logs",
    "ok",
    "open_store",
    "recover",
    "recovery_loop",
    "register_type",
    "run",
]
