"""Records as the store takes them in and gives them back, free of any database type.

The importer and the service work on these; only :mod:`node.store` knows about tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from federation.model import Identifier


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to be stored; its identifiers are already normalised (:mod:`node.normalise`)."""

    ref: str
    category: str
    handling_code: str
    source_restrictions: tuple[str, ...]
    identifiers: tuple[Identifier, ...]
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StoredRecord(NewRecord):
    """A record read back for step 2 (Fetch), where policy needs its handling facts: what was
    stored, and when. Its fields are :class:`NewRecord`'s, then ``created_at``."""

    created_at: datetime
