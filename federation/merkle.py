"""The audit log's Merkle tree: RFC 9162 (RFC 6962) hashing, proofs, and their verification.

The audit log (docs/audit.md) is an append-only list of entries; its tree is the one of
RFC 9162 §2.1, so any Certificate Transparency or C2SP tlog tool can check what a node
publishes:

- leaf hash  = SHA-256(0x00 ‖ entry)
- node hash  = SHA-256(0x01 ‖ left ‖ right)
- the tree over n > 1 leaves splits at k, the largest power of two smaller than n: the left
  subtree holds leaves [0, k) and is always complete, the right one holds [k, n);
- the empty tree's root is SHA-256 of the empty string.

What is here, and why each piece exists:

- `verify_inclusion` / `verify_consistency` are the iterative verifiers of RFC 9162
  §2.1.3.2 and §2.1.4.2. An overseer or a peer runs them on what a node hands out, so they
  trust nothing of the prover: they return None or raise `ProofError`.
- `inclusion_proof` / `consistency_proof` generate proofs (RFC 9162 §2.1.3.1, §2.1.4.1)
  from any `HashStore` (the leaf hashes, by index). A proof needs O(log n) subtree hashes,
  and a subtree hash computed from leaves costs as many hashes as it has leaves, so
  `TreeHasher` memoises complete subtrees: in an append-only log a complete (power-of-two
  aligned) subtree never changes, so its hash can be kept for ever. `MemoryHashStore`
  keeps every complete subtree as leaves are appended (what "tiles" store on disk), so a
  proof at 1,000,000 entries costs a few hundred hash look-ups.
- `CompactRange` is the Merkle frontier: O(log n) hashes that give the root at the current
  size, appended to one leaf at a time. The log uses it to compute checkpoints without
  re-reading its entries, and can persist it (`size`, `hashes`) beside them.

Sizes and indexes are Python ints; the C2SP formats carry them as uint64, so every size
must be below 2**64.

The pieces live in three modules, every name re-exported here: the hash functions in
:mod:`federation.merkle_hashing`, verification here, the frontier, stores and proof
generation in :mod:`federation.merkle_tree`.
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.merkle_hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_SIZE,
    ProofError,
    _check_hash,
    _check_size,
    leaf_hash,
    node_hash,
)
from federation.merkle_tree import (
    CompactRange,
    HashStore,
    MemoryHashStore,
    SubtreeStore,
    TreeHasher,
    consistency_proof,
    inclusion_proof,
    root,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_SIZE",
    "CompactRange",
    "HashStore",
    "MemoryHashStore",
    "ProofError",
    "SubtreeStore",
    "TreeHasher",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf` (a leaf hash) is entry `index` of the tree of `size` with `root`.

    RFC 9162 §2.1.3.2, step by step. Returns None or raises ProofError: a proof of the wrong
    length, an element that is not a hash, or any mismatch all fail the same way.
    """
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        _check_hash(p, "inclusion proof element")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `new_size` with `new_root` extends the one of `old_size`.

    RFC 9162 §2.1.4.2 for 0 < old_size < new_size. Equal sizes need an empty proof and
    equal roots; an empty old tree is a prefix of every tree and needs an empty proof, but
    its root must be the empty tree's (a checkpoint of size 0 with another root is false).
    Returns None or raises ProofError.
    """
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    for p in proof:
        _check_hash(p, "consistency proof element")
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise ProofError("a consistency proof from an empty or equal tree must be empty")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the old root is not the empty tree's root")
        if old_size == new_size and old_root != new_root:
            raise ProofError("trees of equal size have different roots")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    # Step 2: when the old tree is complete its root is the first node of the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
