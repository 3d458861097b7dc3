"""Lua scripts on Redis for the store, the shared limiter and the shared breaker: a URL
or a client, a connection kept for one call at a time, and the private asyncio loop
under trio (the loops layer's driver runner, through `awaitly_anyio._bridge.DriverLoop`)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _loops
from ._bridge import DriverLoop
from ._grouping import Pending, WriteBatcher
from ._redact import redact_text, redact_url

__all__ = ["ScriptRunner", "SharedRedis", "Subscription", "unavailable_errors"]

T = TypeVar("T")


def _redis_asyncio() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sharing through Redis needs redis-py: pip install 'awaitly-anyio[redis]'"
        ) from exc
    return redis.asyncio


async def ping(client_or_url: Any) -> object:
    """``PING`` on a redis.asyncio client or a Redis URL (a short connection, closed
    after), on the caller's asyncio loop (callers under trio go through a
    `DriverLoop`): the health check's probe, kept here so that only the driver
    imports redis-py."""
    driver: Any = _redis_asyncio()  # partly untyped (from_url's and ping's **kwargs)
    if isinstance(client_or_url, str):
        client = driver.Redis.from_url(client_or_url, socket_timeout=5)
        try:
            return await client.ping()
        finally:
            await client.aclose()
    return await client_or_url.ping()


class _Call:
    """One script call: the script, its SHA-1, keys and arguments."""

    __slots__ = ("args", "keys", "sha", "source")

    def __init__(self, source: str, sha: str, keys: list[str], args: list[Any]) -> None:
        self.source, self.sha, self.keys, self.args = source, sha, keys, args


# What a pipelined call came back with: its reply, or the error the server answered.
_Answer = tuple[Any, Exception | None]


# The most script calls sent together in one write.
_BATCH = 256


class ScriptRunner:
    """Runs Lua scripts with ``EVALSHA`` (loading a script the server does not know).

    Every call goes over a connection of the runner's own, straight through
    redis-py's connection (no pool, retry or metrics layer, which cost as much as
    the round trip itself): one call `alone`, or many sent together in one
    write and answered in order (`pipelined`), which `SharedRedis`
    uses for the calls that queue while one is in flight, so many concurrent runs
    share round trips instead of each taking a pooled connection.  A connection
    left in an unknown state (an error on the wire, a cancellation between request
    and reply) is dropped and the next call makes a new one.  Call it on the
    client's event loop.
    """

    def __init__(self) -> None:
        self._connection: Any = None
        self._shas: dict[str, str] = {}

    def sha(self, source: str) -> str:
        """The SHA-1 ``EVALSHA`` names ``source`` by (computed once per script)."""
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode("utf-8")).hexdigest()
        return sha

    async def alone(self, client: Any, call: _Call) -> Any:
        """Send one call and return its reply.

        A kept connection the server has closed meanwhile (a restart, an idle
        timeout) is replaced and the call sent once more, as the client made by
        `SharedRedis` does for its own commands; a second failure is raised.
        """
        kept = self._connection is not None
        connection = await self._connected(client)
        try:
            return await self._on_connection(connection, call)
        except _redis_exceptions().ConnectionError:
            if not kept:
                raise
        # The server had dropped the kept connection: once more, on a new one.
        connection = await self._connected(client)
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

    async def pipelined(self, client: Any, calls: list[_Call]) -> list[_Answer]:
        """Send ``calls`` in one write and read their replies in order: for each, its
        reply, or the error the server answered it with, or the error that broke the
        connection before its reply came (for it and every call after it)."""
        exceptions = _redis_exceptions()
        connection = await self._connected(client)
        commands = [("EVALSHA", c.sha, len(c.keys), *c.keys, *c.args) for c in calls]
        answers: list[_Answer] = []
        unknown: list[int] = []
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            for index in range(len(calls)):
                try:
                    answers.append((await connection.read_response(), None))
                except exceptions.NoScriptError:
                    unknown.append(index)
                    answers.append((None, None))
                except exceptions.ResponseError as exc:
                    answers.append((None, exc))
        except Exception as exc:
            await self._drop(connection)
            for index in unknown:
                answers[index] = (None, exc)
            return answers + [(None, exc)] * (len(calls) - len(answers))
        except BaseException:
            await self._drop(connection)
            raise
        for index in unknown:  # the server forgot the script (a restart): load, send again
            try:
                answers[index] = (await self._on_connection(connection, calls[index]), None)
            except Exception as exc:
                answers[index] = (None, exc)
        return answers

    async def aclose(self) -> None:
        """Close the runner's own connection."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect()


def _redis_exceptions() -> Any:
    import redis.exceptions

    return redis.exceptions


def _scheme_only(text: str) -> str:
    """What a string that is not a Redis URL starts with, for a message: its scheme
    alone (anything after it may be a secret; so may a string that is not a URL)."""
    match = re.match(r"[A-Za-z][A-Za-z0-9+.\-]{0,30}:/*", text)
    return f"{match.group()!r}..." if match else "a string that is not a URL"


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis could not serve a call: down, unreachable, too
    slow, refusing the login, answering with an error, or its driver loop gone.
    Cancellation is not among them."""
    import anyio

    return (_redis_exceptions().RedisError, OSError, anyio.BrokenResourceError)


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
                    f" not {_scheme_only(client_or_url)}"
                )
            self._url: str | None = client_or_url
            self._client: Any = None
        elif isinstance(client_or_url, redis_asyncio.Redis):
            self._url, self._client = None, client_or_url
        else:
            given: object = client_or_url
            kind = type(given)
            raise TypeError(
                f"{argument} takes a Redis URL or a redis.asyncio.Redis,"
                f" not a {kind.__module__}.{kind.__qualname__}"
            )
        self._owner = owner
        self._loop = DriverLoop(owner)
        self._subscriptions: set[Subscription] = set()
        # Calls made while another is in flight wait here, on the caller's loop, and go
        # in one write (pipelined) on the runner's connection.  One cancelled while
        # queued is not sent; once sent, its reply is read (and dropped), so the
        # connection stays in step.
        self._writes = _Lane(self, "the Redis script runner stopped before answering")
        # Reads that change nothing go on a lane of their own: a look at a run (a lease
        # keeper's, woken by a send) does not hold up the write beside it (the receive).
        self._reads = _Lane(self, "the Redis read runner stopped before answering")

    @property
    def where(self) -> str:
        """Which Redis, for messages: the URL with its secrets masked, or the given
        client's host and port."""
        if self._url is not None:
            return redact_url(self._url)
        kwargs = getattr(getattr(self._client, "connection_pool", None), "connection_kwargs", {})
        if "path" in kwargs:
            return f"the given client (unix socket {redact_text(str(kwargs['path']))})"
        host, port = kwargs.get("host", "?"), kwargs.get("port", "?")
        return f"the given client ({redact_text(str(host))}:{redact_text(str(port))})"

    def _connection_kwargs(self) -> Any:
        if self._url is not None:
            return _redis_asyncio().connection.parse_url(self._url)
        return getattr(getattr(self._client, "connection_pool", None), "connection_kwargs", {})

    @property
    def database(self) -> int:
        """The number of the Redis database it reaches (``0`` unless the URL or client
        names another).  Pub/sub channels are server-wide, not per database: a channel
        name that must stay within one database carries it."""
        try:
            return int(self._connection_kwargs().get("db") or 0)
        except (TypeError, ValueError):
            return 0

    @property
    def identity(self) -> str:
        """Which Redis database, as ``redis://host:port/db`` (or ``unix://path?db=n``), the
        same for every URL or client reaching it, without user name or password."""
        kwargs: Any = self._connection_kwargs()
        db = self.database
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}?db={db}"
        host = str(kwargs.get("host") or "localhost").lower()
        return f"redis://{host}:{kwargs.get('port') or 6379}/{db}"

    def describe_failure(self, exc: BaseException) -> str:
        """``exc`` (one of `unavailable_errors`) as one line naming this Redis,
        with secrets masked."""
        detail = redact_text(str(exc)) or "no detail"
        return f"Redis at {self.where}: {type(exc).__name__}: {detail}"

    @property
    def bound(self) -> bool:
        """Whether it has been used (and its driver loop chosen)."""
        return self._loop.bound

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(client)`` on the driver loop."""
        if self._url is None and not _loops.current().drives_asyncio:
            raise RuntimeError(
                f"{self._owner} was given a Redis client, which works on asyncio only (it"
                " belongs to the loop that made it); under trio give it a URL"
            )
        return await self._loop.call(self._with_client, fn)  # pyright: ignore[reportReturnType]

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
        return await self._writes.run(source, keys, args)

    async def run_read(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run the Lua script ``source``, which must change nothing, once, on a
        connection of its own: it does not wait behind the writes in flight (nor they
        behind it).  What a write answered before it was called is seen."""
        return await self._reads.run(source, keys, args)

    async def subscribe(self, channel: str) -> Subscription:
        """``SUBSCRIBE`` to ``channel`` on a connection of its own (made now, on the
        driver loop); read it with `Subscription.next`, close it with
        `Subscription.aclose`.  Raises what connecting raises."""
        subscription = Subscription(self, channel)
        await self.call(subscription._open)
        return subscription

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
        for subscription in list(self._subscriptions):
            await subscription._disconnect()
        await self._writes.scripts.aclose()
        await self._reads.scripts.aclose()
        if self._url is not None and self._client is not None:
            await self._client.aclose()
        # A connection dropped without waiting (a call cancelled mid-reply, a
        # subscription) closes its socket in a callback of the loop's next turns: let
        # them run before the loop may be let go of (under trio it is stepped only
        # while a call runs, and closed with the last store using it).
        for _ in range(3):
            await asyncio.sleep(0)


class _Lane:
    """One connection's script calls (a `ScriptRunner`): one call in flight, the calls
    made meanwhile queued and sent together in one write."""

    def __init__(self, shared: SharedRedis, stopped: str) -> None:
        self._shared = shared
        self.scripts = ScriptRunner()
        self._calls: WriteBatcher[_Call, Any] = WriteBatcher(
            self._alone, self._together, lambda queued: min(len(queued), _BATCH), stopped
        )

    async def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        return await self._calls(_Call(source, self.scripts.sha(source), keys, args))

    async def _alone(self, call: _Call) -> Any:
        scripts = self.scripts
        return await self._shared.call(lambda client: scripts.alone(client, call))

    async def _together(self, batch: list[Pending[_Call, Any]]) -> None:
        waiting = [pending for pending in batch if not pending.done()]
        if not waiting:  # every caller gave up (cancelled) while queued: send nothing
            return
        calls = [pending.item for pending in waiting]
        scripts = self.scripts
        answers = await self._shared.call(lambda client: scripts.pipelined(client, calls))
        for pending, (reply, error) in zip(waiting, answers, strict=True):
            if pending.done():  # its caller was cancelled meanwhile: its reply is dropped
                continue
            if error is None:
                pending.set_result(reply)
            else:
                pending.set_exception(error)


class Subscription:
    """A Redis pub/sub subscription to one channel on a connection of its own (never
    the pool's, never reconnected: a dropped connection is an error, since messages
    published meanwhile are lost and only the caller knows how to catch up).  Its
    reads wait without a socket timeout and take RESP3's pushed messages as replies.
    Made by `SharedRedis.subscribe`."""

    def __init__(self, shared: SharedRedis, channel: str) -> None:
        self._shared = shared
        self._channel = channel
        self._connection: Any = None

    async def _open(self, client: Any) -> None:
        pool = client.connection_pool
        # A subscriber waits for as long as nothing is published: no read timeout.
        kwargs = {**pool.connection_kwargs, "socket_timeout": None, "socket_keepalive": True}
        connection = pool.connection_class(**kwargs)
        self._connection = connection
        self._shared._subscriptions.add(self)
        try:
            await connection.connect()
            await connection.send_command("SUBSCRIBE", self._channel)
            while True:  # the confirmation
                reply = await connection.read_response(push_request=True)
                if _is_reply(reply, "subscribe"):
                    return
        except BaseException:
            await self._disconnect()
            raise

    async def next(self) -> str:
        """Wait for the next message published on the channel and return it.  A
        cancellation point (a read cancelled midway leaves the connection unusable:
        close it).  Raises ``redis.ConnectionError`` when the connection drops (or
        was closed) and ``RuntimeError`` once closed."""
        return await self._shared.call(self._read)

    async def _read(self, _client: Any) -> str:
        connection = self._connection
        if connection is None:
            raise RuntimeError(f"the subscription to {self._channel!r} is closed")
        try:
            while True:
                reply = await connection.read_response(push_request=True)
                if _is_reply(reply, "message") and len(reply) >= 3:
                    data: object = reply[2]
                    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        except BaseException:
            # The connection's state is unknown: nothing more is read from it.
            await self._disconnect()
            raise

    async def pump(self, deliver: Callable[[str], object]) -> None:
        """Call ``deliver(message)`` for every message published on the channel, until
        cancelled, from the driver loop (under trio, the hosted asyncio loop's thread:
        ``deliver`` must be thread-safe), without crossing back to the caller's loop
        per message.  Raises as `next` does; a cancelled pump leaves the connection
        unusable (close it)."""
        await self._shared.call(lambda _client: self._pump(deliver))

    async def _pump(self, deliver: Callable[[str], object]) -> None:
        while True:
            deliver(await self._read(None))

    async def aclose(self) -> None:
        """Close the subscription's connection (bounded; shield it if the caller may be
        cancelled).  Closing twice is harmless."""
        if self._connection is not None:
            await self._shared.call(lambda _client: self._disconnect())

    async def _disconnect(self) -> None:
        self._shared._subscriptions.discard(self)
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)


def _is_reply(reply: object, kind: str) -> bool:
    """Whether a pub/sub reply (a list, its first item its kind) is of ``kind``."""
    if not isinstance(reply, list) or not reply:
        return False
    items: list[object] = reply  # pyright: ignore[reportUnknownVariableType]
    first = items[0]
    if isinstance(first, bytes):
        first = first.decode("ascii", "replace")
    return first == kind
