"""What the policy benchmark asks the engines: Match and Fetch inputs for the three profiles
(allows and denies), the steady-state Match combinations, and a clock that advances with
real time so the decision cache sees a new second as the node does.

Imported by ``policy.py`` as a sibling module (``python benchmarks/policy.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

NODE_ID: Final = "DE-BKA"
NODE_COUNTRY: Final = "DE"
PROFILES: Final = ("eu-led", "bilateral", "strict")
PEER_COUNTRY: Final = {"FR-DGPN": "FR", "NL-KMAR": "NL"}
# Inside every agreement's and the JIT's validity window in the example data.
MIX_NOW: Final = "2026-11-29T13:45:12Z"
CLOCK_ORIGIN: Final = datetime(2026, 11, 29, 13, 45, 12, tzinfo=UTC)


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Combo:
    """A distinct kind of Match: what, besides ``now``, its policy input is made of."""

    peer: str
    purpose: str
    category: str
    legal_basis: str
    identifier_kinds: tuple[str, ...]


# The steady-state traffic: every one of these is allowed by the example agreements.
COMBOS: Final = (
    Combo("FR-DGPN", "criminal_investigation", "travel_document", "none", ("document_number",)),
    Combo(
        "FR-DGPN", "border_control", "travel_document", "bilateral_agreement", ("document_number",)
    ),
    Combo("FR-DGPN", "criminal_investigation", "vehicle", "none", ("vin",)),
    Combo(
        "NL-KMAR",
        "criminal_investigation",
        "travel_document",
        "bilateral_agreement",
        ("document_number",),
    ),
    Combo(
        "NL-KMAR", "missing_person_search", "missing_person", "bilateral_agreement", ("name_dob",)
    ),
    Combo("NL-KMAR", "criminal_investigation", "wanted_person", "jit", ("name_dob",)),
)
# Refused: FR-DGPN has no firearm agreement.
DENIED_MATCH: Final = Combo(
    "FR-DGPN", "criminal_investigation", "firearm", "none", ("registration_number",)
)


def match_input(profile: str, combo: Combo, now: str) -> dict[str, Any]:
    """A Match input shaped as ``node.service.build_policy_input`` shapes it."""
    return {
        "version": 1,
        "now": now,
        "node": {"node_id": NODE_ID, "country": NODE_COUNTRY, "profile": profile},
        "requester": {
            "node_id": combo.peer,
            "country": PEER_COUNTRY[combo.peer],
            "status": "active",
        },
        "envelope": {
            "purpose": combo.purpose,
            "legal_basis": combo.legal_basis,
            "has_legal_reference": False,
            "has_case_reference": True,
        },
        "request": {
            "method": "Match",
            "category": combo.category,
            "identifier_kinds": sorted(combo.identifier_kinds),
        },
    }


def fetch_input(
    profile: str,
    peer: str,
    purpose: str,
    legal_basis: str,
    case_reference: str,
    record: Mapping[str, Any],
    *,
    legal_reference: bool = False,
) -> dict[str, Any]:
    """A step-2 input (policies/CONTRACT.md): the record's facts, the case reference."""
    category = str(record["category"])
    return {
        "version": 1,
        "now": MIX_NOW,
        "node": {"node_id": NODE_ID, "country": NODE_COUNTRY, "profile": profile},
        "requester": {"node_id": peer, "country": PEER_COUNTRY[peer], "status": "active"},
        "envelope": {
            "purpose": purpose,
            "legal_basis": legal_basis,
            "has_legal_reference": legal_reference,
            "has_case_reference": True,
            "case_reference": case_reference,
        },
        "request": {
            "method": "Fetch",
            "category": category,
            "identifier_kinds": [
                "document_number" if category == "travel_document" else "name_dob"
            ],
        },
        "record": dict(record),
    }


def input_mix() -> list[dict[str, Any]]:
    """Seven Match and five Fetch inputs per profile, allows and denies."""
    inputs: list[dict[str, Any]] = []
    for profile in PROFILES:
        inputs += [match_input(profile, c, MIX_NOW) for c in (*COMBOS, DENIED_MATCH)]
        own = {"source_restrictions": [], "origin_country": NODE_COUNTRY}
        inputs += [
            # JIT member, wanted person: allowed with approval (refused by `strict`).
            fetch_input(
                profile,
                "NL-KMAR",
                "criminal_investigation",
                "jit",
                "JIT-2026-017",
                {"category": "wanted_person", "handling_code": "H1", **own},
            ),
            # MLAT citing its instrument, own travel document.
            fetch_input(
                profile,
                "NL-KMAR",
                "criminal_investigation",
                "mlat",
                "NL-2026-4471",
                {"category": "travel_document", "handling_code": "H0", **own},
                legal_reference=True,
            ),
            # An H2 record received from France may not be passed on.
            fetch_input(
                profile,
                "NL-KMAR",
                "missing_person_search",
                "bilateral_agreement",
                "NL-2026-5120",
                {
                    "category": "missing_person",
                    "handling_code": "H2",
                    "source_restrictions": [],
                    "origin_country": "FR",
                },
            ),
            # The source forbids the Netherlands.
            fetch_input(
                profile,
                "NL-KMAR",
                "criminal_investigation",
                "bilateral_agreement",
                "NL-2026-5121",
                {
                    "category": "travel_document",
                    "handling_code": "H0",
                    "source_restrictions": ["NL"],
                    "origin_country": NODE_COUNTRY,
                },
            ),
            # FR-DGPN's agreement permits Match only.
            fetch_input(
                profile,
                "FR-DGPN",
                "criminal_investigation",
                "bilateral_agreement",
                "FR-2026-0093",
                {"category": "travel_document", "handling_code": "H0", **own},
            ),
        ]
    return inputs


class RealTimeClock:
    """``now`` to the second, advancing with real elapsed time from a fixed instant (inside
    the agreements' windows), so the decision cache sees a new second as the node does."""

    def __init__(self, phase: float = 0.0) -> None:
        self._start = time.perf_counter() - phase
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.perf_counter() - self._start)
        if second != self._second:
            self._second = second
            moment = CLOCK_ORIGIN + timedelta(seconds=second)
            self._text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._text
