"""The replicas benchmark's node side: replica folders of one owner on one PostgreSQL
database, the probe that samples the audit lock from inside the server, the per-window
batch count, and the end-of-run correctness check of the one audit tree.

Imported by ``replicas.py`` as a sibling module (``python benchmarks/replicas.py``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from federation import checkpoints
from federation.checkpoints import audit_origin
from federation.pki import load_ed25519_private
from node.audit.database_store import _LOCK_KEY, DatabaseStorage
from node.audit.verify import verify_storage
from node.importer import import_file
from node.local.federation import NodeHandle, free_port
from node.schema import upgrade_node
from node.store import RecordStore

# The advisory lock every replica's audit transaction takes first (node.audit.database_store):
# a bigint key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
_KEY: Final = _LOCK_KEY & 0xFFFF_FFFF_FFFF_FFFF
LOCK_CLASSID: Final = _KEY >> 32
LOCK_OBJID: Final = _KEY & 0xFFFF_FFFF

# Runs in the server, on a connection of its own, for the timed window: every `period` it
# reads the lock table once and counts whether the audit lock is held, how many wait for it,
# and what its holder is doing: running a statement (its commit waiting for the WAL flush
# among them) or "idle in transaction", i.e. waiting for the replica that holds the lock to
# send its next statement. Sampling inside PostgreSQL costs the client nothing and sees the
# lock as the replicas do. A temporary function: nothing is added to the node's schema.
# The activity view is a per-transaction snapshot unless cleared, hence the clear.
_SAMPLER: Final = """
CREATE FUNCTION pg_temp.audit_lock_samples(seconds float8, period float8, k1 oid, k2 oid)
RETURNS TABLE (samples bigint, held bigint, waiting bigint, active bigint, wal bigint) AS $$
DECLARE
  deadline timestamptz := clock_timestamp() + make_interval(secs => seconds);
  h bigint;
  w bigint;
  a bigint;
  f bigint;
BEGIN
  samples := 0; held := 0; waiting := 0; active := 0; wal := 0;
  WHILE clock_timestamp() < deadline LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT count(*) FILTER (WHERE l.granted),
           count(*) FILTER (WHERE NOT l.granted),
           count(*) FILTER (WHERE l.granted AND s.state = 'active'),
           count(*) FILTER (WHERE l.granted AND s.state = 'active'
                                  AND s.wait_event ILIKE 'wal%')
      INTO h, w, a, f
      FROM pg_locks l LEFT JOIN pg_stat_activity s ON s.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.classid = k1 AND l.objid = k2 AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
    samples := samples + 1;
    held := held + h;
    waiting := waiting + w;
    active := active + a;
    wal := wal + f;
    PERFORM pg_sleep(period);
  END LOOP;
  RETURN NEXT;
END
$$ LANGUAGE plpgsql
"""


@dataclass(frozen=True)
class LockShare:
    """What the sampler saw over a window, as shares of its samples: the audit lock held,
    the mean number of transactions queued behind it, and the holder running a statement
    in the server (`active`; `wal`: its commit waiting for the WAL flush) rather than
    waiting for its replica's next statement (held - active)."""

    samples: int
    held: float
    waiting: float
    active: float
    wal: float


@dataclass(frozen=True)
class Correctness:
    entries: int
    checkpoints: int
    distinct_nonces: int
    refusals: int
    answered: int

    @property
    def problems(self) -> list[str]:
        found = []
        if self.entries != self.answered:
            found.append(f"{self.entries} audit entries for {self.answered} requests answered")
        if self.distinct_nonces != self.entries:
            found.append(f"{self.entries - self.distinct_nonces} duplicated nonce(s)")
        if self.refusals:
            found.append(f"{self.refusals} entries refuse (every benchmark request is allowed)")
        if self.checkpoints < 1:
            found.append("no checkpoint was signed")
        return found


def engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def make_replicas(owner: NodeHandle, url: str, count: int, root: Path) -> list[NodeHandle]:
    """`count` copies of the owner (same keys, agreements, directory) on fresh ports, each in
    a folder of its own (own admin socket and log), keeping records and audit log in the
    database at `url`; the schema is made and the owner's records imported, as an operator
    does with `liaison db upgrade` and `liaison data import`."""
    replicas = []
    for n in range(1, count + 1):
        folder = root / f"{owner.node_id}-replica-{n}"
        shutil.copytree(
            owner.folder,
            folder,
            ignore=shutil.ignore_patterns("audit.log*", "*.log", "records.db*", "*.sock"),
        )
        endpoint, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        toml = folder / "node.toml"
        edited = toml.read_text()
        for old, new in (
            (f'listen = "{owner.endpoint}"', f'listen = "{endpoint}"'),
            (f'metrics = "{owner.metrics}"', f'metrics = "{metrics}"'),
            ('url = "sqlite:///records.db"', f"url = {json.dumps(url)}"),
            ('[audit]\npath = "audit.log"\n', '[audit]\nstore = "database"\n'),
        ):
            if old not in edited:
                raise RuntimeError(f"{toml}: expected {old!r} in the enrolled config")
            edited = edited.replace(old, new)
        toml.write_text(edited)
        replicas.append(NodeHandle(owner.node_id, folder, endpoint, metrics))
    config = replicas[0].config()
    assert config.store.url == url and config.audit.store == "database"
    upgrade_node(config)
    store = RecordStore(url)
    try:
        import_file(owner.folder / "records.jsonl", store)
    finally:
        store.close()
    return replicas


def log_size(db: Engine) -> int:
    """Entries committed so far (by any replica)."""
    with db.connect() as conn:
        return int(
            conn.execute(text("SELECT coalesce(max(seq) + 1, 0) FROM audit_entries")).one()[0]
        )


def transactions(db: Engine, start: int, end: int) -> int:
    """How many transactions wrote entries [start, end): every row keeps the id of the
    transaction that inserted it (xmin), and one audit batch is one transaction."""
    query = text(
        "SELECT count(DISTINCT xmin::text) FROM audit_entries WHERE seq >= :a AND seq < :b"
    )
    with db.connect() as conn:
        return int(conn.execute(query, {"a": start, "b": end}).one()[0])


class LockSampler:
    """A session of its own in the server that holds the sampling function (temporary, so
    nothing is added to the node's schema) and runs it for a window at a time."""

    def __init__(self, db: Engine) -> None:
        self._conn = db.connect()
        self._conn.execute(text(_SAMPLER))

    def sample(self, seconds: float, period: float = 0.001) -> LockShare:
        """Sample the audit lock for `seconds` (blocks that long: run it in a thread beside
        the load)."""
        query = text("SELECT * FROM pg_temp.audit_lock_samples(:s, :p, :k1, :k2)")
        params = {"s": seconds, "p": period, "k1": LOCK_CLASSID, "k2": LOCK_OBJID}
        samples, held, waiting, active, wal = self._conn.execute(query, params).one()
        n = max(1, int(samples))
        return LockShare(int(samples), held / n, waiting / n, active / n, wal / n)

    def close(self) -> None:
        self._conn.close()


def check_log(replica: NodeHandle, url: str, answered: int) -> Correctness:
    """The one tree checked from entry 0 with the node's public key (chain, then every
    checkpoint any replica signed against the recomputed roots), and its entries counted."""
    config = replica.config()
    origin = audit_origin(config.node.federation, config.node.id)
    public = load_ed25519_private(config.trust.signing_key).public_key()
    storage = DatabaseStorage(url, create=False)
    try:
        count, checked = verify_storage(
            storage, checkpoints.Verifier.for_log(origin, public), origin
        )
    finally:
        storage.close()
    query = text(
        "SELECT count(DISTINCT line::jsonb ->> 'nonce'), "
        "count(*) FILTER (WHERE line::jsonb ->> 'decision' <> 'allow') FROM audit_entries"
    )
    db = engine(url)
    try:
        with db.connect() as conn:
            nonces, refusals = (int(v) for v in conn.execute(query).one())
    finally:
        db.dispose()
    return Correctness(count, checked, nonces, refusals, answered)
