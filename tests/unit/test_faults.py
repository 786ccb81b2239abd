"""The fault-injecting proxy (tests/faults.py) in front of a plain echo server: each fault
does what it says, on new connections and on open ones."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.faults import Fault, FaultProxy, proxy_thread


class Echo:
    """An echo server that counts its connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


Scenario = Callable[[FaultProxy, Echo], Awaitable[None]]


def run(scenario: Scenario, fault: Fault = Fault.PASS, latency_s: float = 0.0) -> None:
    async def main() -> None:
        echo = Echo()
        proxy = await FaultProxy(await echo.start(), fault, latency_s).start()
        try:
            await asyncio.wait_for(scenario(proxy, echo), 10)
        finally:
            for writer in _clients:
                writer.close()
            _clients.clear()
            await proxy.stop()
            await echo.stop()

    asyncio.run(main())


_clients: list[asyncio.StreamWriter] = []


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection, closed when the scenario ends."""
    host, _, port = proxy.endpoint.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    _clients.append(writer)
    return reader, writer


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def read_all(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while chunk := await reader.read(65536):
        out += chunk
    return out


def test_pass_forwards_both_ways() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        assert await roundtrip(reader, writer, b"hello") == b"hello"
        assert await roundtrip(reader, writer, b"x" * 200_000) == b"x" * 200_000
        writer.write_eof()
        assert await read_all(reader) == b""  # the half-close went through, and back
        assert (proxy.accepted, proxy.forwarded, echo.connections) == (1, 1, 1)

    run(scenario)


def test_latency_delays_each_way_and_keeps_the_order() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        started = time.monotonic()
        for i in range(5):
            writer.write(f"<{i}>".encode())
            await writer.drain()
            await asyncio.sleep(0.01)
        got = await reader.readexactly(15)
        # 100 ms there and 100 ms back; the chunks are not delayed one after the other.
        assert 0.2 <= time.monotonic() - started < 0.2 + 0.04 + 1.0
        assert got == b"<0><1><2><3><4>"

    run(scenario, Fault.LATENCY, latency_s=0.1)


def test_reset_resets_a_new_connection_and_never_reaches_the_server() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        writer.write(b"hello")
        with pytest.raises(ConnectionResetError):
            await writer.drain()
            await read_all(reader)
        assert (proxy.accepted, proxy.forwarded, echo.connections) == (1, 0, 0)

    run(scenario, Fault.RESET)


def test_reset_of_an_open_connection_at_its_next_chunk() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        assert await roundtrip(reader, writer, b"one") == b"one"
        proxy.set(Fault.RESET)
        writer.write(b"two")
        with pytest.raises(ConnectionResetError):
            await writer.drain()
            await read_all(reader)

    run(scenario)


def test_blackhole_accepts_and_says_nothing() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        writer.write(b"hello")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        assert (proxy.accepted, proxy.forwarded, echo.connections) == (1, 0, 0)
        writer.close()

    run(scenario, Fault.BLACKHOLE)


def test_blackhole_of_an_open_connection_swallows_what_follows() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        assert await roundtrip(reader, writer, b"one") == b"one"
        proxy.set(Fault.BLACKHOLE)
        writer.write(b"two")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        proxy.set(Fault.PASS)  # the network comes back; what was swallowed is gone
        assert await roundtrip(reader, writer, b"three") == b"three"

    run(scenario)


def test_truncate_cuts_the_next_answer_in_half_and_closes() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        assert await roundtrip(reader, writer, b"whole") == b"whole"
        proxy.set(Fault.TRUNCATE)
        writer.write(b"0123456789")
        await writer.drain()
        assert await read_all(reader) == b"01234"
        assert echo.connections == 1  # the server had the whole request

    run(scenario)


def test_truncate_lets_shorter_chunks_through() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, writer = await connect(proxy)
        proxy.set(Fault.TRUNCATE, truncate_min=8)
        assert await roundtrip(reader, writer, b"short") == b"short"
        writer.write(b"0123456789")
        await writer.drain()
        assert await read_all(reader) == b"01234"

    run(scenario)


def test_stop_closes_held_connections() -> None:
    async def scenario(proxy: FaultProxy, echo: Echo) -> None:
        reader, _ = await connect(proxy)
        await asyncio.sleep(0.05)
        await proxy.stop()
        assert await asyncio.wait_for(read_all(reader), 2) == b""

    run(scenario, Fault.BLACKHOLE)


def test_a_proxy_on_its_own_thread_serves_blocking_code() -> None:
    with socket.create_server(("127.0.0.1", 0)) as upstream, proxy_thread() as proxies:
        host, port = upstream.getsockname()[:2]
        proxy = proxies.proxy(f"{host}:{port}")
        phost, _, pport = proxy.endpoint.rpartition(":")
        with socket.create_connection((phost, int(pport)), timeout=5) as client:
            server_side, _ = upstream.accept()
            with server_side:
                client.sendall(b"ping")
                assert server_side.recv(4) == b"ping"
                server_side.sendall(b"pong")
                assert client.recv(4) == b"pong"


def test_a_proxy_in_a_process_of_its_own() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        host, port = upstream.getsockname()[:2]
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults", "--upstream", f"{host}:{port}"],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("listening on 127.0.0.1:")
            phost, _, pport = line.split()[-1].rpartition(":")
            with socket.create_connection((phost, int(pport)), timeout=5) as client:
                server_side, _ = upstream.accept()
                with server_side:
                    client.sendall(b"ping")
                    assert server_side.recv(4) == b"ping"
        finally:
            process.terminate()
            assert process.wait(10) == 0
            process.stdout.close()  # type: ignore[union-attr]
