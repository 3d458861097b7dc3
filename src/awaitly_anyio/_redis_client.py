"""Lua scripts on Redis for the store, the shared limiter and the shared breaker: a URL
or a client, a connection kept for one call at a time, and the private asyncio loop
under trio (:mod:`awaitly_anyio._bridge`)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._bridge import DriverLoop, current_async_library

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


class _Queued:
    """A script call waiting for the runner's connection, and where its reply goes."""

    __slots__ = ("args", "future", "keys", "sha", "source")

    def __init__(self, source: str, sha: str, keys: list[str], args: list[Any]) -> None:
        self.source, self.sha, self.keys, self.args = source, sha, keys, args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


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
        self._busy = False
        self._shas: dict[str, str] = {}
        self._queued: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None  # the loop keeps weak references

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
        sha = self._sha(source)
        if self._busy:
            queued = _Queued(source, sha, keys, args)
            self._queued.append(queued)
            # Cancelled while queued, it is not sent; once sent, its reply is read
            # (and dropped), so the connection stays in step.
            return await queued.future
        self._busy = True
        try:
            kept = self._connection is not None
            connection = await self._connected(client)
            try:
                return await self._on_connection(connection, source, sha, keys, args)
            except _redis_exceptions().ConnectionError:
                if not kept:
                    raise
            # The server had dropped the kept connection: once more, on a new one.
            connection = await self._connected(client)
            return await self._on_connection(connection, source, sha, keys, args)
        finally:
            if self._queued:
                # Whoever queued meanwhile is sent in one write by a task of its own,
                # so that this caller returns now.
                self._flusher = asyncio.get_running_loop().create_task(self._flush(client))
            else:
                self._busy = False

    async def _connected(self, client: Any) -> Any:
        """The runner's connection, made (and connected) if it has none."""
        if self._connection is None:
            connection = client.connection_pool.make_connection()
            await connection.connect()
            self._connection = connection
        return self._connection

    async def _on_connection(
        self, connection: Any, source: str, sha: str, keys: list[str], args: list[Any]
    ) -> Any:
        try:
            try:
                await connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
                return await connection.read_response()
            except _redis_exceptions().NoScriptError:
                await connection.send_command("SCRIPT", "LOAD", source)
                await connection.read_response()
                await connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
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

    async def _flush(self, client: Any) -> None:
        """Send the queued calls, a batch per write, until none is left."""
        batch: list[_Queued] = []
        try:
            while self._queued:
                batch = [call for call in self._queued[:_BATCH] if not call.future.done()]
                del self._queued[:_BATCH]
                if batch:
                    try:
                        await self._pipelined(client, batch)
                    except Exception as exc:
                        for call in batch:
                            if not call.future.done():
                                call.future.set_exception(exc)
                batch = []
        finally:
            self._busy = False
            stopped = RuntimeError("the Redis script runner stopped before answering")
            for call in (*batch, *self._queued):  # only if this task itself was cancelled
                if not call.future.done():
                    call.future.set_exception(stopped)
            self._queued.clear()

    async def _pipelined(self, client: Any, batch: list[_Queued]) -> None:
        """Send ``batch`` in one write and answer each call from its reply, in order."""
        exceptions = _redis_exceptions()
        connection = await self._connected(client)
        commands = [("EVALSHA", call.sha, len(call.keys), *call.keys, *call.args) for call in batch]
        unknown: list[_Queued] = []
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            for call in batch:
                try:
                    reply = await connection.read_response()
                except exceptions.NoScriptError:
                    unknown.append(call)
                    continue
                except exceptions.ResponseError as exc:
                    if not call.future.done():
                        call.future.set_exception(exc)
                    continue
                if not call.future.done():  # its caller may have been cancelled meanwhile
                    call.future.set_result(reply)
        except BaseException:
            await self._drop(connection)
            raise
        for call in unknown:  # the server forgot the script (a restart): load, send again
            try:
                reply = await self._on_connection(
                    connection, call.source, call.sha, call.keys, call.args
                )
            except Exception as exc:
                if not call.future.done():
                    call.future.set_exception(exc)
            else:
                if not call.future.done():
                    call.future.set_result(reply)

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
