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
    """Checks what the node sees against the notices it accepted, and raises the alert."""

    def __init__(self, notices: NoticeStore, clock: Callable[[], datetime] | None = None) -> None:
        self._notices = notices
        self._clock = clock or (lambda: datetime.now(UTC))

    def match_from(self, peer: str, identifiers: Sequence[Identifier]) -> list[NoticeHit]:
        """A peer's allowed Match, its identifiers normalised. A database that cannot
        answer is logged and the Match goes on: an alert must never cost an answer."""
        now = self._clock()
        try:
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
