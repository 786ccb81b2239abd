"""The audit log's Merkle tree itself: the frontier, the hash stores and proof generation
(RFC 9162 §2.1.3.1, §2.1.4.1). Why each exists is in :mod:`federation.merkle`, which
re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from federation.merkle_hashing import (
    _NODE,
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_SIZE,
    ProofError,
    _check_hash,
    _check_size,
    _largest_power_of_two_below,
    _sha256,
    node_hash,
)

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

    def frontier(self, size: int) -> list[bytes]:
        """The hashes a `CompactRange` of the first `size` leaves holds (largest subtree
        first): look-ups, no hashing."""
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is not within the store's {self._size} leaves")
        out: list[bytes] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                row = self._levels[level]
                at = (start >> level) * HASH_SIZE
                out.append(bytes(row[at : at + HASH_SIZE]))
                start += 1 << level
        return out

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
