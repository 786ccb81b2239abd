"""Local alerts: a peer's Match or a record import that hits an active notice this node
accepted. Each hit is a row in the hits table (the notice, when, what triggered it), a log
line and `liaison_notice_hits_total{category}` (counted from that table at scrape time, so
an import run by the `liaison` command counts too).

Never an automatic disclosure: nothing is sent to the notice's publisher, and the peer whose
Match hit learns nothing from it (its answer is the Match's own). What to do next is the
receiving officers' call, through their own channels. No identifier value is logged or
kept with a hit; the notice is named by its id and its publisher.

Only a Match the policy allowed is checked: the values of a refused request are not
processed further, whatever they might have hit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from federation.model import Identifier
from node.database import StoreUnavailable
from node.notice_model import NoticeHit
from node.notices import NoticeStore
from node.records import NewRecord

log = logging.getLogger("liaison.node")


def _alert(hits: Sequence[NoticeHit]) -> None:
    for hit in hits:
        log.warning(
            "NOTICE HIT: %s notice %s of %s hit by %s (hit %s; see `liaison notices hits`)",
            hit.category,
            hit.notice_id,
            hit.publisher,
            hit.trigger,
            hit.id,
        )


class NoticeAlerts:
    """Checks what the node sees against the notices it accepted, and raises the alert.

    Every allowed Match is checked, so the check must cost next to nothing when nothing
    hits (a query per Match would cost a fifth of the node's work on one): the active
    notices' identifiers are kept in memory, reloaded when this process changes a notice
    (`NoticeStore.generation`) or `refresh_s` after the last load (so a notice another
    replica received is matched within that). A candidate is then confirmed in the database
    (still active, not withdrawn meanwhile) before it is a hit."""

    def __init__(
        self,
        notices: NoticeStore,
        clock: Callable[[], datetime] | None = None,
        *,
        refresh_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notices = notices
        self._clock = clock or (lambda: datetime.now(UTC))
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._keys: frozenset[tuple[str, str]] = frozenset()
        self._generation = -1
        self._loaded = 0.0

    def _may_hit(self, identifiers: Sequence[Identifier], now: datetime) -> bool:
        stale = self._monotonic() - self._loaded >= self._refresh_s
        if stale or self._generation != self._notices.generation:
            self._generation = self._notices.generation
            self._keys = frozenset(self._notices.active_keys(now))
            self._loaded = self._monotonic()
        return any((i.kind, i.value) in self._keys for i in identifiers)

    def match_from(self, peer: str, identifiers: Sequence[Identifier]) -> list[NoticeHit]:
        """A peer's allowed Match, its identifiers normalised. A database that cannot
        answer is logged and the Match goes on: an alert must never cost an answer."""
        now = self._clock()
        try:
            if not self._may_hit(identifiers, now):
                return []
            hits = self._notices.record_hits(
                self._notices.match(identifiers, now), f"match from {peer}", now
            )
        except StoreUnavailable as exc:
            log.error("could not check a Match from %s against notices: %s", peer, exc)
            return []
        _alert(hits)
        return hits

    def imported(self, records: Iterable[NewRecord]) -> list[NoticeHit]:
        """Records just imported (identifiers normalised): one hit per notice hit."""
        now = self._clock()
        keys = self._notices.active_keys(now)
        if not keys:
            return []
        found: set[tuple[str, str, str]] = set()
        for record in records:
            for ident in record.identifiers:
                found.update(keys.get((ident.kind, ident.value), ()))
        hits = self._notices.record_hits(sorted(found), "import", now)
        _alert(hits)
        return hits
