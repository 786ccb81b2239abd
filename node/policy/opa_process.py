"""Start and stop a local OPA server on a loopback port (tests, `liaison` tooling, demos).

The OPA engine (:mod:`node.policy.opa`) talks to a server it does not own; in production
that is a sidecar run by the operator's supervisor. This module is for everything else:
the engine's tests need real OPA processes (no mocks), and tooling needs the same command
line the docs show. It locates the binary the way the project installs it
(``LIAISON_OPA``, else ``<repo>/.venv/tools/opa`` from ``scripts/setup.sh``, else ``opa`` on
``PATH``), picks a free loopback port, waits until the server listens, and always reaps
the process it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "LIAISON_OPA"
VENV_BINARY = REPO_ROOT / ".venv" / "tools" / "opa"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 10.0  # seconds for a started OPA to serve
SIGNAL_TIMEOUT = 5.0  # seconds for a paused OPA to stop, or a resumed one to run again
ATTEMPTS = 3  # ports tried when another process wins the race for a free one


class OpaNotFound(FileNotFoundError):
    """No OPA binary where the project looks for one."""


class OpaProcessError(RuntimeError):
    """The OPA process did not start (or not in time); the message carries its log."""


def find_opa(env: Mapping[str, str] | None = None) -> Path:
    """The OPA binary: ``$LIAISON_OPA``, else the repo's pinned copy, else ``opa`` on PATH.

    An explicit ``LIAISON_OPA`` that does not point at an executable is an error rather
    than a silent fall-through: whoever set it meant that binary, not another version.
    """
    env = os.environ if env is None else env
    explicit = env.get(ENV_VAR)
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise OpaNotFound(f"{ENV_VAR}={explicit} is not an executable file")
    if VENV_BINARY.is_file() and os.access(VENV_BINARY, os.X_OK):
        return VENV_BINARY
    on_path = shutil.which("opa", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    raise OpaNotFound(
        f"no OPA binary: set {ENV_VAR}, run scripts/setup.sh (installs {VENV_BINARY} at the "
        "version pinned in pyproject.toml), or put `opa` on PATH"
    )


@dataclass(frozen=True, slots=True)
class OpaTls:
    """Server-side TLS for the sidecar; with ``ca`` set, clients must present a certificate
    signed by it (``--authentication=tls``): only the node may ask or push policy."""

    certificate: Path
    key: Path
    ca: Path | None = None


def opa_command(
    binary: Path,
    addr: str,
    *,
    tls: OpaTls | None = None,
    args: Sequence[str] = (),
) -> list[str]:
    """The ``opa run --server`` command line for a sidecar (also printed by the docs)."""
    cmd = [
        str(binary),
        "run",
        "--server",
        "--addr",
        addr,
        "--log-level",
        "error",
        "--skip-version-check",  # no call home from a law-enforcement host
        "--shutdown-grace-period",
        "1",
    ]
    if tls is not None:
        cmd += ["--tls-cert-file", str(tls.certificate), "--tls-private-key-file", str(tls.key)]
        if tls.ca is not None:
            cmd += ["--tls-ca-cert-file", str(tls.ca), "--authentication=tls"]
    cmd += list(args)
    return cmd


def free_loopback_port() -> int:
    """A port the kernel just handed out; racy by nature, so :func:`start_opa` retries."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class OpaServer:
    """A running OPA process; a context manager that always stops it (and removes its log)."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def thread_states(self) -> dict[int, str]:
        """Each thread's state letter from ``/proc/PID/task/TID/stat`` (Linux): ``T`` stopped.

        The process's own ``/proc/PID/stat`` is only its main thread: a Go program such as
        OPA runs its scheduler on several threads, and after SIGSTOP each stops on its own,
        so the main thread shows ``T`` while others are still running and may answer.
        """
        states: dict[int, str] = {}
        for stat in Path(f"/proc/{self.pid}/task").glob("*/stat"):
            try:
                text = stat.read_text()
            except (FileNotFoundError, ProcessLookupError):  # the thread just exited
                continue
            # The state follows the command name, which is in parentheses and may hold any
            # character, ")" included.
            states[int(stat.parent.name)] = text[text.rindex(")") + 2]
        return states

    def pause(self) -> None:
        """SIGSTOP, and wait until every thread has stopped: then the kernel still accepts
        connections and nobody answers (a stalled OPA). The signal takes effect thread by
        thread: without the wait, OPA answered 2 of 25 calls made just after it was sent."""
        self._signal(signal.SIGSTOP, stopped=True)

    def resume(self) -> None:
        """SIGCONT, and wait until no thread is stopped any more."""
        self._signal(signal.SIGCONT, stopped=False)

    def _signal(self, signum: signal.Signals, *, stopped: bool) -> None:
        """Send `signum`, then poll until every thread is stopped (or none is), bounded."""
        if self.process.poll() is None:
            os.kill(self.pid, signum)
        deadline = time.monotonic() + SIGNAL_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise OpaProcessError(
                    f"OPA (pid {self.pid}) exited with status {self.process.returncode}; "
                    f"{signum.name} found nothing to act on"
                )
            states = self.thread_states()
            if not states:
                raise OpaProcessError(
                    f"no threads of OPA (pid {self.pid}) under /proc: {signum.name} needs "
                    "Linux's /proc to confirm it took effect"
                )
            halted = [state in "Tt" for state in states.values()]  # t: stopped by a tracer
            done = all(halted) if stopped else not any(halted)
            if done:
                return
            if time.monotonic() >= deadline:
                raise OpaProcessError(
                    f"OPA (pid {self.pid}) still {'running' if stopped else 'stopped'} "
                    f"{SIGNAL_TIMEOUT:g} s after {signum.name}; thread states: "
                    + " ".join(f"{tid}:{state}" for tid, state in sorted(states.items()))
                )
            time.sleep(0.001)

    def kill(self) -> None:
        """SIGKILL and reap: OPA crashing, as seen by a client."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (after SIGCONT, in case it was paused), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            try:
                os.kill(self.pid, signal.SIGCONT)
                self.process.terminate()
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            except ProcessLookupError:  # gone between poll() and kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> OpaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _healthy(url: str) -> bool:
    with requests.Session() as session:
        session.trust_env = False  # a loopback probe: no proxy from the environment
        try:
            with session.get(f"{url}/health", timeout=0.5) as response:
                return response.status_code == 200
        except requests.RequestException:
            return False


def start_opa(
    *, tls: OpaTls | None = None, args: Sequence[str] = (), port: int | None = None
) -> OpaServer:
    """Start ``opa run --server`` on a loopback port and wait until it serves.

    Readiness is ``GET /health`` == 200 over plain HTTP; with TLS it is the port accepting
    connections (OPA opens its listeners only once its policies and plugins are loaded, and
    a TLS probe would need a client certificate). ``args`` go last: policy or data paths
    to load at start-up, extra flags. ``port`` (default: a free one) is tried once.
    """
    binary = find_opa()
    last_error = ""
    for _ in range(ATTEMPTS if port is None else 1):
        chosen = port if port is not None else free_loopback_port()
        fd, name = tempfile.mkstemp(prefix="liaison-opa-", suffix=".log")
        os.close(fd)
        path = Path(name)
        scheme = "https" if tls is not None else "http"
        url = f"{scheme}://{LOOPBACK}:{chosen}"
        command = opa_command(binary, f"{LOOPBACK}:{chosen}", tls=tls, args=args)
        with path.open("wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        server = OpaServer(process, url, path)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            ready = _listening(LOOPBACK, chosen) if tls is not None else _healthy(url)
            if ready:
                return server
            time.sleep(0.02)
        exited = process.poll() is not None
        log_text = server.log().strip()
        server.stop()
        if exited and "address already in use" in log_text:
            last_error = log_text
            continue  # lost the port race: pick another
        state = f"exited with status {process.returncode}" if exited else "not ready in time"
        raise OpaProcessError(f"OPA {state} ({' '.join(command)}): {log_text or 'no output'}")
    raise OpaProcessError(f"OPA could not bind a loopback port: {last_error}")
