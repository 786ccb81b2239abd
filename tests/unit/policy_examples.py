"""The shipped policy library, its example data, and one input it allows: shared by the
tests of both engines so they are held to the same case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
DATA: dict[str, Any] = json.loads((POLICIES / "data" / "agreements.example.json").read_text())

ALLOW_INPUT: dict[str, Any] = {
    "version": 1,
    "now": "2026-11-29T13:45:12Z",
    "node": {"node_id": "DE-BKA", "country": "DE", "profile": "bilateral"},
    "requester": {"node_id": "FR-DGPN", "country": "FR", "status": "active"},
    "envelope": {
        "purpose": "criminal_investigation",
        "legal_basis": "none",
        "has_legal_reference": False,
        "has_case_reference": True,
    },
    "request": {
        "method": "Match",
        "category": "travel_document",
        "identifier_kinds": ["document_number"],
    },
}
