"""Lua scripts on Redis for the store, the shared limiter and the shared breaker: a URL
or a client, a connection kept for one call at a time, and the private asyncio loop
under trio (:mod:`awaitly_anyio._bridge`)."""

from __future__ import annotations

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


class ScriptRunner:
    """Runs Lua scripts with ``EVALSHA`` (loading a script the server does not know).

    Calls made one at a time go over a connection of the runner's own, straight
    through redis-py's connection (no pool, retry or metrics layer, which cost as
    much as the round trip itself); a call made while that connection is busy goes
    through the client and its pool.  A connection left in an unknown state (an
    error on the wire, a cancellation between request and reply) is dropped and
    the next call makes a new one.  Call it on the client's event loop.
    """

    def __init__(self) -> None:
        self._connection: Any = None
        self._busy = False
        self._shas: dict[str, str] = {}

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
            return await self._pooled(client, source, sha, keys, args)
        self._busy = True
        try:
            if self._connection is not None:
                try:
                    return await self._on_connection(source, sha, keys, args)
                except _redis_exceptions().ConnectionError:
                    pass  # dropped by then; try once on a new connection
            connection = client.connection_pool.make_connection()
            await connection.connect()
            self._connection = connection
            return await self._on_connection(source, sha, keys, args)
        finally:
            self._busy = False

    async def _on_connection(self, source: str, sha: str, keys: list[str], args: list[Any]) -> Any:
        connection = self._connection
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
            # An error on the wire, or cancelled between request and reply: the
            # connection's state is unknown, so it is not used again.
            self._connection = None
            await connection.disconnect(nowait=True)
            raise

    async def _pooled(
        self, client: Any, source: str, sha: str, keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except _redis_exceptions().NoScriptError:
            await client.script_load(source)
            return await client.evalsha(sha, len(keys), *keys, *args)

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
