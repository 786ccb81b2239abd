"""The node's policy data (agreements with peers, settings), read from one JSON file.

Errors name the file and line: an operator editing agreements by hand must learn exactly
where the file went wrong, and a broken file must never become a silent deny-all or allow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from federation.identity import InvalidIdentity, check_node_id

TOP_LEVEL = frozenset({"agreements", "settings"})


class PolicyDataError(ValueError):
    pass


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_policy_data(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise PolicyDataError(f"policy data file {path} not found") from None
    except UnicodeDecodeError as exc:
        raise PolicyDataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except _DuplicateKey as exc:
        raise PolicyDataError(
            f"{path}: key {exc.key!r} appears twice in one object; "
            "keep one (JSON would silently drop the other)"
        ) from None
    except json.JSONDecodeError as exc:
        raise PolicyDataError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    if not isinstance(doc, dict):
        raise PolicyDataError(f"{path}: must hold a JSON object with 'agreements'")
    if unknown := set(doc) - TOP_LEVEL:
        raise PolicyDataError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; known: {sorted(TOP_LEVEL)}"
        )
    agreements = doc.get("agreements", {})
    if not isinstance(agreements, dict):
        raise PolicyDataError(f"{path}: 'agreements' must be an object keyed by peer node id")
    for peer, agreement in agreements.items():
        try:
            check_node_id(peer)
        except InvalidIdentity as exc:
            raise PolicyDataError(f"{path}: agreements: {exc}") from None
        if not isinstance(agreement, dict):
            raise PolicyDataError(f"{path}: agreements.{peer} must be an object")
    return doc
