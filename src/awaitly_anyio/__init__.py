"""awaitly-anyio: typed, Result-returning workflows for asyncio and trio.

The public API is this module's ``__all__``; everything else is private.
"""

from __future__ import annotations

from . import events
from .clock import Clock, SystemClock
from .collector import ResumeStateCollector, create_resume_state_collector
from .context import BoundSteps, Deps, WorkflowContext
from .errors import (
    CircuitOpenError,
    RateLimitExceededError,
    SerializationError,
    SnapshotDecodeError,
    StepTimeoutError,
    StoredException,
    StoreError,
    UnexpectedError,
    WorkflowMismatchError,
    is_unexpected_error,
)
from .result import Err, Ok, Result, UnwrapError, err, ok
from .resume import ResumeState, StepRecord, SupportsResume
from .serialization import TypeRegistry, register_type
from .snapshot import RunStatus, SnapshotInfo, SnapshotPage, WorkflowSnapshot
from .step import Backoff, RetryPolicy, Step
from .store import CheckpointStore, EncodedStep, SnapshotStore, open_store
from .workflow import Workflow, create_workflow, run

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BoundSteps",
    "CheckpointStore",
    "CircuitOpenError",
    "Clock",
    "Deps",
    "EncodedStep",
    "Err",
    "Ok",
    "RateLimitExceededError",
    "Result",
    "ResumeState",
    "ResumeStateCollector",
    "RetryPolicy",
    "RunStatus",
    "SerializationError",
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
    "WorkflowMismatchError",
    "WorkflowSnapshot",
    "create_resume_state_collector",
    "create_workflow",
    "err",
    "events",
    "is_unexpected_error",
    "ok",
    "open_store",
    "register_type",
    "run",
]
