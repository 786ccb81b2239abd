"""The shipped policy library, its example data, and one input it allows: shared by the
tests of both engines so they are held to the same case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
DATA: dict[str, Any] = json.loads((POLICIES / "data" / "agreements.example.json").read_text())

# The conformance corpus's base Match input (benchmarks/policy_engines.py reads it too).
ALLOW_INPUT: dict[str, Any] = json.loads(
    (ROOT / "tests" / "conformance" / "inputs" / "match.json").read_text(encoding="utf-8")
)
