"""The match benchmark's baseline: a bare ``grpc.aio`` server that answers every Match with
one pre-serialised answer over the node's own mutual TLS, in a child process so it has a
core of its own as the node has.

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


async def echo_serve(cert: Path, key: Path, ca: Path, response_file: Path) -> None:
    response = response_file.read_bytes()

    async def match(_raw: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return response

    limit = 1 << 20  # the node's default max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
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
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    await server.stop(1.0)


class EchoProcess:
    """The echo server in a child process, so it has a core of its own as the node has."""

    def __init__(self, owner: NodeHandle, response: bytes, folder: Path) -> None:
        self.folder = folder
        response_file = folder / "echo-response.bin"
        response_file.write_bytes(response)
        config = owner.config()
        with (folder / "echo.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve().with_name("match.py")),
                    "--echo-server",
                    str(config.tls.certificate),
                    str(config.tls.key),
                    str(config.tls.ca),
                    str(response_file),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=folder,
            )
        self.endpoint = ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.endpoint = f"127.0.0.1:{self._wait_port(timeout)}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_port(self, timeout: float) -> int:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            tail = (self.folder / "echo.log").read_text()[-3000:]
            raise RuntimeError(f"echo server did not start; its log ends:\n{tail}")
        return int(line.split()[1])

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
