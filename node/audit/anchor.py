"""The anchor: what is saved beside each signed checkpoint so that opening (or checking) a
log reads only the entries written after it.

A checkpoint signs the root of the tree of the log's first `size` entries. The anchor saved
with it holds the Merkle frontier (`federation.merkle.CompactRange`) of the first
`size - 1` leaves, the chain head (the hash entry `size - 1` states) and where entry
`size - 1` starts in the backend. Nothing in it is taken on trust:

- the anchor is used only if its note is the newest checkpoint the backend holds, and (when
  the caller knows the node's key) only if that note verifies with it;
- entry `size - 1` is read again: it must be a well-formed entry whose hash matches its
  content and is the saved head, and its leaf appended to the saved frontier must give the
  signed root. So the frontier and the head are both bound to a root the node signed: a
  frontier or head that was edited, or an entry that was rewritten in place, fails here;
- the entries after it are checked as a full scan checks them, chained onto that head.

What it does not recheck is the entries before `size - 1`: their leaves are committed to by
the signed root, and a full check (`liaison audit verify --full`, or the history an
`AuditLog` loads in the background after a fast open) reads them all again.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from federation import checkpoints, merkle
from node.audit.entries import (
    AuditCorrupt,
    check_content,
    check_line_leaf,
    leaf_of_canonical,
    parse_line,
)
from node.audit.storage import AuditStorage, StorageError
from node.audit.verify import check_notes

ANCHOR_VERSION = 1


class AnchorRejected(Exception):
    """A saved anchor that cannot be trusted, or none (`saved` False): the caller checks
    the log from entry 0."""

    def __init__(self, why: str, *, saved: bool = True) -> None:
        super().__init__(why)
        self.saved = saved


@dataclass(frozen=True, slots=True)
class Anchor:
    """The anchor saved with the checkpoint `note` (see the module's docstring)."""

    note: str
    checkpoint: checkpoints.Checkpoint  # what `note` states (verified by `trusted_anchor`)
    head: str  # the hash entry `size - 1` states
    frontier: tuple[bytes, ...]  # the compact range of leaves [0, size - 1)
    position: int | None  # where entry `size - 1` starts (a file's byte offset)

    @property
    def size(self) -> int:
        return self.checkpoint.size


def encode_anchor(note: str, head: str, frontier: tuple[bytes, ...], position: int | None) -> bytes:
    """The anchor as the backend keeps it: one JSON object."""
    doc = {
        "v": ANCHOR_VERSION,
        "note": note,
        "head": head,
        "frontier": [h.hex() for h in frontier],
        "position": position,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_anchor(data: bytes) -> Anchor:
    """An anchor read back (shape checked only); AnchorRejected saying what is wrong."""
    try:
        doc = json.loads(data)
        if doc["v"] != ANCHOR_VERSION:
            raise AnchorRejected(f"anchor version {doc['v']!r}, not {ANCHOR_VERSION}")
        note, head, position = str(doc["note"]), str(doc["head"]), doc["position"]
        frontier = tuple(bytes.fromhex(h) for h in doc["frontier"])
        stated = checkpoints.Checkpoint.from_note_body(note[: note.index("\n\n") + 1])
    except AnchorRejected:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise AnchorRejected(f"the saved anchor cannot be read ({exc})") from None
    if position is not None and (not isinstance(position, int) or position < 0):
        raise AnchorRejected(f"the saved anchor's position {position!r} is not an offset")
    if stated.size == 0:
        raise AnchorRejected("the saved anchor is of an empty tree")
    try:
        merkle.CompactRange.from_state(stated.size - 1, frontier)
    except merkle.ProofError as exc:
        raise AnchorRejected(f"the saved frontier is malformed ({exc})") from None
    return Anchor(note, stated, head, frontier, position)


def trusted_anchor(
    storage: AuditStorage, verifier: checkpoints.Verifier | None, origin: str | None = None
) -> Anchor:
    """The backend's anchor, if it is of its newest checkpoint and (with a `verifier`) that
    checkpoint verifies with the node's key for `origin` (default: the verifier's name);
    else AnchorRejected saying why. Entry `size - 1` is checked by `resume`."""
    try:
        data = storage.load_anchor()
        latest = storage.latest_checkpoint() if data is not None else None
    except (StorageError, OSError, ValueError) as exc:
        raise AnchorRejected(f"the saved anchor cannot be read ({exc})") from None
    if data is None:
        raise AnchorRejected("no anchor was saved with a checkpoint", saved=False)
    anchor = decode_anchor(data)
    if anchor.note != latest:
        raise AnchorRejected("the saved anchor is not of the newest checkpoint")
    if verifier is not None:
        try:
            checkpoints.verify_checkpoint(anchor.note, origin or verifier.name, verifier)
        except checkpoints.NoteError as exc:
            raise AnchorRejected(f"the anchor's checkpoint does not verify ({exc})") from None
    return anchor


@dataclass(slots=True)
class Resumed:
    """A log checked from its anchor: the entries from `anchor.size - 1` on."""

    head: str  # the chain's head after the last good entry
    count: int  # the log's size: good entries from 0
    tree: merkle.CompactRange  # the frontier at `count`
    before: tuple[bytes, ...]  # the frontier at `count - 1` (what the next anchor saves)
    anchor_prev: str  # the `prev` entry `anchor.size - 1` states
    leaves: list[bytes] = field(default_factory=list)  # leaves from `anchor.size - 1` on
    roots: dict[int, bytes] = field(default_factory=dict)  # roots at the sizes asked for


def resume(
    lines: Iterator[bytes],
    anchor: Anchor,
    where: Path | str,
    *,
    torn_ok: bool,
    keep_leaves: bool = True,
    roots_at: Collection[int] = (),
) -> Resumed:
    """Check entry `anchor.size - 1` (the first of `lines`) against the anchor, then the
    entries after it as `check_chain` does.

    AnchorRejected if that entry, the saved head or the frontier does not give the signed
    root (the caller then checks from entry 0); AuditCorrupt naming the first bad entry
    after it. `roots_at`: sizes from `anchor.size` on at which to keep the root."""
    last = anchor.size - 1
    first = next(lines, None)
    if first is None or not first.endswith(b"\n"):
        raise AnchorRejected(f"entry {last}, the last the anchor's checkpoint covers, is missing")
    try:
        stated, doc = parse_line(first, last, where)
        prev = doc.get("prev")
        if not isinstance(prev, str):
            raise AuditCorrupt(where, last, "no previous hash")
        encoded = check_content(doc, prev, stated, last, where)
    except AuditCorrupt as exc:
        raise AnchorRejected(f"entry {last} is not the one the anchor saved ({exc.why})") from None
    if stated != anchor.head:
        raise AnchorRejected(f"entry {last} does not state the saved chain head")
    leaf = leaf_of_canonical(doc, encoded)
    tree = merkle.CompactRange.from_state(last, anchor.frontier)
    before = tree.hashes
    tree.append(leaf)
    if tree.root() != anchor.checkpoint.root:
        raise AnchorRejected(f"the saved frontier and entry {last} do not give the signed root")
    wanted = set(roots_at)
    out = Resumed(str(stated), anchor.size, tree, before, prev, [leaf] if keep_leaves else [])
    if anchor.size in wanted:
        out.roots[anchor.size] = tree.root()
    for raw in lines:
        if not raw.endswith(b"\n"):
            if torn_ok:
                break
            raise AuditCorrupt(where, out.count, "torn final line")
        out.head, _, leaf = check_line_leaf(raw, out.count, out.head, where)
        out.before = tree.hashes
        tree.append(leaf)
        if keep_leaves:
            out.leaves.append(leaf)
        out.count += 1
        if out.count in wanted:
            out.roots[out.count] = tree.root()
    return out


def verify_from_anchor(
    storage: AuditStorage, verifier: checkpoints.Verifier, origin: str | None = None
) -> tuple[int, int, Anchor]:
    """What `liaison audit verify` checks by default: the anchor of the newest checkpoint
    (signed by `verifier` for `origin`) against that checkpoint's root, the entries from
    its last one on (their chain, hashes and leaves, and the newest checkpoint's root), and
    every checkpoint's signature, origin and order (`check_notes`).

    Not re-read: the entries before the anchor, and so the roots of older checkpoints
    (`verify_storage` checks those). Returns (entries, checkpoints, anchor); AnchorRejected
    if there is no anchor to trust (check from entry 0 then), AuditCorrupt or
    CheckpointInvalid as `verify_storage`."""
    anchor = trusted_anchor(storage, verifier, origin)
    lines = storage.scan_from(anchor.size - 1, anchor.position)
    done = resume(
        lines, anchor, storage.where, torn_ok=False, keep_leaves=False, roots_at=(anchor.size,)
    )
    checked = check_notes(storage, done.count, done.roots.get, verifier, origin)
    return done.count, checked, anchor
