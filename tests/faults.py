"""A fault-injecting TCP proxy for tests: put it between a client and a real node and make
the network misbehave, on purpose and on cue (asyncio, no external service).

    Fault.PASS       forward everything as it comes
    Fault.LATENCY    deliver every chunk `latency_s` after it arrived, both ways, in order
    Fault.RESET      reset (TCP RST) a new connection at once, an open one at its next chunk
    Fault.BLACKHOLE  accept, then swallow everything, both ways: the peer just goes quiet
    Fault.TRUNCATE   forward the next chunk from the server cut in half, then close:
                     a frame (a TLS record, an HTTP/2 frame) that never ends

The fault can be changed while connections are open (`set`): it applies to each chunk as it
arrives, so a connection opened in PASS (its TLS handshake done) can then lose an answer
mid-frame, after the server has handled the request, which is the case that matters for
retries. The proxy knows nothing of TLS or gRPC; the end-to-end mTLS passes through it.

`ProxyThread` runs a proxy on an event loop of its own, for tests whose client blocks or
runs its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

CHUNK = 65536


class Fault(StrEnum):
    PASS = "pass"
    LATENCY = "latency"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    TRUNCATE = "truncate"


_EOF = b""  # in a delivery queue: the sender closed its side
_CUT = None  # in a delivery queue: close the connection now (after a truncated chunk)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, not a FIN: what a crashed peer or a middlebox sends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                reset(writer)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


@dataclass
class FaultProxy:
    """A proxy to `upstream` ("host:port") on a loopback port of its own (`endpoint`)."""

    upstream: str
    fault: Fault = Fault.PASS
    latency_s: float = 0.0
    # TRUNCATE cuts the first chunk from the server at least this long (what is shorter,
    # e.g. an HTTP/2 PING or WINDOW_UPDATE in its TLS record, passes): so that it is the
    # answer to a request, or a handshake, that is cut.
    truncate_min: int = 1
    # Connections accepted, and how many of them reached the upstream.
    accepted: int = 0
    forwarded: int = 0
    _server: asyncio.Server | None = None
    _open: set[_Connection] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def set(
        self, fault: Fault, latency_s: float | None = None, truncate_min: int | None = None
    ) -> None:
        """Change the fault: for every chunk from now on, on every connection."""
        if latency_s is not None:
            self.latency_s = latency_s
        if truncate_min is not None:
            self.truncate_min = truncate_min
        self.fault = fault

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the proxy first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, host, port)
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection (held ones included)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._open):
            conn.abort()  # its tasks see the end of their streams and finish
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection(writer)
        self._open.add(conn)
        self.accepted += 1
        try:
            await self._serve(reader, conn)
        except (OSError, asyncio.IncompleteReadError):
            conn.reset()
        finally:
            conn.close()
            self._open.discard(conn)
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        if self.fault is Fault.RESET:
            conn.reset()
            return
        if self.fault is Fault.BLACKHOLE:
            while await reader.read(CHUNK):
                pass  # swallowed; the client waits for an answer that never comes
            return
        host, _, port = self.upstream.rpartition(":")
        up_reader, conn.upstream = await asyncio.open_connection(host, int(port))
        self.forwarded += 1
        pumps = [
            asyncio.ensure_future(self._pump(reader, conn.upstream, conn, to_client=False)),
            asyncio.ensure_future(self._pump(up_reader, conn.client, conn, to_client=True)),
        ]
        try:
            await asyncio.gather(*pumps)
        finally:  # one direction failed: the other ends with it, not after the proxy
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Connection,
        to_client: bool,
    ) -> None:
        """One direction: read chunks, apply the fault, queue each for delivery when due."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        deliver = asyncio.ensure_future(self._deliver(queue, writer, conn))
        try:
            while True:
                data = await reader.read(CHUNK)
                fault = self.fault
                delay = self.latency_s if fault is Fault.LATENCY else 0.0
                if not data:
                    queue.put_nowait((loop.time() + delay, _EOF))
                    break
                if fault is Fault.RESET:
                    conn.reset()
                    return
                if fault is Fault.BLACKHOLE:
                    continue
                if fault is Fault.TRUNCATE and to_client and len(data) >= self.truncate_min:
                    queue.put_nowait((loop.time(), data[: max(1, len(data) // 2)]))
                    queue.put_nowait((loop.time(), _CUT))
                    break
                queue.put_nowait((loop.time() + delay, data))
            await deliver
        finally:
            deliver.cancel()
            await asyncio.gather(deliver, return_exceptions=True)

    @staticmethod
    async def _deliver(
        queue: asyncio.Queue[tuple[float, bytes | None]],
        writer: asyncio.StreamWriter,
        conn: _Connection,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if data is _CUT:
                await writer.drain()
                conn.close()
                return
            if data == _EOF:
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()


async def _cancel_the_rest() -> None:
    """Every task of the loop but this one, cancelled and finished."""
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class ProxyThread:
    """Proxies on an event loop in a thread of their own (for blocking tests)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._proxies: list[FaultProxy] = []

    def proxy(self, upstream: str, fault: Fault = Fault.PASS, latency_s: float = 0.0) -> FaultProxy:
        proxy = FaultProxy(upstream, fault, latency_s)
        asyncio.run_coroutine_threadsafe(proxy.start(), self._loop).result(10)
        self._proxies.append(proxy)
        return proxy

    def close(self) -> None:
        for proxy in self._proxies:
            asyncio.run_coroutine_threadsafe(proxy.stop(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def proxy_thread() -> Iterator[ProxyThread]:
    runner = ProxyThread()
    try:
        yield runner
    finally:
        runner.close()


async def _serve_until_stopped(proxy: FaultProxy) -> None:
    import signal

    await proxy.start()
    print(f"listening on {proxy.endpoint}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await proxy.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.faults --upstream HOST:PORT --fault latency --latency-ms 100`: a proxy
    in a process of its own (e.g. for benchmarks/fanout.py), until SIGTERM or Ctrl-C. Its
    first line on standard output is `listening on HOST:PORT`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--fault", choices=[f.value for f in Fault], default=Fault.PASS.value)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="with --fault latency")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, Fault(args.fault), args.latency_ms / 1000)
    asyncio.run(_serve_until_stopped(proxy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
