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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, runtime_checkable

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


# --- the frontier ----------------------------------------------------------------------------


class CompactRange:
    """The Merkle frontier of an append-only log: the root at any size from O(log n) hashes.

    It keeps the roots of the complete subtrees that make up leaves [0, size), largest
    first: one per set bit of `size`. Appending a leaf merges the equal-sized subtrees at
    the right end, as a binary counter carries (one node hash per append on average).
    `size` and `hashes` are the whole state: persist them and `from_state` resumes.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """A frontier resumed from its saved `size` and `hashes` (checked for shape only)."""
        _check_size(size, "tree size")
        if len(hashes) != size.bit_count():
            raise ProofError(f"a frontier of size {size} has {size.bit_count()} hashes")
        for h in hashes:
            _check_hash(h, "frontier hash")
        cr = cls()
        cr._size = size
        cr._hashes = list(hashes)
        return cr

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (not an entry: hash it with `leaf_hash` first)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes")
        if self._size + 1 >= MAX_SIZE:
            raise ValueError("the tree is full")
        hashes = self._hashes
        carry = self._size
        h = leaf
        while carry & 1:
            h = _sha256(_NODE + hashes.pop() + h).digest()
            carry >>= 1
        hashes.append(h)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The tree head at the current size: fold the subtree roots from the right."""
        if not self._hashes:
            return EMPTY_ROOT
        it = reversed(self._hashes)
        r = next(it)
        for h in it:
            r = node_hash(h, r)
        return r


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """The root of the tree over the given leaf hashes (in log order)."""
    cr = CompactRange()
    cr.extend(leaf_hashes)
    return cr.root()


# --- stores and proof generation -------------------------------------------------------------


class HashStore(Protocol):
    """Where proofs read leaf hashes: the log's leaf hashes in order, `size` of them."""

    @property
    def size(self) -> int: ...

    def leaf(self, index: int) -> bytes: ...


@runtime_checkable
class SubtreeStore(Protocol):
    """A store that also keeps complete subtree hashes (as "tiles" do); optional.

    `subtree(level, index)` is the root of leaves [index << level, (index + 1) << level)
    if the store has it, else None.
    """

    @property
    def size(self) -> int: ...

    def leaf(self, index: int) -> bytes: ...

    def subtree(self, level: int, index: int) -> bytes | None: ...


class _SequenceStore:
    __slots__ = ("_leaves",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._leaves = leaves

    @property
    def size(self) -> int:
        return len(self._leaves)

    def leaf(self, index: int) -> bytes:
        return self._leaves[index]


class MemoryHashStore:
    """Leaf hashes in memory, with every complete subtree's hash kept as leaves arrive.

    Level L holds the roots of the complete subtrees of 2**L leaves, packed 32 bytes apiece
    in one bytearray (about 64 bytes per leaf in all, where a list of bytes objects would
    take over twice that). Appending costs what `CompactRange.append` costs; afterwards
    every subtree hash a proof needs is a look-up or a handful of hashes at the right edge.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes")
        levels = self._levels
        levels[0] += leaf
        i, level, h = self._size, 0, leaf
        while i & 1:
            left = levels[level][(i - 1) * HASH_SIZE : i * HASH_SIZE]
            h = _sha256(_NODE + left + h).digest()
            level += 1
            i >>= 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += h
        self._size += 1

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise IndexError(f"leaf {index} is not in a store of {self._size}")
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def subtree(self, level: int, index: int) -> bytes | None:
        if level >= len(self._levels) or index < 0:
            return None
        row = self._levels[level]
        start = index * HASH_SIZE
        if start + HASH_SIZE > len(row):
            return None
        return bytes(row[start : start + HASH_SIZE])


class TreeHasher:
    """Subtree hashes of a `HashStore`'s tree, with complete subtrees memoised.

    Complete subtrees of 2**`min_level` leaves or more are kept in a dict once computed
    (they never change in an append-only log), so memory stays below one hash per
    2**`min_level` leaves while a cold subtree costs at most that many leaf reads to
    rebuild. A store that keeps subtrees itself (`SubtreeStore`) is asked first; a plain
    sequence of leaf hashes is a store with nothing but its leaves. Reuse one TreeHasher
    for many proofs: that is what makes the second proof cheap. It must not outlive a
    rewrite of the store's leaves, which an append-only log never does.
    """

    __slots__ = ("_memo", "_min_level", "_store", "_subtree")

    def __init__(self, store: HashStore | Sequence[bytes], *, min_level: int = 4) -> None:
        if min_level < 1:
            raise ValueError("min_level must be at least 1")
        if isinstance(store, Sequence):
            store = _SequenceStore(store)
        self._store: HashStore = store
        self._min_level = min_level
        self._memo: dict[tuple[int, int], bytes] = {}
        self._subtree: Callable[[int, int], bytes | None] | None = (
            store.subtree if isinstance(store, SubtreeStore) else None
        )

    @property
    def size(self) -> int:
        return self._store.size

    def leaf(self, index: int) -> bytes:
        return self._store.leaf(index)

    def _complete(self, level: int, index: int) -> bytes:
        if level == 0:
            return self._store.leaf(index)
        if self._subtree is not None:
            found = self._subtree(level, index)
            if found is not None:
                return found
        key = (level, index)
        memo = level >= self._min_level
        if memo:
            cached = self._memo.get(key)
            if cached is not None:
                return cached
        h = node_hash(
            self._complete(level - 1, 2 * index), self._complete(level - 1, 2 * index + 1)
        )
        if memo:
            self._memo[key] = h
        return h

    def _range(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end): a node of the RFC 9162 tree, so start is aligned."""
        n = end - start
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self._complete(level, start >> level)
        k = _largest_power_of_two_below(n)
        return node_hash(self._range(start, start + k), self._range(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The root of the tree over the first `size` leaves (default: all of them)."""
        size = self._store.size if size is None else size
        self._check_sizes(size)
        return EMPTY_ROOT if size == 0 else self._range(0, size)

    def _check_sizes(self, *sizes: int) -> None:
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= self._store.size:
                raise ValueError(f"size {s} is not within the store's {self._store.size} leaves")

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf-side element first."""
        self._check_sizes(size)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not below tree size {size}")
        path: list[bytes] = []
        start, end = 0, size
        # Walk down from the root; the siblings come out root-side first.
        while end - start > 1:
            k = _largest_power_of_two_below(end - start)
            if index < start + k:
                path.append(self._range(start + k, end))
                end = start + k
            else:
                path.append(self._range(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (empty if 0 or equal sizes)."""
        self._check_sizes(old_size, new_size)
        if old_size > new_size:
            raise ValueError(f"old size {old_size} is larger than new size {new_size}")
        if old_size == 0 or old_size == new_size:
            return []
        path: list[bytes] = []
        m, start, end = old_size, 0, new_size
        complete = True  # the `b` flag of SUBPROOF: is the old tree's root the node we reach?
        # SUBPROOF(m, D[start:end], b), iteratively; siblings come out root-side first.
        while m != end - start:
            k = _largest_power_of_two_below(end - start)
            if m <= k:
                path.append(self._range(start + k, end))
                end = start + k
            else:
                path.append(self._range(start, start + k))
                m -= k
                start += k
                complete = False
        if not complete:
            path.append(self._range(start, end))
        path.reverse()
        return path


def _hasher(source: HashStore | Sequence[bytes]) -> TreeHasher:
    return source if isinstance(source, TreeHasher) else TreeHasher(source)


def inclusion_proof(index: int, size: int, source: HashStore | Sequence[bytes]) -> list[bytes]:
    """The inclusion proof of leaf `index` in the tree of `size`.

    `source` is a `HashStore` (pass a `TreeHasher` to keep its memo across calls) or a
    sequence of leaf hashes.
    """
    return _hasher(source).inclusion_proof(index, size)


def consistency_proof(
    old_size: int, new_size: int, source: HashStore | Sequence[bytes]
) -> list[bytes]:
    """The consistency proof from the tree of `old_size` to the tree of `new_size`."""
    return _hasher(source).consistency_proof(old_size, new_size)
