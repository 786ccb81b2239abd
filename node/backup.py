"""`liaison db backup` and `liaison db restore`: one archive holding what a node needs to come
back as itself, taken while it runs.

What a node is: its database (records, tickets, received records, notices, outbox; the audit
tables when the log is kept there), its audit log (the file, its checkpoints and the witness
state beside it, when the log is a file: the nonces in it are what refuses a replay after a
restart), its keys and certificates (peers know it by them), the directory and its state
(the rollback floor), its policy data and its node.toml. The archive holds every one of them
that lies in the node's folder, each with its SHA-256 in ``manifest.json``; what lies outside
the folder, and a PostgreSQL database, it names and leaves out (PostgreSQL: pg_dump, see
docs/operating.md).

Consistency while the node runs: a SQLite database is copied with SQLite's online backup
API (a consistent snapshot, WAL included, while the node keeps writing). The audit log is
copied after the database, so it holds every request the database reflects (and the nonces
of all of them); its checkpoints are copied before it, so every checkpoint covers entries
the copy holds; a line or checkpoint torn by an append in flight is cut off the copy.

The archive holds the node's private keys: keep it as the keys are kept (it is written 0600).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from node.audit.file_store import checkpoints_path, split_checkpoint_bytes
from node.audit.witness_state import state_path
from node.config import NodeConfig, load_config
from node.directory_state import state_path_for
from node.schema import current, node_databases

FORMAT = "liaison-backup/v1"
MANIFEST = "manifest.json"
_DATABASES = "databases"


class BackupError(RuntimeError):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class _Item:
    name: str  # path in the archive (relative to the node's folder, or databases/<n>)
    data: bytes


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    return Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def _sqlite_snapshot(path: Path) -> bytes:
    """A consistent copy of the live database at `path` (SQLite's backup API)."""
    if not path.is_file():
        raise BackupError(f"the database {path} does not exist: check [store] url")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy.db"
        source = sqlite3.connect(path)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
            # One self-contained file: the copy keeps no WAL beside it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
            source.close()
        return copy.read_bytes()


def _complete_lines(data: bytes) -> bytes:
    """`data` up to its last newline: an append in flight is not in the copy."""
    return data[: data.rfind(b"\n") + 1]


def _node_files(config: NodeConfig) -> list[Path]:
    """The node's own files, in the order they are copied (see the module's docstring)."""
    files = [
        config.source,
        config.tls.certificate,
        config.tls.key,
        config.tls.ca,
        config.trust.authority_public_key,
        config.trust.signing_key,
        config.trust.directory,
        state_path_for(config.trust.directory),
        config.policy.data,
        state_path(config.audit.path),
    ]
    if config.trust.directory_ca is not None:
        files.append(config.trust.directory_ca)
    return files


def _collect(config: NodeConfig) -> Iterator[_Item | str]:
    """What goes in the archive, in copying order, and a line for each thing left out."""
    folder = config.source.parent
    for n, url in enumerate(node_databases(config)):
        path = _sqlite_path(url)
        where = make_url(url).render_as_string(hide_password=True)
        if path is None:
            yield (
                f"left out: the PostgreSQL database {where}; back it up with "
                "`pg_dump --format=custom` (docs/operating.md)"
            )
        else:
            yield _Item(f"{_DATABASES}/{n}", _sqlite_snapshot(path))
    for path in _node_files(config):
        if path.is_file():
            yield _file_item(folder, path, path.read_bytes())
    if config.audit.store == "file":
        marks = checkpoints_path(config.audit.path)
        if marks.is_file():
            data = marks.read_bytes()
            _, end = split_checkpoint_bytes(data, marks)
            yield _file_item(folder, marks, data[:end])
        if config.audit.path.is_file():
            yield _file_item(
                folder, config.audit.path, _complete_lines(config.audit.path.read_bytes())
            )


def _file_item(folder: Path, path: Path, data: bytes) -> _Item | str:
    try:
        return _Item(path.resolve().relative_to(folder.resolve()).as_posix(), data)
    except ValueError:
        return f"left out: {path} (outside the node's folder {folder}); back it up yourself"


def back_up(config: NodeConfig, out: Path) -> list[str]:
    """Write the archive of the node `config` describes to `out` (never over a file);
    what was written and what was left out, in the operator's words."""
    if out.exists():
        raise BackupError(f"{out} exists: choose a new name (a backup never overwrites one)")
    items: list[_Item] = []
    said: list[str] = []
    for found in _collect(config):
        if isinstance(found, str):
            said.append(found)
        else:
            items.append(found)
    databases = node_databases(config)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "node": config.node.id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.source.name,
        "databases": [
            {
                "index": n,
                "url": make_url(url).render_as_string(hide_password=True),
                "revision": current(url).revision,
                "included": any(i.name == f"{_DATABASES}/{n}" for i in items),
            }
            for n, url in enumerate(databases)
        ],
        "files": {i.name: _sha256(i.data) for i in items},
    }
    partial = out.with_name(out.name + ".part")
    members = [(MANIFEST, json.dumps(manifest, indent=2).encode())]
    members += [(i.name, i.data) for i in items]
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w") as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(data), 0o600
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        partial.rename(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        why = exc.strerror or exc
        raise BackupError(f"cannot write {out} ({why}): check that folder") from None
    said.insert(
        0,
        f"{config.node.id}: wrote {out} ({len(items)} files; it holds the node's private "
        "keys: keep it as you keep them)",
    )
    return said


def _read_archive(source: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the files of a `db backup` archive, every file checked."""
    try:
        with tarfile.open(source, mode="r") as tar:
            found: dict[str, bytes] = {}
            for member in tar.getmembers():
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is None:
                    raise BackupError(f"{source}: {member.name!r} is not a plain file")
                found[member.name] = extracted.read()
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{source} is not a readable backup archive ({exc})") from None
    try:
        manifest = json.loads(found.pop(MANIFEST))
    except (KeyError, ValueError):
        raise BackupError(
            f"{source} has no readable {MANIFEST}: not a `db backup` archive"
        ) from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source} is a {manifest.get('format')!r} archive, not {FORMAT}")
    listed: dict[str, str] = manifest["files"]
    if set(listed) != set(found):
        raise BackupError(
            f"{source}: its files and its manifest disagree "
            f"({sorted(set(listed) ^ set(found))}); the archive is damaged"
        )
    for name, data in found.items():
        if _sha256(data) != listed[name]:
            raise BackupError(f"{source}: {name} does not match its checksum; damaged archive")
        if name.startswith("/") or ".." in Path(name).parts:
            raise BackupError(f"{source}: {name!r} would land outside the node's folder")
    return manifest, found


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def restore(source: Path, into: Path) -> list[str]:
    """Unpack the archive `source` into `into` (absent or empty: a restore never mixes with
    what is there); the databases go where the restored node.toml names them."""
    manifest, files = _read_archive(source)
    if into.exists() and any(into.iterdir()):
        raise BackupError(
            f"{into} is not empty: restore into an empty folder (stop the node and move its "
            "folder aside first)"
        )
    into.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if not name.startswith(f"{_DATABASES}/"):
            _write_new(into / name, data)
    config = load_config(into / manifest["config"])
    databases = node_databases(config)
    said = [f"{manifest['node']}: restored {len(files)} files from {source} into {into}"]
    for entry in manifest["databases"]:
        n = int(entry["index"])
        url = databases[n] if n < len(databases) else None
        if not entry["included"]:
            said.append(
                f"not in the archive: the database {entry['url']} (revision "
                f"{entry['revision']}); restore it with pg_restore before starting the node"
            )
            continue
        path = _sqlite_path(url) if url is not None else None
        if path is None:
            raise BackupError(
                f"the archive holds a SQLite database for {entry['url']}, but the restored "
                f"config names {url}: fix [store]/[audit] url in {config.source}"
            )
        if path.exists():
            raise BackupError(f"{path} exists: move it aside, then restore again")
        _write_new(path, files[f"{_DATABASES}/{n}"])
        said.append(f"database {path} restored (schema revision {entry['revision']})")
    said.append(f"check it with `liaison audit verify --config {config.source}`, then serve")
    return said
