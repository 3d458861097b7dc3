"""A Redis connection for the shared limiter and breaker: a URL or a client, scripts,
and the asyncio bridge under trio (as the Redis store does)."""

from __future__ import annotations

from typing import Any

from ._bridge import DriverLoop, current_async_library

__all__ = ["SharedRedis"]


def _redis_asyncio() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sharing through Redis needs redis-py: pip install 'awaitly-anyio[redis]'"
        ) from exc
    return redis.asyncio


class SharedRedis:
    """Runs Lua scripts on one Redis, from asyncio or trio; made lazily on first use."""

    def __init__(self, client_or_url: Any, owner: str) -> None:
        redis_asyncio = _redis_asyncio()
        if isinstance(client_or_url, str):
            if not client_or_url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(f"a Redis URL starts with redis://, not {client_or_url[:30]!r}")
            self._url: str | None = client_or_url
            self._client: Any = None
        elif isinstance(client_or_url, redis_asyncio.Redis):
            self._url, self._client = None, client_or_url
        else:
            raise TypeError(f"redis= takes a URL or a redis.asyncio.Redis, not {client_or_url!r}")
        self._owner = owner
        self._loop = DriverLoop(owner)
        self._scripts: dict[str, Any] = {}

    async def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run the Lua script ``source`` once (EVALSHA, loading it when needed)."""
        if self._url is None and current_async_library() != "asyncio":
            raise RuntimeError(
                f"{self._owner} was given a Redis client, which works on asyncio only;"
                " under trio give it a URL"
            )
        return await self._loop.call(self._run, source, keys, args)

    async def _run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        if self._client is None:
            self._client = _redis_asyncio().Redis.from_url(self._url, decode_responses=True)
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        return await script(keys=keys, args=args)

    async def aclose(self) -> None:
        """Close the client (if made from a URL) and let go of the bridge."""
        try:
            if self._url is not None and self._client is not None and self._loop.bound:
                await self._loop.call(self._client.aclose)
        finally:
            if self._url is not None:
                self._client = None
            self._loop.release()
