"""The audit chain checked in worker processes: the same result as in one process, and for a
damaged log the same first bad entry with the same reason."""

from __future__ import annotations

import asyncio
import json
import tempfile
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federation import merkle
from node.audit import entries, verify, verify_file
from node.audit.entries import AuditCorrupt
from node.audit.log import AuditLog
from tests.unit.test_audit import _record

COUNT = 100


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("parallel") / "audit.log"

    async def write() -> None:
        log = AuditLog(path)
        await asyncio.gather(*(log.append(_record(i)) for i in range(COUNT)))
        await log.close()

    asyncio.run(write())
    return path.read_bytes().splitlines(keepends=True)


def _rehashed(doc: dict[str, Any]) -> bytes:
    """`doc` (without `hash`) as a line whose hash matches its content."""
    digest = entries.chain_digest(str(doc["prev"]), entries.canonical(doc))
    return json.dumps({**doc, "hash": digest}).encode() + b"\n"


def _edit(lines: list[bytes], index: int, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(lines[index])
    del doc["hash"]
    change(doc)
    lines[index] = _rehashed(doc)


def _outcome(
    lines: list[bytes], workers: int, torn_ok: bool, file: Path | None = None
) -> tuple[Any, ...]:
    """check_chain's outcome on `lines`, or check_file's (workers reading byte ranges of
    the file they are written to) if `file` is given."""
    store = merkle.MemoryHashStore()
    lengths: array[int] = array("Q")
    try:
        if file is None:
            head, count = verify.check_chain(
                iter(lines), "audit.log", store, torn_ok=torn_ok, workers=workers
            )
        else:
            file.write_bytes(b"".join(lines))
            head, count = verify_file.check_file(
                file, "audit.log", store, torn_ok=torn_ok, workers=workers, lengths=lengths
            )
            assert list(lengths) == [len(line) for line in lines[:count]]
    except AuditCorrupt as exc:
        return ("bad", exc.index, exc.why, str(exc))
    return ("good", head, count, merkle.TreeHasher(store).root() if count else b"")


def _same(lines: list[bytes], *, torn_ok: bool = False) -> tuple[Any, ...]:
    one = _outcome(lines, 1, torn_ok)
    assert _outcome(lines, 2, torn_ok) == one
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "audit.log"
        assert _outcome(lines, 1, torn_ok, file) == one
        assert _outcome(lines, 2, torn_ok, file) == one, "byte ranges"
    return one


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.setattr(verify, "PARALLEL_MIN_ENTRIES", 16)
    monkeypatch.setattr(verify, "CHUNK_LINES", 8)
    # Ranges of a few entries, cut wherever a line ends after each 3,000 bytes.
    monkeypatch.setattr(verify_file, "PARALLEL_MIN_BYTES", 4000)
    monkeypatch.setattr(verify_file, "RANGE_BYTES", 3000)
    if "spawned" not in request.node.name:  # forked workers start in milliseconds
        monkeypatch.setattr(verify, "POOL_START", "fork")


def test_an_intact_log_gives_the_same_head_count_and_tree(lines: list[bytes]) -> None:
    assert _same(lines)[:3] == ("good", json.loads(lines[-1])["hash"], COUNT)


def test_a_short_log_is_checked_in_this_process(lines: list[bytes]) -> None:
    assert _same(lines[:15])[2] == 15


def _bad(lines: list[bytes], **kwargs: bool) -> tuple[int, str]:
    outcome = _same(lines, **kwargs)
    assert outcome[0] == "bad", outcome
    return outcome[1], outcome[2]


def test_each_kind_of_damage_is_named_at_the_same_entry(lines: list[bytes]) -> None:
    cases: list[tuple[Callable[[list[bytes]], None], int, str]] = []

    def garbage(at: int) -> Callable[[list[bytes]], None]:
        return lambda ls: ls.__setitem__(at, b"not json\n")

    cases.append((garbage(37), 37, "not a JSON entry with a hash"))
    cases.append((garbage(40), 40, "not a JSON entry with a hash"))  # a chunk's first
    cases.append((lambda ls: ls.__delitem__(30), 30, "sequence 31 where 30 was due"))
    cases.append((lambda ls: _edit(ls, 50, lambda d: d.update(seq=7)), 50, "sequence 7"))
    cases.append(
        (lambda ls: ls.__setitem__(61, ls[61].replace(b"FR-PN", b"FR-XX")), 61, "hash does")
    )
    # Rewritten with a matching hash: the next entry (a chunk's first) no longer chains.
    cases.append((lambda ls: _edit(ls, 63, lambda d: d.update(peer="X")), 64, "does not chain"))
    cases.append((lambda ls: _edit(ls, 70, lambda d: d.update(v=2)), 70, "entry version 2"))
    cases.append((lambda ls: _edit(ls, 45, lambda d: d.update(prev=5)), 45, "does not chain"))
    cases.append((lambda ls: _edit(ls, 0, lambda d: d.update(prev="1" * 64)), 0, "does not"))

    def wrong_prev_and_hash(ls: list[bytes]) -> None:  # the chain is checked first
        doc = json.loads(ls[80])
        doc["prev"], doc["hash"] = "1" * 64, "2" * 64
        ls[80] = json.dumps(doc).encode() + b"\n"

    cases.append((wrong_prev_and_hash, 80, "does not chain"))

    def two(ls: list[bytes]) -> None:  # the first in log order wins
        ls[90] = b"{}\n"
        _edit(ls, 11, lambda d: d.update(peer="X"))

    cases.append((two, 12, "does not chain"))
    cases.append((lambda ls: ls.__setitem__(99, ls[99].rstrip(b"\n")), 99, "torn final line"))
    for damage, index, why in cases:
        changed = list(lines)
        damage(changed)
        found_index, found_why = _bad(changed)
        assert found_index == index and found_why.startswith(why), (found_index, found_why)


def test_a_torn_last_line_ends_the_log_when_allowed(lines: list[bytes]) -> None:
    torn = [*lines[:-1], lines[-1].rstrip(b"\n")]
    assert _same(torn, torn_ok=True)[:3] == ("good", json.loads(lines[-2])["hash"], COUNT - 1)


def test_a_log_file_is_verified_in_spawned_workers_end_to_end(
    tmp_path: Path, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers by default, however many cores this machine lets the test use (with one,
    # both checks below would run in this process and prove nothing about the workers).
    monkeypatch.setattr(verify, "available_cores", lambda: 2)
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(lines))
    assert verify.verify_log(path) == COUNT
    log = AuditLog(path)  # recover: the tree rebuilt from the workers' leaves
    assert log.size == COUNT and log.root() == merkle.root(
        merkle.leaf_hash(entries.leaf_input(json.loads(line))) for line in lines
    )
    asyncio.run(log.close())


def test_damage_at_every_place_in_a_range_is_named_alike(lines: list[bytes]) -> None:
    """Each kind of damage at each of a dozen neighbouring entries, so that it falls on a
    range's (and a chunk's) first entry, its last, and between."""
    kinds: list[Callable[[list[bytes], int], None]] = [
        lambda ls, i: ls.__setitem__(i, b"not json\n"),
        lambda ls, i: ls.__delitem__(i),
        lambda ls, i: _edit(ls, i, lambda d: d.update(seq="7")),
        lambda ls, i: _edit(ls, i, lambda d: d.update(prev="1" * 64)),
        lambda ls, i: ls.__setitem__(i, ls[i].replace(b"FR-PN", b"FR-XX")),
        lambda ls, i: ls.insert(i, ls[i + 3]),
        lambda ls, i: ls.__setitem__(slice(i, i + 2), [ls[i + 1], ls[i]]),  # two swapped
    ]
    for damage in kinds:
        for index in range(20, 32):
            changed = list(lines)
            damage(changed, index)
            _bad(changed)
