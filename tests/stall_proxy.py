"""A TCP proxy in front of a real server that can stall: it stops forwarding bytes
(both ways), as a network partition or a hung server looks to its clients.  What
was sent during the stall is lost: those connections are broken when it ends, so
a write the client gave up on never reaches the server late.  Only this test's
connections go through it, so other suites on the same server are not disturbed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc


class StallProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``; see :meth:`stall`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._flowing = anyio.Event()
        self._flowing.set()
        self._stalls = 0
        self.accepted = 0
        self.sent = bytearray()
        """Every byte clients sent through the proxy, in order (to count commands)."""
        self._open: set[anyio.CancelScope] = set()
        """How many connections clients have opened through the proxy."""

    def stall(self) -> None:
        """Stop forwarding: what is sent from now on is lost, and its connection broken
        at :meth:`resume`."""
        if self._flowing.is_set():
            self._stalls += 1
            self._flowing = anyio.Event()

    def resume(self) -> None:
        self._flowing.set()

    def drop(self) -> None:
        """Break every connection open through the proxy (as a server restart or a
        network blip would); new connections go through as before."""
        for scope in tuple(self._open):
            scope.cancel()

    async def _pipe(
        self,
        source: anyio.abc.ByteStream,
        sink: anyio.abc.ByteStream,
        record: bytearray | None = None,
    ) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while True:
                data = await source.receive()
                stalls = self._stalls
                if not self._flowing.is_set():
                    await self._flowing.wait()
                    return  # lost in the stall: break the connection
                if stalls != self._stalls:
                    return
                if record is not None:
                    record += data
                await sink.send(data)
        with contextlib.suppress(Exception):
            await sink.send_eof()

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        with anyio.CancelScope() as scope:
            self._open.add(scope)
            try:
                async with client:
                    try:
                        server = await anyio.connect_tcp(self.target_host, self.target_port)
                    except OSError:
                        return
                    async with server, anyio.create_task_group() as tg:
                        tg.start_soon(self._pipe, client, server, self.sent)
                        await self._pipe(server, client)
                        tg.cancel_scope.cancel()
            finally:
                self._open.discard(scope)


@contextlib.asynccontextmanager
async def stall_proxy(target_host: str, target_port: int) -> AsyncIterator[StallProxy]:
    """Run a :class:`StallProxy` for the block; its ``port`` is set on entry."""
    proxy = StallProxy(target_host, target_port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._serve)
        try:
            yield proxy
        finally:
            proxy.resume()
            tg.cancel_scope.cancel()


def commands_sent(sent: bytes, *names: str) -> int:
    """How many Redis commands in ``sent`` (RESP arrays, each starting a line) are
    called one of ``names``, or how many commands there are at all without names (a
    script's text or a key inside a command never counts)."""
    import re

    name = b"[^\r]+" if not names else "|".join(re.escape(n) for n in names).encode()
    pattern = re.compile(rb"(?:^|(?<=\r\n))\*\d+\r\n\$\d+\r\n(?:" + name + rb")\r\n", re.I)
    return len(pattern.findall(sent))
