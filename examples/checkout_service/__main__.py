"""Serve the checkout service with Hypercorn on asyncio or trio, until SIGTERM or SIGINT.

    python -m examples.checkout_service [--backend asyncio|trio] [--bind HOST:PORT]

Settings come from the environment (see ``CheckoutSettings``); without
``DATABASE_URL`` the runs are kept in SQLite (``AWAITLY_SQLITE_PATH``).  On a
signal: ``/ready`` turns 503 and new checkouts are refused, active runs get
``CHECKOUT_GRACE_SECONDS`` to finish, the rest are cancelled (they record that
and release their leases, so another instance resumes them at once), telemetry
is flushed, then the HTTP server stops.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import sniffio
from anyio.abc import TaskStatus
from hypercorn.config import Config

from awaitly_anyio import LeaseStore, SettingsError, recovery_loop

from .service import CheckoutService, CheckoutSettings


async def serve(settings: CheckoutSettings, bind: str) -> None:
    async with CheckoutService(settings) as service:
        host, store = service.host, service.store
        assert host is not None
        assert isinstance(store, LeaseStore)
        stop_http = anyio.Event()
        recovery = anyio.CancelScope()

        async def recover_forever(*, task_status: TaskStatus[None]) -> None:
            """Resume runs that a dead instance left behind, once their leases expire."""
            with recovery:
                await recovery_loop(
                    store,  # every shipped store has leases
                    service.registry,
                    interval=settings.recovery_interval,
                    lease=settings.lease_seconds,
                    task_status=task_status,
                )

        async def stop_on_signal(*, task_status: TaskStatus[None]) -> None:
            await host.serve_signals(task_status=task_status)  # returns after a shutdown
            recovery.cancel()
            stop_http.set()

        async with anyio.create_task_group() as tg:
            await tg.start(recover_forever)
            await tg.start(stop_on_signal)
            tg.start_soon(_http, service, bind, stop_http)
            print(f"checkout service on http://{bind} ({sniffio.current_async_library()})")
            sys.stdout.flush()


async def _http(app: Any, bind: str, stop: anyio.Event) -> None:
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.graceful_timeout = 5
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as hypercorn_serve
    else:
        from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.checkout_service")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--bind", help="HOST:PORT (default 127.0.0.1:$PORT)")
    args = parser.parse_args(argv)
    try:
        settings = CheckoutSettings.from_env()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    anyio.run(serve, settings, args.bind or f"127.0.0.1:{settings.port}", backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
