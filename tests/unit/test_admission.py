"""Admission: signature, freshness and replay checks, and the replay cache's memory."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.directory import Member
from federation.model import Envelope
from federation.pki import public_key_text
from federation.signing import SIGNATURE_METADATA, request_message, sign
from node.audit.entries import AuditRecord, entry_timestamp
from node.audit.log import AuditLog
from node.errors import Kind, Refusal
from node.rpc.admission import Admission, ReplayCache

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
KEY = ed25519.Ed25519PrivateKey.generate()
MEMBER = Member("DE-BKA", "127.0.0.1:1", "a" * 64, public_key_text(KEY.public_key()))


def _admission(skew: float = 300) -> Admission:
    return Admission(skew, clock=lambda: NOW.timestamp())


def _refusal(call: Callable[[], object]) -> Refusal:
    with pytest.raises(Refusal) as err:
        call()
    assert err.value.kind is Kind.UNAUTHENTICATED
    return err.value


def test_signature_over_the_exact_bytes() -> None:
    body = b"\x0a\x03abc"
    good = sign(KEY, request_message("/m", body))
    admission = _admission()
    assert admission.check_signature(MEMBER, "/m", body, {SIGNATURE_METADATA: good}) == good
    for metadata, reason in [
        ({}, "signature_missing"),
        ({SIGNATURE_METADATA: b"short"}, "signature_invalid"),
        ({SIGNATURE_METADATA: sign(KEY, request_message("/other", body))}, "signature_invalid"),
    ]:
        refusal = _refusal(partial(admission.check_signature, MEMBER, "/m", body, metadata))
        assert refusal.reasons == (reason,)


@pytest.mark.parametrize(
    ("offset", "ok"), [(0, True), (299, True), (-299, True), (301, False), (-301, False)]
)
def test_issue_time_window_is_inclusive_of_the_skew(offset: int, ok: bool) -> None:
    env = Envelope("DE-BKA", "p", nonce=os.urandom(16), issued_at=NOW + timedelta(seconds=offset))
    admission = _admission()
    if ok:
        admission.check_fresh(MEMBER, env)
    else:
        assert _refusal(lambda: admission.check_fresh(MEMBER, env)).reasons == (
            "request_not_fresh",
        )


@pytest.mark.parametrize(
    ("nonce", "issued", "reason"),
    [
        (b"x" * 15, NOW, "nonce_invalid"),
        (b"x" * 65, NOW, "nonce_invalid"),
        (b"x" * 16, None, "issued_at_missing"),
    ],
)
def test_malformed_envelopes(nonce: bytes, issued: datetime | None, reason: str) -> None:
    env = Envelope("DE-BKA", "p", nonce=nonce, issued_at=issued)
    assert _refusal(lambda: _admission().check_fresh(MEMBER, env)).reasons == (reason,)


def test_a_nonce_is_accepted_once_per_requester() -> None:
    admission = _admission()
    env = Envelope("DE-BKA", "p", nonce=b"n" * 16, issued_at=NOW)
    admission.check_fresh(MEMBER, env)
    assert _refusal(lambda: admission.check_fresh(MEMBER, env)).reasons == ("replayed",)
    other = Member("FR-DGPN", "x", "b" * 64, MEMBER.signing_public_key)
    admission.check_fresh(other, env)  # another requester's nonces are its own


def test_the_cache_forgets_only_what_can_no_longer_be_fresh() -> None:
    clock = [1000.0]
    cache = ReplayCache(window=300, clock=lambda: clock[0])
    assert cache.first_time("DE-BKA", b"a")
    clock[0] += 599
    assert not cache.first_time("DE-BKA", b"a")
    clock[0] += 2  # past twice the window since it was first seen: pruned
    assert cache.first_time("DE-BKA", b"b")
    assert len(cache) == 1


def test_seeding_from_the_audit_log_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def write() -> None:
        log = AuditLog(path)
        for i in range(5):
            when = (datetime.now(UTC) - timedelta(minutes=20 - 5 * i)).isoformat()
            record = AuditRecord(
                time=when.replace("+00:00", "Z"),
                peer="DE-BKA",
                method="Match",
                purpose="p",
                legal_basis="none",
                decision="allow",
                reasons=(),
                policy_revision="r",
                request_sha256="0" * 64,
                response_sha256="0" * 64,
                nonce=f"{i:02x}" * 16,
            )
            await log.append(record)
        await log.close()

    asyncio.run(write())
    recent = list(AuditLog(path).recent(datetime.now(UTC).timestamp() - 11 * 60))
    assert [e["nonce"] for e in recent] == [f"{i:02x}" * 16 for i in (4, 3, 2)]
    # As the node seeds its cache at start: a nonce answered before the restart is a replay.
    admission = Admission(15 * 60)
    seen = [(e["peer"], bytes.fromhex(e["nonce"]), entry_timestamp(e["time"])) for e in recent]
    assert admission.replay.seed((p, n, t) for p, n, t in seen if t is not None) == 3
    replay = Envelope(
        "DE-BKA", "p", nonce=bytes.fromhex(recent[0]["nonce"]), issued_at=datetime.now(UTC)
    )
    assert _refusal(lambda: admission.check_fresh(MEMBER, replay)).reasons == ("replayed",)
    admission.check_fresh(MEMBER, replace(replay, nonce=bytes.fromhex("00" * 16)))  # not recent
