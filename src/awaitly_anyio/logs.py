"""Log correlation: records logged inside a run carry its id and workflow name, and
inside a step the step's name.

    import logging
    from awaitly_anyio import create_workflow
    from awaitly_anyio.logs import WorkflowLogFilter, log_context

    handler = logging.StreamHandler()
    handler.addFilter(WorkflowLogFilter())
    handler.setFormatter(
        logging.Formatter("%(workflow_name)s %(workflow_id)s %(step_name)s %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    workflow = create_workflow("checkout", on_event=log_context)

`log_context` is the ``on_event`` handler that keeps, in a context
variable of the task running the run, which run and step it is in (it follows
the tasks a step starts, on asyncio and trio); `WorkflowLogFilter` adds it
to `logging` records; `add_log_context` is a structlog processor;
`current_log_context` gives it as a dict for anything else.  Nothing here
imports structlog.
"""

from __future__ import annotations

from ._logs import WorkflowLogFilter, add_log_context, current_log_context, log_context

__all__ = ["WorkflowLogFilter", "add_log_context", "current_log_context", "log_context"]

WorkflowLogFilter.__module__ = __name__
add_log_context.__module__ = __name__
current_log_context.__module__ = __name__
log_context.__module__ = __name__
