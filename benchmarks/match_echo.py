"""The match benchmark's baseline: a bare ``grpc.aio`` server that answers every Match with
one pre-serialised answer over the node's own mutual TLS, in a child process so it has a
core of its own as the node has; or in N processes on one port (SO_REUSEPORT, as
``liaison serve --workers N``), the twin of a node with N workers.

The child is ``match.py --echo-server ...`` (a hidden option), so ``match.py`` stays the one
script to run; it imports this module as a sibling (``python benchmarks/match.py``).
"""

from __future__ import annotations

import asyncio
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import grpc

from node.local.federation import NodeHandle, stop_process

METHOD: Final = "/liaison.exchange.v1.ExchangeService/Match"


# --- the echo server (runs in its own process: `match.py --echo-server ...`) ---------------


async def echo_serve(cert: Path, key: Path, ca: Path, response_file: Path, port: int = 0) -> None:
    """Serve on ``port`` (0: a free one; another echo process's: the kernel spreads new
    connections over both) until SIGINT or SIGTERM; prints ``READY <port>`` once up."""
    response = response_file.read_bytes()

    async def match(_raw: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return response

    limit = 1 << 20  # the node's default max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1),  # as the node sets it
        ]
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                METHOD.split("/")[1], {"Match": grpc.unary_unary_rpc_method_handler(match)}
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    await server.stop(1.0)


class EchoProcess:
    """The echo server in a child process, so it has a core of its own as the node has; with
    ``processes`` > 1, that many on one port (the first picks it, the others join it)."""

    def __init__(
        self, owner: NodeHandle, response: bytes, folder: Path, processes: int = 1
    ) -> None:
        self.folder = folder
        response_file = folder / "echo-response.bin"
        response_file.write_bytes(response)
        config = owner.config()
        self._command = [
            sys.executable,
            str(Path(__file__).resolve().with_name("match.py")),
            "--echo-server",
            str(config.tls.certificate),
            str(config.tls.key),
            str(config.tls.ca),
            str(response_file),
        ]
        self._processes = processes
        self.children = [self._start([])]
        self.endpoint = ""

    def _start(self, extra: list[str]) -> subprocess.Popen[bytes]:
        with (self.folder / "echo.log").open("ab") as log:
            return subprocess.Popen(
                [*self._command, *extra],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.folder,
            )

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The first process (the one process of a single echo server)."""
        return self.children[0]

    def wait_ready(self, timeout: float = 30.0) -> None:
        port = self._wait_port(self.process, timeout)
        for _ in range(1, self._processes):
            child = self._start(["--echo-port", str(port)])
            self.children.append(child)
            self._wait_port(child, timeout)
        self.endpoint = f"127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    def _wait_port(self, process: subprocess.Popen[bytes], timeout: float) -> int:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            tail = (self.folder / "echo.log").read_text()[-3000:]
            raise RuntimeError(f"echo server did not start; its log ends:\n{tail}")
        return int(line.split()[1])

    def stop(self, timeout: float = 10.0) -> None:
        for child in self.children:
            stop_process(child, timeout)
            if child.stdout is not None:
                child.stdout.close()
