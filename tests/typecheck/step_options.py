"""Static checks of the step options, declared once (``awaitly_anyio._step_options``):
every option is accepted with the same inferred value type, and a misspelt option or one
of the wrong type is an error under both checkers.  Nothing here is executed by pytest.
"""

# Each `# type: ignore` here marks an error both checkers must report (mypy warns about an
# unused one by itself; this makes pyright do the same).
# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

from decimal import Decimal
from typing import assert_type

from awaitly_anyio import Deps, Ok, Result, RetryPolicy, Step, WorkflowContext


class Quote:
    pass


async def fetch_quote() -> Result[Quote, str]:
    return Ok(Quote())


def price() -> Decimal:
    return Decimal("1.5")


async def every_option(ctx: WorkflowContext[Deps]) -> None:
    assert_type(ctx.step, Step)
    policy = RetryPolicy(attempts=3)
    # ctx.step: key, retry, timeout and type, together or alone.
    assert_type(
        await ctx.step("q", fetch_quote, key="q", retry=policy, timeout=2.0, type=Quote), Quote
    )
    assert_type(await ctx.step("p", price, retry=None, timeout=None, key=None), Decimal)
    assert_type(await ctx.step("p2", price, type=Decimal), Decimal)
    # retry: every RetryPolicy field beside attempts, and key and type.
    assert_type(
        await ctx.step.retry(
            "r",
            fetch_quote,
            attempts=3,
            backoff="linear",
            delay=0.5,
            max_delay=2.0,
            jitter=0.1,
            retry_on=lambda failure: True,
            timeout=1.0,
            key="r",
            type=Quote,
        ),
        Quote,
    )
    assert_type(await ctx.step.retry("r2", price, attempts=2), Decimal)
    # try_: key, timeout and type beside error.
    assert_type(
        await ctx.step.try_("t", fetch_quote, error="DOWN", key="t", timeout=1.0, type=Quote),
        Quote,
    )


async def wrong_options(ctx: WorkflowContext[Deps]) -> None:
    await ctx.step("a", price, keys="a")  # type: ignore[call-overload]
    await ctx.step("b", price, timeout="soon")  # type: ignore[call-overload]
    await ctx.step("c", price, retry=3)  # type: ignore[call-overload]
    await ctx.step.retry("d", price, attempts=2, backoff="sometimes")  # type: ignore[call-overload]
    await ctx.step.retry("e", price, attempts=2, delays=1.0)  # type: ignore[call-overload]
    await ctx.step.retry("f", price)  # type: ignore[call-overload]
    await ctx.step.try_("g", price, error="X", retry=None)  # type: ignore[call-overload]
