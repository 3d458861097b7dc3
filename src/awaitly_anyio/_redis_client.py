"""Lua scripts on Redis for the store, the shared limiter and the shared breaker: a URL
or a client, a connection kept for one call at a time, and the private asyncio loop
under trio (:mod:`awaitly_anyio._bridge`)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._bridge import DriverLoop, current_async_library
from ._grouping import Grouped, Pending

__all__ = ["ScriptRunner", "SharedRedis"]

T = TypeVar("T")


def _redis_asyncio() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sharing through Redis needs redis-py: pip install 'awaitly-anyio[redis]'"
        ) from exc
    return redis.asyncio


class _Call:
    """One script call: the client it is for, the script, its SHA-1, keys and arguments."""

    __slots__ = ("args", "client", "keys", "sha", "source")

    def __init__(
        self, client: Any, source: str, sha: str, keys: list[str], args: list[Any]
    ) -> None:
        self.client, self.source, self.sha, self.keys, self.args = client, source, sha, keys, args


# The most script calls sent together in one write.
_BATCH = 256


class ScriptRunner:
    """Runs Lua scripts with ``EVALSHA`` (loading a script the server does not know).

    Every call goes over a connection of the runner's own, straight through
    redis-py's connection (no pool, retry or metrics layer, which cost as much as
    the round trip itself).  Calls made while that connection is busy are queued
    and then sent together in one write and answered in order (pipelined), so
    many concurrent runs share round trips instead of each taking a pooled
    connection.  A connection left in an unknown state (an error on the wire, a
    cancellation between request and reply) is dropped and the next call makes a
    new one.  Call it on the client's event loop.
    """

    def __init__(self) -> None:
        self._connection: Any = None
        self._shas: dict[str, str] = {}
        self._calls: Grouped[_Call, Any] = Grouped(
            self._alone,
            self._pipelined,
            lambda queued: min(len(queued), _BATCH),
            "the Redis script runner stopped before answering",
        )

    def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode("utf-8")).hexdigest()
        return sha

    async def run(self, client: Any, source: str, keys: list[str], args: list[Any]) -> Any:
        """The script's reply to ``keys`` and ``args``.

        A kept connection the server has closed meanwhile (a restart, an idle
        timeout) is replaced and the call sent once more, as the client made by
        :class:`SharedRedis` does for its own commands; a second failure is raised.
        """
        # Calls made while another is in flight go in one write (pipelined) on the same
        # connection.  One cancelled while queued is not sent; once sent, its reply is
        # read (and dropped), so the connection stays in step.
        return await self._calls(_Call(client, source, self._sha(source), keys, args))

    async def _alone(self, call: _Call) -> Any:
        kept = self._connection is not None
        connection = await self._connected(call.client)
        try:
            return await self._on_connection(connection, call)
        except _redis_exceptions().ConnectionError:
            if not kept:
                raise
        # The server had dropped the kept connection: once more, on a new one.
        connection = await self._connected(call.client)
        return await self._on_connection(connection, call)

    async def _connected(self, client: Any) -> Any:
        """The runner's connection, made (and connected) if it has none."""
        if self._connection is None:
            connection = client.connection_pool.make_connection()
            await connection.connect()
            self._connection = connection
        return self._connection

    async def _on_connection(self, connection: Any, call: _Call) -> Any:
        evalsha = ("EVALSHA", call.sha, len(call.keys), *call.keys, *call.args)
        try:
            try:
                await connection.send_command(*evalsha)
                return await connection.read_response()
            except _redis_exceptions().NoScriptError:
                await connection.send_command("SCRIPT", "LOAD", call.source)
                await connection.read_response()
                await connection.send_command(*evalsha)
                return await connection.read_response()
        except _redis_exceptions().ResponseError:
            raise  # the server answered: the connection is in step
        except BaseException:
            await self._drop(connection)
            raise

    async def _drop(self, connection: Any) -> None:
        """Stop using ``connection``: its state is unknown."""
        if self._connection is connection:
            self._connection = None
        await connection.disconnect(nowait=True)

    async def _pipelined(self, queued: list[Pending[_Call, Any]]) -> None:
        """Send the queued calls not cancelled meanwhile in one write, and answer each
        from its reply, in order."""
        batch = [pending for pending in queued if not pending.done()]
        if not batch:
            return
        exceptions = _redis_exceptions()
        connection = await self._connected(batch[0].item.client)
        commands = [
            ("EVALSHA", p.item.sha, len(p.item.keys), *p.item.keys, *p.item.args) for p in batch
        ]
        unknown: list[Pending[_Call, Any]] = []
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            for pending in batch:
                try:
                    reply = await connection.read_response()
                except exceptions.NoScriptError:
                    unknown.append(pending)
                    continue
                except exceptions.ResponseError as exc:
                    if not pending.done():
                        pending.set_exception(exc)
                    continue
                if not pending.done():  # its caller may have been cancelled meanwhile
                    pending.set_result(reply)
        except BaseException:
            await self._drop(connection)
            raise
        for pending in unknown:  # the server forgot the script (a restart): load, send again
            try:
                reply = await self._on_connection(connection, pending.item)
            except Exception as exc:
                if not pending.done():
                    pending.set_exception(exc)
            else:
                if not pending.done():
                    pending.set_result(reply)

    async def aclose(self) -> None:
        """Close the runner's own connection."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect()


def _redis_exceptions() -> Any:
    import redis.exceptions

    return redis.exceptions


class SharedRedis:
    """One Redis, from asyncio or trio: a client made lazily from a URL (or given), its
    scripts, and the driver loop.  The Redis store, the shared limiter and the shared
    breaker each hold one.

    A client made from a URL decodes replies and, when the server has closed a
    pooled connection meanwhile (a restart, an idle timeout), reconnects and sends
    the command once more; the script runner does the same on its own connection.
    """

    def __init__(self, client_or_url: Any, owner: str, argument: str = "redis=") -> None:
        redis_asyncio = _redis_asyncio()
        if isinstance(client_or_url, str):
            if not client_or_url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    "a Redis URL starts with redis://, rediss:// or unix://,"
                    f" not {client_or_url[:30]!r}"
                )
            self._url: str | None = client_or_url
            self._client: Any = None
        elif isinstance(client_or_url, redis_asyncio.Redis):
            self._url, self._client = None, client_or_url
        else:
            raise TypeError(
                f"{argument} takes a Redis URL or a redis.asyncio.Redis, not {client_or_url!r}"
            )
        self._owner = owner
        self._loop = DriverLoop(owner)
        self._scripts = ScriptRunner()

    @property
    def bound(self) -> bool:
        """Whether it has been used (and its driver loop chosen)."""
        return self._loop.bound

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(client)`` on the driver loop."""
        if self._url is None and current_async_library() != "asyncio":
            raise RuntimeError(
                f"{self._owner} was given a Redis client, which works on asyncio only (it"
                " belongs to the loop that made it); under trio give it a URL"
            )
        return await self._loop.call(self._with_client, fn)

    async def _with_client(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        if self._client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = _redis_asyncio().Redis.from_url(
                self._url, decode_responses=True, retry=Retry(NoBackoff(), 1)
            )
        return await fn(self._client)

    async def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run the Lua script ``source`` once (EVALSHA, loading it when needed)."""

        async def run(client: Any) -> Any:
            return await self._scripts.run(client, source, keys, args)

        return await self.call(run)

    async def aclose(self) -> None:
        """Close the client (if made from a URL) and let go of the driver loop."""
        try:
            if self._loop.bound:
                await self._loop.call(self._close)
        finally:
            if self._url is not None:
                self._client = None
            self._loop.release()

    async def _close(self) -> None:
        await self._scripts.aclose()
        if self._url is not None and self._client is not None:
            await self._client.aclose()
