"""The policy revision: one short hash naming exactly which Rego and data made a decision.

Every decision and audit entry records it, and the decision cache keys on it, so it must
change whenever anything that can change an answer changes, and never otherwise. Test files
are left out: adding a Rego unit test cannot change a decision. Any engine (embedded, or an
OPA server fed the same files) computes it with these functions so the audit log can compare.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TEST_SUFFIX = "_test.rego"


def canonical_json(value: Any) -> str:
    """One spelling per value, so equal documents hash (and cache) alike."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def policy_files(policy_dir: Path) -> list[Path]:
    """Non-test ``*.rego`` under ``policy_dir``, in a stable order (load order is hashed)."""
    return sorted(
        (p for p in policy_dir.rglob("*.rego") if not p.name.endswith(TEST_SUFFIX)),
        key=lambda p: p.relative_to(policy_dir).as_posix(),
    )


def policy_revision(policy_dir: Path, data: Mapping[str, Any]) -> str:
    """``sha256:<16 hex>`` over each file's relative path and bytes, then the data."""
    digest = hashlib.sha256()
    for path in policy_files(policy_dir):
        name = path.relative_to(policy_dir).as_posix().encode()
        body = path.read_bytes()
        # Length prefixes: no file boundary can be shifted to give the same byte stream.
        digest.update(b"F%d:%s%d:" % (len(name), name, len(body)))
        digest.update(body)
    digest.update(b"D" + canonical_json(data).encode())
    return "sha256:" + digest.hexdigest()[:16]
