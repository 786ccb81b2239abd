"""The federation directory a running node holds, and how it is kept fresh.

One object owns the directory in force: everything that installs one (the start, the
scheduled refresh from a file or URL, a fetch from a peer that advertised a newer serial)
goes through `offer`, which installs only what the pinned authority key signed for our
federation, has not expired, and is newer than anything this node has held: a peer or a
mirror can delay news, never forge it nor roll it back.

The highest serial held is persisted beside the directory file (`directory.state`, with the
signed bytes), so a rollback is refused across restarts too, and a node that learned a newer
directory from a peer restarts on it even if its configured file is older.

When a refresh fails the node keeps serving with the last good directory until it expires;
from then on `current` raises (reason `directory_expired`) and the node refuses peers rather
than trust a membership list the authority no longer vouches for.

Reading a file or URL, and fetching from a peer: `node.directory_sources`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.directory import (
    EXPIRED,
    MALFORMED,
    UNAVAILABLE,
    Directory,
    DirectoryError,
    check_not_older,
    verify_directory,
)
from node.atomic_write import write_atomically
from node.config import NodeConfig
from node.directory_sources import load_from
from node.errors import Kind, Refusal
from node.metrics import NodeMetrics

log = logging.getLogger("liaison.directory")

STATE_FORMAT = "liaison-directory-state/v1"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def state_path_for(directory_file: Path) -> Path:
    """Where the node keeps what it knows of the directory: beside the directory file."""
    return directory_file.with_name("directory.state")


class DirectoryState:
    """The directory in force, its signed bytes, and the rollback floor.

    `offer` is synchronous and cheap (one Ed25519 verification), so it runs on the event loop;
    reading a source runs in a thread. A lock makes `offer` safe from any thread.
    """

    def __init__(
        self,
        authority: ed25519.Ed25519PublicKey,
        federation: str,
        source: str,
        state_path: Path | None,
        *,
        metrics: NodeMetrics | None = None,
        ca_file: Path | None = None,
        fetch_timeout: float = 10.0,
        peer_interval: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authority = authority
        self._federation = federation
        self.source = source
        self._state_path = state_path
        self._metrics = metrics
        self._ca_file = ca_file
        self._fetch_timeout = fetch_timeout
        self._peer_interval = peer_interval
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._directory: Directory | None = None
        self._raw = b""
        # The highest serial ever held (and its digest): persisted, so it outlives restarts.
        self._floor_serial = 0
        self._floor_digest: str | None = None
        # The last refusal per source, so a stale file polled every minute is logged and
        # counted once, not once a minute.
        self._last_refused: dict[str, str] = {}
        self._peer_attempts: dict[str, float] = {}
        self._peer_task: asyncio.Task[bool] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._expiry_logged = 0
        if metrics is not None:
            metrics.directory_age.set_function(self.age_seconds)

    # --- what callers read ------------------------------------------------------------------

    @property
    def current(self) -> Directory:
        """The directory in force; DirectoryError (reason `directory_expired`) once it has
        expired, so no caller can go on trusting a membership list nobody vouches for."""
        directory = self._directory
        if directory is None:
            raise DirectoryError("this node holds no federation directory", UNAVAILABLE)
        if directory.expired(self._clock()):
            raise DirectoryError(
                f"the federation directory in force (serial {directory.serial}) expired at "
                f"{directory.expires_at:%Y-%m-%dT%H:%M:%SZ}; peers are refused until a "
                "fresh one is installed",
                EXPIRED,
            )
        return directory

    def require(self) -> Directory:
        """`current` for the RPC edge: a Refusal a peer understands instead of an error.
        Pass it to PeerAuthenticator as its `directory` callable."""
        try:
            return self.current
        except DirectoryError as exc:
            raise Refusal(
                Kind.UNAVAILABLE,
                (exc.reason,),
                "this node has no valid federation directory at the moment and refuses all "
                "calls until it has one; retry later",
            ) from None

    @property
    def raw(self) -> bytes:
        """The signed bytes of the directory in force, exactly as the authority signed them."""
        return self._raw

    @property
    def serial(self) -> int:
        """The serial this node holds (0 if none): what it advertises on every call."""
        directory = self._directory
        return directory.serial if directory is not None else 0

    def is_expired(self) -> bool:
        directory = self._directory
        return directory is None or directory.expired(self._clock())

    def age_seconds(self) -> float:
        """Seconds since the directory in force was issued (NaN when there is none)."""
        directory = self._directory
        if directory is None:
            return math.nan
        return (self._clock() - directory.issued_at).total_seconds()

    # --- installing -------------------------------------------------------------------------

    def load(self) -> Directory:
        """The start: the directory remembered in the state file, then the configured source.

        Raises DirectoryError when neither gives a valid directory (the node must not start
        without one). A source that is older than what the state file holds is refused as a
        rollback and the node starts on the remembered one.
        """
        self._read_state()
        try:
            raw = load_from(self.source, timeout=self._fetch_timeout, ca_file=self._ca_file)
        except DirectoryError as exc:
            if self.is_expired():  # no directory, or only an expired one, to fall back on
                raise
            self._refused(exc, self.source)
        else:
            _, error = self._offer(raw, self.source, "startup")
            if error is not None and self.is_expired():
                raise error
        return self.current

    def offer(self, raw: bytes, source: str, via: str = "refresh") -> bool:
        """Install `raw` if it verifies and is newer than anything held; True if installed.

        A refusal is logged with its reason and counted in
        `liaison_directory_refusals_total{reason}`; the directory in force stays.
        """
        installed, _ = self._offer(raw, source, via)
        return installed

    def _offer(self, raw: bytes, source: str, via: str) -> tuple[bool, DirectoryError | None]:
        with self._lock:
            if self._directory is not None and raw == self._raw:
                self._last_refused.pop(source, None)  # the source works again: say so next time
                return False, None  # the same bytes again: the usual result of a refresh
            try:
                candidate = verify_directory(
                    raw,
                    self._authority,
                    now=self._clock(),
                    source=source,
                    federation=self._federation,
                )
                newer = check_not_older(self._floor_serial, self._floor_digest, candidate, source)
            except DirectoryError as exc:
                self._refused(exc, source, raw)
                return False, exc
            if not newer and self._directory is not None:
                return False, None  # the directory held, in other bytes (e.g. re-indented)
            self._install(candidate, raw, via, source)
            return True, None

    def _install(self, directory: Directory, raw: bytes, via: str, source: str) -> None:
        previous = self._directory
        self._directory, self._raw = directory, raw
        self._floor_serial, self._floor_digest = directory.serial, directory.digest()
        self._last_refused.pop(source, None)
        self._write_state()
        if self._metrics is not None:
            self._metrics.directory_serial.set(directory.serial)
            self._metrics.directory_expiry.set(directory.expires_at.timestamp())
            self._metrics.directory_installs.labels(via).inc()
            self._metrics.know_members(directory)
        log.info(
            "directory serial %d installed from %s (was %s), %d member(s), expires %s",
            directory.serial,
            source,
            previous.serial if previous else "none",
            len(directory.members),
            f"{directory.expires_at:%Y-%m-%dT%H:%M:%SZ}",
        )
        if previous is not None:
            for change in _status_changes(previous, directory):
                log.warning("directory serial %d: %s", directory.serial, change)

    def _refused(self, exc: DirectoryError, source: str, raw: bytes = b"") -> None:
        key = f"{exc.reason}:{hashlib.sha256(raw).hexdigest()}"
        with self._lock:
            if self._last_refused.get(source) == key:
                log.debug("directory from %s refused again (%s): %s", source, exc.reason, exc)
                return
            if len(self._last_refused) > 1024:  # peers are bounded by the directory; be safe
                self._last_refused.clear()
            self._last_refused[source] = key
        log.warning("directory refused (%s): %s; keeping serial %d", exc.reason, exc, self.serial)
        if self._metrics is not None:
            self._metrics.directory_refusals.labels(exc.reason).inc()

    # --- the state file ---------------------------------------------------------------------

    def _read_state(self) -> None:
        """Take the floor, and the directory if it still verifies, from the state file.

        A state file that cannot be read is an error, not a fresh start: starting afresh
        would forget the floor and let an old directory back in. The operator decides.
        """
        path = self._state_path
        if path is None or not path.exists():
            return
        try:
            doc = json.loads(path.read_bytes())
            if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
                raise ValueError(f"not {STATE_FORMAT}")
            serial, digest = doc["serial"], doc["sha256"]
            if not isinstance(serial, int) or not isinstance(digest, str):
                raise ValueError("serial or sha256 of the wrong type")
            raw = base64.b64decode(doc.get("directory", ""), validate=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DirectoryError(
                f"directory state file {path} is unreadable ({exc}); it guards against "
                "rollback: restore it, or remove it to trust the configured directory afresh",
                MALFORMED,
            ) from None
        self._floor_serial, self._floor_digest = serial, digest
        if not raw:
            return
        try:
            directory = verify_directory(
                raw,
                self._authority,
                now=self._clock(),
                source=str(path),
                federation=self._federation,
                allow_expired=True,  # an expired one is still the last good: load() decides
            )
        except DirectoryError as exc:
            log.warning("ignoring the directory remembered in %s: %s", path, exc)
            return
        if directory.serial == serial and directory.digest() == digest:
            self._install(directory, raw, "startup", str(path))

    def _write_state(self) -> None:
        if self._state_path is None or self._directory is None:
            return
        doc = {
            "format": STATE_FORMAT,
            "serial": self._floor_serial,
            "sha256": self._floor_digest,
            "directory": base64.b64encode(self._raw).decode(),
        }
        try:
            write_atomically(self._state_path, (json.dumps(doc, indent=2) + "\n").encode())
        except OSError as exc:
            # Serving the newer directory matters more than remembering it; say so loudly.
            log.error(
                "cannot write %s (%s): a restart could fall back to an older directory",
                self._state_path,
                exc,
            )

    # --- keeping it fresh -------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Re-read the configured source (in a thread) and offer it; True if installed."""
        try:
            raw = await asyncio.to_thread(
                load_from, self.source, timeout=self._fetch_timeout, ca_file=self._ca_file
            )
        except DirectoryError as exc:
            self._refused(exc, self.source)
            installed = False
        else:
            installed = self.offer(raw, self.source, "refresh")
        directory = self._directory
        if directory is not None and self.is_expired() and self._expiry_logged != directory.serial:
            self._expiry_logged = directory.serial
            log.error(
                "directory serial %d expired at %s and no fresh one could be installed: "
                "refusing every peer",
                directory.serial,
                f"{directory.expires_at:%Y-%m-%dT%H:%M:%SZ}",
            )
        return installed

    async def refresh_loop(self, interval: float) -> None:
        """Refresh every `interval` seconds until cancelled; a failure never ends the loop."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # a bug here must not silently stop all future refreshes
                log.exception("directory refresh failed")

    def start_refresh(self, interval: float) -> asyncio.Task[None]:
        """Run `refresh_loop` in the background; `close` stops it."""
        self._refresh_task = asyncio.get_running_loop().create_task(self.refresh_loop(interval))
        return self._refresh_task

    def learn_from_peer(
        self, peer: str, serial: int, fetch: Callable[[], Awaitable[bytes]]
    ) -> asyncio.Task[bool] | None:
        """A peer advertised `serial`: if it is newer than ours, fetch and offer its directory
        in the background (never delaying the peer's call). The task, or None when nothing was
        started: not newer, a fetch already in flight, or this peer asked us too recently.

        A lying peer costs us one rate-limited fetch; what it sends is verified like any
        other directory, so it can neither forge one nor roll us back.
        """
        if serial <= self._floor_serial:
            return None
        if self._peer_task is not None and not self._peer_task.done():
            return None
        now = self._monotonic()
        last = self._peer_attempts.get(peer)
        if last is not None and now - last < self._peer_interval:
            return None
        if len(self._peer_attempts) > 1024:
            self._peer_attempts = {
                p: t for p, t in self._peer_attempts.items() if now - t < self._peer_interval
            }
        self._peer_attempts[peer] = now
        self._peer_task = asyncio.get_running_loop().create_task(
            self._fetch_from_peer(peer, serial, fetch)
        )
        return self._peer_task

    async def _fetch_from_peer(
        self, peer: str, serial: int, fetch: Callable[[], Awaitable[bytes]]
    ) -> bool:
        source = f"directory from peer {peer}"
        try:
            raw = await asyncio.wait_for(fetch(), self._fetch_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever a peer's failure is, it is the peer's, not ours
            self._refused(
                DirectoryError(
                    f"{peer} advertised directory serial {serial} but fetching it failed: "
                    f"{type(exc).__name__}: {exc}",
                    UNAVAILABLE,
                ),
                source,
            )
            return False
        return self.offer(raw, source, "peer")

    # --- the GetDirectory RPC ---------------------------------------------------------------

    def signed(self) -> tuple[int, bytes]:
        """The serial and signed bytes of the directory in force, for GetDirectory (the RPC
        edge encodes them); a Refusal if this node holds none."""
        directory = self._directory
        if directory is None:
            raise Refusal(Kind.UNAVAILABLE, (UNAVAILABLE,), "no directory to give")
        return directory.serial, self._raw

    async def close(self) -> None:
        """Stop the refresh loop and any fetch in flight (for Node.stop)."""
        for task in (self._refresh_task, self._peer_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresh_task = self._peer_task = None


def _status_changes(before: Directory, after: Directory) -> list[str]:
    """What an operator wants to read in the log when a new directory lands."""
    changes = []
    old = {m.node_id: m for m in before.members}
    new = {m.node_id: m for m in after.members}
    for node_id in sorted(old.keys() | new.keys()):
        a, b = old.get(node_id), new.get(node_id)
        if a is None and b is not None:
            changes.append(f"{node_id} joined ({b.status.value})")
        elif b is None:
            changes.append(f"{node_id} left the directory")
        elif a is not None and a.status is not b.status:
            changes.append(f"{node_id} is now {b.status.value} (was {a.status.value})")
        elif a is not None and a.certificate_sha256 != b.certificate_sha256:
            changes.append(f"{node_id} has a new certificate")
    return changes


def for_node(
    config: NodeConfig, authority: ed25519.Ed25519PublicKey, metrics: NodeMetrics | None = None
) -> DirectoryState:
    """The directory state a node's configuration describes: its file or URL, and the
    state file beside the file (so `serve` and the CLI see the same directory)."""
    trust = config.trust
    return DirectoryState(
        authority,
        config.node.federation,
        trust.directory_url or str(trust.directory),
        state_path_for(trust.directory),
        metrics=metrics,
        ca_file=trust.directory_ca,
    )
