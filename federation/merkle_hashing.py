"""RFC 9162's two hash functions and the checks every module of the Merkle family shares.

:mod:`federation.merkle` (verification) and :mod:`federation.merkle_tree` (the frontier,
stores and proof generation) both build on these; the former re-exports them.
"""

from __future__ import annotations

import hashlib
from typing import Final

HASH_SIZE: Final = 32
MAX_SIZE: Final = 1 << 64
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_LEAF: Final = b"\x00"
_NODE: Final = b"\x01"
_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof, root or size that does not verify, or is malformed."""


def leaf_hash(entry: bytes) -> bytes:
    """The hash of one log entry as a leaf (the 0x00 prefix keeps leaves apart from nodes)."""
    return _sha256(_LEAF + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node over its two children's hashes."""
    return _sha256(_NODE + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k, the split point of RFC 9162 §2.1.1 (n must be at least 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def _check_size(size: int, what: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < MAX_SIZE:
        raise ProofError(f"{what} must be an integer in [0, 2**64)")
