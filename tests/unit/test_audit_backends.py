"""The audit log on each backend: a file, SQLite and PostgreSQL (real ones), one behaviour.

The shared tests run against all three; the database ones add what a database brings:
replicas of one node sharing one tree, transactions that roll back whole, a server that
goes away and comes back.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from federation import checkpoints, merkle
from federation.merkle import TreeHasher
from node.audit.checkpoints import issue_checkpoint
from node.audit.database_store import DatabaseStorage, entries_table
from node.audit.entries import (
    AuditCorrupt,
    AuditError,
    AuditReplay,
    CheckpointInvalid,
    canonical,
    chain_digest,
)
from node.audit.file_store import FileStorage, checkpoints_path
from node.audit.log import AuditLog, existing_storage, open_audit_log
from node.audit.storage import AuditStorage
from node.audit.verify import load_tree, verify_storage
from tests.unit.test_audit import _append_many, _CountingLog, _record
from tests.unit.test_audit_merkle import KEY, ORIGIN, VERIFIER, _redacted
from tests.unit.test_audit_merkle import _grow as grow


@dataclass
class Backend:
    name: str
    path: Path
    url: str = ""

    def storage(self) -> AuditStorage:
        return FileStorage(self.path) if self.name == "file" else DatabaseStorage(self.url)

    def open(self) -> AuditLog:
        return AuditLog(self.storage())

    async def sign_beside(self) -> str:
        """A checkpoint signed beside the open log, as `liaison audit checkpoint` does: for
        a file, read only (the node holds it); for a database, as another replica."""
        if self.name == "file":
            return issue_checkpoint(self.path, TreeHasher(load_tree(self.path)), KEY, ORIGIN)
        other = self.open()
        try:
            return other.checkpoint(KEY, ORIGIN)
        finally:
            await other.close()

    def _sql(self, statement: str, **params: object) -> list[tuple[object, ...]]:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def lines(self) -> list[bytes]:
        """The stored entry lines, in order, read behind the log's back."""
        if self.name == "file":
            return self.path.read_bytes().splitlines()
        rows = self._sql(f"SELECT line FROM {entries_table.name} ORDER BY seq")
        return [str(r[0]).encode() for r in rows]

    def rewrite(self, index: int, line: bytes) -> None:
        """Replace stored entry `index` with `line` (tampering, as an intruder would)."""
        if self.name == "file":
            lines = self.path.read_bytes().splitlines(keepends=True)
            lines[index] = line + b"\n"
            self.path.write_bytes(b"".join(lines))
        else:
            self._sql(
                f"UPDATE {entries_table.name} SET line = :line WHERE seq = :seq",
                line=line.decode(),
                seq=index,
            )

    def cut(self, keep: int) -> None:
        """Lose every entry from `keep` on."""
        if self.name == "file":
            lines = self.path.read_bytes().splitlines(keepends=True)
            self.path.write_bytes(b"".join(lines[:keep]))
        else:
            self._sql(f"DELETE FROM {entries_table.name} WHERE seq >= :keep", keep=keep)

    def verify(self) -> tuple[int, int]:
        storage = self.storage()
        try:
            return verify_storage(storage, VERIFIER)
        finally:
            storage.close()


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    if name == "file":
        return Backend(name, tmp_path / "audit.log")
    if name == "sqlite":
        return Backend(name, tmp_path, f"sqlite:///{tmp_path / 'audit.db'}")
    return Backend(name, tmp_path, request.getfixturevalue("postgres_url"))


@pytest.fixture
def database(backend: Backend) -> Backend:
    """A database backend: the tests that take it run on SQLite and PostgreSQL only."""
    return backend


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test taking `backend` runs on each backend; one taking `database` (which is
    that backend) on the databases only. PostgreSQL is skipped without a server."""
    if "backend" in metafunc.fixturenames:
        names = ["sqlite", "postgres"]
        if "database" not in metafunc.fixturenames:
            names.insert(0, "file")
        metafunc.parametrize("backend", names, indirect=True)


def _grow(backend: Backend, count: int, *, checkpoint_at: tuple[int, ...] = ()) -> list[str]:
    return grow(backend.open, count, checkpoint_at=checkpoint_at)


def test_200_concurrent_appends_one_write_per_batch(backend: Backend) -> None:
    async def run() -> tuple[list[str], list[int], int]:
        log = _CountingLog(backend.storage(), delay=0.01)
        first = asyncio.ensure_future(log.append(_record(0)))
        await asyncio.sleep(0)  # the flusher has started
        ids = [await first, *await _append_many(log, 1, 199)]
        await log.close()
        return ids, log.batches, log.size

    ids, batches, size = asyncio.run(run())
    assert size == 200 and len(set(ids)) == 200
    assert sum(batches) == 200
    assert len(batches) < 10  # appends made while a write is under way go out together
    lines = backend.lines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(200))
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(ids)
    assert backend.verify() == (200, 0)


def test_reopen_continues_the_tree(backend: Backend) -> None:
    async def first() -> tuple[int, bytes, list[bytes]]:
        log = backend.open()
        await _append_many(log, 0, 21)
        state = (log.size, log.root(), log.consistency_proof(5))
        await log.close()
        return state

    async def again() -> tuple[int, bytes, list[bytes], bytes]:
        log = backend.open()
        state = (log.size, log.root(), log.consistency_proof(5))
        await _append_many(log, 21, 4)
        grown = log.root()
        await log.close()
        return (*state, grown)

    before = asyncio.run(first())
    size, root, proof, grown = asyncio.run(again())
    assert (size, root, proof) == before
    leaves = [merkle.leaf_hash(_redacted(line)) for line in backend.lines()]
    assert len(leaves) == 25 and grown == merkle.root(leaves)
    assert json.loads(backend.lines()[21])["prev"] == json.loads(backend.lines()[20])["hash"]


def test_checkpoints_proofs_and_reads(backend: Backend) -> None:
    old_note, new_note = _grow(backend, 30, checkpoint_at=(13, 30))
    old = checkpoints.verify_checkpoint(old_note, ORIGIN, VERIFIER)
    new = checkpoints.verify_checkpoint(new_note, ORIGIN, VERIFIER)
    assert backend.verify() == (30, 2)
    lines = backend.lines()

    async def run() -> None:
        log = backend.open()
        assert log.last_checkpoint_size == 30
        assert log.latest_checkpoint() == new_note
        merkle.verify_consistency(13, 30, old.root, new.root, log.consistency_proof(13, 30))
        for index in (0, 12, 29):
            leaf = merkle.leaf_hash(_redacted(lines[index]))
            merkle.verify_inclusion(leaf, index, 30, log.inclusion_proof(index, 30), new.root)
        assert log.entries(10, 14) == [_redacted(line) for line in lines[10:14]]
        assert log.find(json.loads(lines[17])["id"]) == 17
        assert log.find("0" * 32) is None
        with pytest.raises(ValueError, match="not within"):
            log.entries(29, 31)
        recent = list(log.recent(0))
        assert [e["seq"] for e in recent] == list(range(29, -1, -1))
        await log.close()

    asyncio.run(run())


def test_concurrent_readers_of_the_latest_checkpoint_see_every_new_one(backend: Backend) -> None:
    """GetCheckpoint reads it in a thread per call: readers racing each other and a signer
    must each get a whole note, never an older one after a newer, and the newest once the
    signer is done."""

    async def run() -> None:
        log = backend.open()
        await _append_many(log, 0, 1)
        failures: list[BaseException] = []
        signed_all = threading.Event()
        seen: list[list[int]] = [[] for _ in range(6)]  # each reader's sizes, in order

        def read(sizes: list[int]) -> None:
            try:
                while True:
                    # Looked at before the read: a reader that saw it set reads after the
                    # last checkpoint was signed, so that read must be the last checkpoint.
                    last_round = signed_all.is_set()
                    note = log.latest_checkpoint()
                    size = (
                        0
                        if note is None
                        else checkpoints.verify_checkpoint(note, ORIGIN, VERIFIER).size
                    )
                    assert not sizes or size >= sizes[-1], f"size {size} read after {sizes[-1]}"
                    sizes.append(size)
                    if last_round:
                        return
            except BaseException as exc:  # handed to the test thread, which fails on it
                failures.append(exc)

        readers = [threading.Thread(target=read, args=(sizes,)) for sizes in seen]
        for thread in readers:
            thread.start()
        try:
            for n in range(1, 40):
                await _append_many(log, n, 1)
                log.checkpoint(KEY, ORIGIN)
        finally:
            signed_all.set()
            for thread in readers:
                thread.join()
        assert failures == []
        for sizes in seen:
            assert sizes == sorted(sizes) and sizes[-1] == 40
        # The readers ran while the signer signed, not only after: they saw it move.
        assert len({size for sizes in seen for size in sizes}) > 2
        latest = log.latest_checkpoint()
        assert latest is not None
        assert checkpoints.verify_checkpoint(latest, ORIGIN, VERIFIER).size == 40
        await log.close()

    asyncio.run(run())


def test_the_latest_checkpoint_follows_every_signer(backend: Backend) -> None:
    """Overseers and witnesses read the newest note on every call: it must be the newest
    whoever signed it (this process, another, or a replica), and a torn record never is."""
    signed = _grow(backend, 5, checkpoint_at=(2, 5))

    async def run() -> None:
        log = backend.open()
        assert log.latest_checkpoint() == signed[-1]
        await _append_many(log, 5, 3)
        by_other = await backend.sign_beside()  # another signer: the CLI, or a replica
        assert log.latest_checkpoint() == by_other
        if backend.name == "file":  # a record torn by a crash is not a checkpoint
            with checkpoints_path(backend.path).open("ab") as fh:
                fh.write(by_other.encode()[:40])
            assert log.latest_checkpoint() == by_other
        mine = log.checkpoint(KEY, ORIGIN)  # cuts the torn record, appends
        assert log.latest_checkpoint() == mine
        assert checkpoints.verify_checkpoint(mine, ORIGIN, VERIFIER).size == 8
        await log.close()

    asyncio.run(run())
    assert backend.verify() == (8, 4)


def test_a_log_that_lost_entries_is_not_signed_smaller(backend: Backend) -> None:
    _grow(backend, 20, checkpoint_at=(20,))
    backend.cut(15)

    async def sign() -> None:
        log = backend.open()
        try:
            log.checkpoint(KEY, ORIGIN)
        finally:
            await log.close()

    with pytest.raises(CheckpointInvalid, match="refusing to sign a smaller tree"):
        asyncio.run(sign())
    with pytest.raises(CheckpointInvalid, match=r"checkpoint 0 \(tree size 20\).*only 15"):
        backend.verify()


def test_an_edited_entry_is_named_by_verify_and_by_the_history_check(backend: Backend) -> None:
    """Entry 4 is before the anchor (checkpoint at 10): the open reads from entry 9 on, so
    it opens; the history's check in the background names entry 4, and the proofs that
    need it are refused with that error, while appending goes on."""
    _grow(backend, 10, checkpoint_at=(10,))
    line = backend.lines()[4].replace(b'"peer":"FR-PN"', b'"peer":"GR-PN"')
    backend.rewrite(4, line)
    with pytest.raises(AuditCorrupt, match="hash does not match its content") as err:
        backend.verify()
    assert err.value.index == 4

    async def check() -> None:
        log = backend.open()
        try:
            assert log.size == 10
            with pytest.raises(AuditCorrupt) as history:
                log.inclusion_proof(0)
            assert history.value.index == 4 and "audit entry 4" in str(history.value)
            assert log.history_damaged()  # liaison_audit_history_damaged: alerted
            with pytest.raises(AuditCorrupt):
                log.entries(0, 1)
            await log.append(_record(10))
            assert log.size == 11
        finally:
            await log.close()

    asyncio.run(check())


def test_an_edited_entry_after_the_checkpoint_is_named_at_open(backend: Backend) -> None:
    _grow(backend, 10, checkpoint_at=(6,))
    line = backend.lines()[8].replace(b'"peer":"FR-PN"', b'"peer":"GR-PN"')
    backend.rewrite(8, line)
    with pytest.raises(AuditCorrupt) as opened:
        backend.open()
    assert opened.value.index == 8
    assert "audit entry 8" in str(opened.value)


def test_a_rechained_edit_fails_the_checkpoint(backend: Backend) -> None:
    _grow(backend, 12, checkpoint_at=(12,))
    head = json.loads(backend.lines()[2])["hash"]
    doc = json.loads(backend.lines()[3])
    doc.pop("hash")
    doc["peer"] = "XX-FORGED"
    encoded = canonical(doc)
    # Only the last entries can be rewritten without touching the next one's `prev`: so
    # rewrite all from 3 on, as a careful forger would.
    prev = chain_digest(head, encoded)
    backend.rewrite(3, encoded[:-1] + b',"hash":"' + prev.encode() + b'"}')
    for i in range(4, 12):
        d = json.loads(backend.lines()[i])
        d.pop("hash")
        d["prev"] = prev
        c = canonical(d)
        prev = chain_digest(prev, c)
        backend.rewrite(i, c[:-1] + b',"hash":"' + prev.encode() + b'"}')
    with pytest.raises(CheckpointInvalid, match="the log was altered"):
        backend.verify()


# ---- databases only -------------------------------------------------------------------


def test_a_failed_transaction_leaves_nothing_and_the_log_goes_on(database: Backend) -> None:
    _grow(database, 3)
    taken = json.loads(database.lines()[1])["id"]

    async def run() -> None:
        log = database.open()
        # A batch of three, one of which reuses an id: the insert fails, the whole
        # transaction rolls back, and every request of the batch is refused.
        results = await asyncio.gather(
            log.append(_record(3)),
            log.append(_record(4, entry_id=taken)),
            log.append(_record(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, AuditError) for r in results), results
        assert "nothing was disclosed" in str(results[0])
        assert log.size == 3
        assert len(database.lines()) == 3
        assert isinstance(await log.append(_record(6)), str)
        await log.close()

    asyncio.run(run())
    assert database.verify() == (4, 0)


def test_replicas_grow_one_tree(database: Backend) -> None:
    """Two logs on one database (as two node replicas), appending at once from two
    threads: one chain 0..n-1, every answered id in it, both replicas' checkpoints of it."""
    _grow(database, 5)
    answered: list[list[str]] = [[], []]
    signed: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def replica(n: int) -> None:
        async def run() -> None:
            log = database.open()
            for round_ in range(4):
                answered[n] += await _append_many(log, 100 * n + 10 * round_, 10)
                signed[n].append(log.checkpoint(KEY, ORIGIN))
            await log.close()

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    lines = database.lines()
    ids = [json.loads(line)["id"] for line in lines]
    assert [json.loads(line)["seq"] for line in lines] == list(range(85))
    assert len(set(ids)) == 85
    assert set(answered[0]) | set(answered[1]) <= set(ids)
    assert database.verify() == (85, 8)
    leaves = [merkle.leaf_hash(_redacted(line)) for line in lines]
    verified = [checkpoints.verify_checkpoint(n, ORIGIN, VERIFIER) for n in signed[0] + signed[1]]
    for checkpoint in verified:
        assert checkpoint.root == merkle.root(leaves[: checkpoint.size])

    async def prove() -> None:
        log = database.open()
        for a in verified:
            for b in verified:
                if a.size <= b.size:
                    proof = log.consistency_proof(a.size, b.size)
                    merkle.verify_consistency(a.size, b.size, a.root, b.root, proof)
        await log.close()

    asyncio.run(prove())


def test_a_replica_sees_the_others_entries(database: Backend) -> None:
    async def run() -> None:
        a, b = database.open(), database.open()
        ids = await _append_many(a, 0, 7)
        assert b.size == 0
        assert b.find(ids[3]) == 3  # found in the database: taken in on the way
        assert b.size == 7 and b.root() == a.root()
        more = await _append_many(b, 7, 2)  # chained after a's entries
        assert a.find(more[1]) == 8
        assert a.entries(7, 9) == b.entries(7, 9)
        recent = [e["id"] for e in a.recent(datetime(2026, 1, 1, tzinfo=UTC).timestamp())]
        assert recent[:2] == [more[1], more[0]] and set(ids) <= set(recent)
        note = a.checkpoint(KEY, ORIGIN)
        assert b.latest_checkpoint() == note
        await a.close()
        await b.close()

    asyncio.run(run())
    assert database.verify() == (9, 1)


def test_an_edit_behind_a_replicas_back_is_caught_when_it_catches_up(database: Backend) -> None:
    async def run() -> None:
        a, b = database.open(), database.open()
        await _append_many(a, 0, 4)
        line = database.lines()[2].replace(b'"peer":"FR-PN"', b'"peer":"GR-PN"')
        database.rewrite(2, line)
        with pytest.raises(AuditCorrupt) as err:
            b.catch_up()
        assert err.value.index == 2
        with pytest.raises(AuditCorrupt):  # and nothing is chained onto it
            await b.append(_record(9))
        await a.close()
        await b.close()

    asyncio.run(run())


def test_a_database_down_at_start_says_what_to_do(tmp_path: Path) -> None:
    url = "postgresql+psycopg://liaison:x@127.0.0.1:1/nowhere"
    with pytest.raises(AuditError, match=r"could not be opened.*start it, or fix \[audit\] url"):
        open_audit_log("database", tmp_path / "unused.log", url)
    with pytest.raises(AuditError, match="no table audit_entries"):  # `liaison audit ...`
        existing_storage("database", tmp_path / "unused.log", f"sqlite:///{tmp_path / 'empty.db'}")


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend("postgres", tmp_path, request.getfixturevalue("postgres_url"))


def test_postgresql_going_away_refuses_appends_until_it_returns(pg: Backend) -> None:
    name = make_url(pg.url).database
    engine = create_engine(
        make_url(pg.url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )

    def admin(sql: str) -> None:
        with engine.connect() as conn:
            conn.execute(text(sql))

    async def run() -> None:
        log = pg.open()
        await _append_many(log, 0, 3)
        # The database goes away: its sessions are killed and no new one is let in.
        admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        try:
            results = await asyncio.gather(
                *(log.append(_record(3 + i)) for i in range(4)), return_exceptions=True
            )
            assert all(isinstance(r, AuditError) for r in results), results
            assert "check that the database is up" in str(results[0])
            assert log.size == 3
        finally:
            admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        # Back: the next append goes through on a fresh connection.
        assert isinstance(await log.append(_record(7)), str)
        assert log.size == 4
        await log.close()

    try:
        asyncio.run(run())
    finally:
        engine.dispose()
    assert pg.verify() == (4, 0)


def test_a_replica_refuses_to_answer_what_another_answered(database: Backend) -> None:
    """Replica B takes in replica A's entries under the write lock: an answer to a request
    (requester, nonce) A already audited is not written (AuditReplay), a refusal is."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    nonce, fresh = "aa" * 16, "bb" * 16

    async def run() -> None:
        a = AuditLog(database.storage(), replay_window_s=600)
        b = AuditLog(database.storage(), replay_window_s=600)
        unguarded = AuditLog(database.storage())  # a single process keeps no foreign nonces
        try:
            await a.append(_record(1, time=now, nonce=nonce))
            with pytest.raises(AuditReplay):
                await b.append(_record(3, time=now, nonce=nonce))
            await b.append(_record(2, time=now, nonce=nonce))  # the refusal of the replay
            await b.append(_record(5, time=now, nonce=fresh))
            await b.append(_record(7, time=now, nonce=nonce, peer="DE-BKA"))  # another's
            old = "2026-01-01T00:00:00Z"  # outside the window: the freshness check's business
            await a.append(_record(9, time=old, nonce="cc" * 16))
            await b.append(_record(11, time=now, nonce="cc" * 16))
            await unguarded.append(_record(13, time=now, nonce=nonce))
        finally:
            for log in (a, b, unguarded):
                await log.close()

    asyncio.run(run())
    entries = [json.loads(line) for line in database.lines()]
    assert [(e["peer"], e["nonce"], e["decision"]) for e in entries] == [
        ("FR-PN", nonce, "allow"),
        ("FR-PN", nonce, "deny"),
        ("FR-PN", fresh, "allow"),
        ("DE-BKA", nonce, "allow"),
        ("FR-PN", "cc" * 16, "allow"),
        ("FR-PN", "cc" * 16, "allow"),
        ("FR-PN", nonce, "allow"),
    ]
    assert database.verify()[0] == 7
