"""The audit log's Merkle tree against published vectors and an independent reference.

Published vectors (tests/unit/vectors/rfc6962_roots.json, with their provenance) pin the
hashing; a second, deliberately naive implementation of RFC 9162 §2.1 written here from the
RFC's recursive definitions (list slicing, no memo, no frontier) pins every proof the
library generates for every tree up to 64 leaves, and the verifiers must refuse every
tampered proof, index, size and root tried.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from federation import merkle
from federation.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryHashStore,
    ProofError,
    TreeHasher,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc6962_roots.json").read_text())
RFC_LEAVES = [bytes.fromhex(h) for h in VECTORS["leaves_hex"]]
RFC_ROOTS = [bytes.fromhex(h) for h in VECTORS["roots_by_size"]]


# --- the reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 as written -----------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over entries (not hashes), exactly as RFC 9162 §2.1.1 defines it."""
    n = len(entries)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + entries[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:]))


def ref_path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, entries[:k]), ref_mth(entries[k:])]
    return [*ref_path(m - k, entries[k:]), ref_mth(entries[:k])]


def ref_subproof(m: int, entries: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [ref_mth(entries)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, entries[:k], b), ref_mth(entries[k:])]
    return [*ref_subproof(m - k, entries[k:], False), ref_mth(entries[:k])]


def ref_proof(m: int, entries: Sequence[bytes]) -> list[bytes]:
    return [] if m in (0, len(entries)) else ref_subproof(m, entries, True)


# --- fixtures ------------------------------------------------------------------------------------


def entries(n: int) -> list[bytes]:
    """The 8 RFC 6962 test leaves, then distinct synthetic entries."""
    return [RFC_LEAVES[i] if i < len(RFC_LEAVES) else b"entry %d" % i for i in range(n)]


ENTRIES = entries(200)
LEAVES = [leaf_hash(e) for e in ENTRIES]
ROOTS = [ref_mth(ENTRIES[:n]) for n in range(130)]
STORE = MemoryHashStore(LEAVES)
HASHER = TreeHasher(STORE)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def fails(check: Callable[..., None], *args: object) -> bool:
    """Whether the verifier refuses: ProofError is its only way to say no."""
    try:
        check(*args)
    except ProofError:
        return True
    return False


# --- hashing and roots against the published vectors ---------------------------------------------


def test_leaf_and_node_hashes_are_the_published_ones() -> None:
    levels = [[bytes.fromhex(h) for h in level] for level in VECTORS["node_hashes_by_level"]]
    assert [leaf_hash(e) for e in RFC_LEAVES] == levels[0]
    for level in range(1, len(levels)):
        below = levels[level - 1]
        assert [
            node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)
        ] == levels[level]
        for index, want in enumerate(levels[level]):
            assert MemoryHashStore(leaf_hash(e) for e in RFC_LEAVES).subtree(level, index) == want


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_published_vectors_computed_four_ways(size: int) -> None:
    leaves = [leaf_hash(e) for e in RFC_LEAVES[:size]]
    want = RFC_ROOTS[size]
    assert ref_mth(RFC_LEAVES[:size]) == want  # the RFC's recursion, from entries
    assert merkle.root(leaves) == want  # the frontier fold
    assert TreeHasher(MemoryHashStore(leaves)).root() == want  # stored subtrees
    assert HASHER.root(size) == want  # a prefix of a larger store


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == RFC_ROOTS[0]
    assert merkle.root([]) == EMPTY_ROOT == CompactRange().root()


@pytest.mark.parametrize(
    "case", VECTORS["inclusion_proofs"], ids=lambda c: f"{c['index']}@{c['size']}"
)
def test_published_inclusion_proofs_are_generated_and_verify(case: dict[str, object]) -> None:
    index, size = case["index"], case["size"]
    assert isinstance(index, int) and isinstance(size, int) and isinstance(case["proof"], list)
    want = [bytes.fromhex(h) for h in case["proof"]]
    leaves = [leaf_hash(e) for e in RFC_LEAVES]
    assert inclusion_proof(index, size, leaves) == want
    verify_inclusion(leaves[index], index, size, want, RFC_ROOTS[size])


@pytest.mark.parametrize(
    "case", VECTORS["consistency_proofs"], ids=lambda c: f"{c['old_size']}-{c['new_size']}"
)
def test_published_consistency_proofs_are_generated_and_verify(case: dict[str, object]) -> None:
    old, new = case["old_size"], case["new_size"]
    assert isinstance(old, int) and isinstance(new, int) and isinstance(case["proof"], list)
    want = [bytes.fromhex(h) for h in case["proof"]]
    leaves = [leaf_hash(e) for e in RFC_LEAVES]
    assert consistency_proof(old, new, leaves) == want
    verify_consistency(old, new, RFC_ROOTS[old], RFC_ROOTS[new], want)


# --- every proof of every small tree -------------------------------------------------------------


def test_every_inclusion_proof_up_to_64_leaves_matches_the_reference_and_verifies() -> None:
    for n in range(1, 65):
        for i in range(n):
            proof = HASHER.inclusion_proof(i, n)
            assert proof == ref_path(i, ENTRIES[:n]), (i, n)
            verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])


def test_every_consistency_proof_up_to_64_leaves_matches_the_reference_and_verifies() -> None:
    for n in range(0, 65):
        for m in range(0, n + 1):
            proof = HASHER.consistency_proof(m, n)
            assert proof == ref_proof(m, ENTRIES[:n]), (m, n)
            verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def test_leaf_sources_give_the_same_proofs() -> None:
    n = 37
    leaves = LEAVES[:n]
    sources: list[merkle.HashStore | list[bytes]] = [
        leaves,
        MemoryHashStore(leaves),
        TreeHasher(MemoryHashStore(leaves), min_level=1),
    ]
    for source in sources:
        for i in range(n):
            assert inclusion_proof(i, n, source) == HASHER.inclusion_proof(i, n)
        for m in range(n + 1):
            assert consistency_proof(m, n, source) == HASHER.consistency_proof(m, n)


# --- tampering: exhaustive for small trees, sampled for larger ones ------------------------------


def test_every_single_bit_flip_of_an_inclusion_proof_fails_up_to_16_leaves() -> None:
    for n in range(1, 17):
        for i in range(n):
            proof = HASHER.inclusion_proof(i, n)
            for e, element in enumerate(proof):
                for bit in range(256):
                    bad = [*proof[:e], flip(element, bit), *proof[e + 1 :]]
                    assert fails(verify_inclusion, LEAVES[i], i, n, bad, ROOTS[n])
            for bit in range(256):
                assert fails(verify_inclusion, flip(LEAVES[i], bit), i, n, proof, ROOTS[n])
                assert fails(verify_inclusion, LEAVES[i], i, n, proof, flip(ROOTS[n], bit))


def test_every_single_bit_flip_of_a_consistency_proof_fails_up_to_16_leaves() -> None:
    for n in range(2, 17):
        for m in range(1, n):
            proof = HASHER.consistency_proof(m, n)
            r1, r2 = ROOTS[m], ROOTS[n]
            for e, element in enumerate(proof):
                for bit in range(256):
                    bad = [*proof[:e], flip(element, bit), *proof[e + 1 :]]
                    assert fails(verify_consistency, m, n, r1, r2, bad)
            for bit in range(256):
                assert fails(verify_consistency, m, n, flip(r1, bit), r2, proof)
                assert fails(verify_consistency, m, n, r1, flip(r2, bit), proof)


def test_sampled_bit_flips_fail_up_to_64_leaves() -> None:
    rng = random.Random(6962)
    for n in range(17, 65):
        for i in range(n):
            proof = HASHER.inclusion_proof(i, n)
            for e, element in enumerate(proof):
                bad = [*proof[:e], flip(element, rng.randrange(256)), *proof[e + 1 :]]
                assert fails(verify_inclusion, LEAVES[i], i, n, bad, ROOTS[n])
        for m in range(1, n):
            proof = HASHER.consistency_proof(m, n)
            for e, element in enumerate(proof):
                bad = [*proof[:e], flip(element, rng.randrange(256)), *proof[e + 1 :]]
                assert fails(verify_consistency, m, n, ROOTS[m], ROOTS[n], bad)


def _reshaped(proof: list[bytes], extra: bytes) -> list[list[bytes]]:
    """The proof with an element dropped, added at either end, or swapped with a neighbour."""
    shapes = [[*proof, extra], [extra, *proof]]
    shapes += [proof[:e] + proof[e + 1 :] for e in range(len(proof))]
    shapes += [
        [*proof[:e], proof[e + 1], proof[e], *proof[e + 2 :]]
        for e in range(len(proof) - 1)
        if proof[e] != proof[e + 1]
    ]
    return shapes


def test_inclusion_fails_for_any_other_index_size_root_leaf_or_proof_shape() -> None:
    for n in range(1, 33):
        root = ROOTS[n]
        for i in range(n):
            proof = HASHER.inclusion_proof(i, n)
            leaf = LEAVES[i]
            for j in range(n):
                if j != i:
                    assert fails(verify_inclusion, leaf, j, n, proof, root)
                    assert fails(verify_inclusion, LEAVES[j], i, n, proof, root)
            # Another size, with that size's genuine root (the pair a checkpoint signs; a
            # proof can fit another size's shape, so a size alone proves nothing).
            for other in range(i + 1, 2 * n + 2):
                if other != n:
                    assert fails(verify_inclusion, leaf, i, other, proof, ROOTS[other])
            for wrong_root in {EMPTY_ROOT, ROOTS[n - 1], ROOTS[n + 1], leaf, bytes(32)} - {root}:
                assert fails(verify_inclusion, leaf, i, n, proof, wrong_root)
            for shape in _reshaped(proof, root) + _reshaped(proof, bytes(32)):
                assert fails(verify_inclusion, leaf, i, n, shape, root)
            assert fails(verify_inclusion, leaf, i, n, [*proof, b""], root)
            assert fails(verify_inclusion, leaf, n, n, proof, root)
            assert fails(verify_inclusion, leaf, -1, n, proof, root)
            assert fails(verify_inclusion, leaf[:31], i, n, proof, root)
            assert fails(verify_inclusion, leaf, i, n, proof, root + b"\x00")


def test_consistency_fails_for_any_other_size_root_or_proof_shape() -> None:
    for n in range(2, 33):
        for m in range(1, n):
            proof = HASHER.consistency_proof(m, n)
            r1, r2 = ROOTS[m], ROOTS[n]
            # Other sizes with their genuine roots, as in the inclusion test above.
            for other in range(1, 2 * n + 2):
                if other != m and other < n:
                    assert fails(verify_consistency, other, n, ROOTS[other], r2, proof)
                if other != n and other > m:
                    assert fails(verify_consistency, m, other, r1, ROOTS[other], proof)
            assert fails(verify_consistency, m, n, r2, r1, proof)
            assert fails(verify_consistency, n, m, r2, r1, proof)
            assert fails(verify_consistency, m, n, r1, r2, [])
            assert fails(verify_consistency, m, n, EMPTY_ROOT, r2, proof)
            assert fails(verify_consistency, 0, n, r1, r2, proof)
            assert fails(verify_consistency, n, n, r2, r2, proof)
            for shape in _reshaped(proof, r1) + _reshaped(proof, r2) + _reshaped(proof, proof[0]):
                assert fails(verify_consistency, m, n, r1, r2, shape)
            assert fails(verify_consistency, m, n, r1, r2, [*proof, b""])


def test_proofs_of_the_wrong_length_fail_on_their_length_before_any_hash_compare() -> None:
    """RFC 9162's checks on sn: a proof's length is judged by the sizes, not by luck."""
    for n in range(2, 33):
        for i in range(n):
            proof = HASHER.inclusion_proof(i, n)
            with pytest.raises(ProofError, match="too long"):
                verify_inclusion(LEAVES[i], i, n, [*proof, proof[-1]], ROOTS[n])
            with pytest.raises(ProofError, match="too short"):
                verify_inclusion(LEAVES[i], i, n, proof[:-1], ROOTS[n])
        for m in range(1, n):
            proof = HASHER.consistency_proof(m, n)
            with pytest.raises(ProofError, match="too long"):
                verify_consistency(m, n, ROOTS[m], ROOTS[n], [*proof, proof[-1]])
            if len(proof) > 1:
                with pytest.raises(ProofError, match="too short"):
                    verify_consistency(m, n, ROOTS[m], ROOTS[n], proof[:-1])


def test_trivial_consistency_cases() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 5, ROOTS[3], ROOTS[5], [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [EMPTY_ROOT])
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(5, 5, ROOTS[5], ROOTS[4], [])
    with pytest.raises(ProofError, match="larger"):
        verify_consistency(6, 5, ROOTS[6], ROOTS[5], [])
    with pytest.raises(ProofError):
        verify_consistency(1, 1 << 64, ROOTS[1], ROOTS[2], [ROOTS[1]])


def test_proof_errors_are_value_errors() -> None:
    assert issubclass(ProofError, ValueError)
    with pytest.raises(ValueError):
        verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)


def test_generation_refuses_sizes_beyond_the_store_and_bad_indexes() -> None:
    store = MemoryHashStore(LEAVES[:10])
    with pytest.raises(ValueError):
        inclusion_proof(3, 11, store)
    with pytest.raises(ValueError):
        inclusion_proof(10, 10, store)
    with pytest.raises(ValueError):
        inclusion_proof(-1, 10, store)
    with pytest.raises(ValueError):
        consistency_proof(5, 11, store)
    with pytest.raises(ValueError):
        consistency_proof(6, 5, store)
    with pytest.raises(ValueError):
        TreeHasher(store).root(11)


# --- the frontier and the stores -----------------------------------------------------------------


def test_compact_range_root_equals_root_at_every_size_up_to_200() -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    for n, leaf in enumerate(LEAVES, start=1):
        cr.append(leaf)
        assert cr.size == n
        assert len(cr.hashes) == n.bit_count()
        want = merkle.root(LEAVES[:n])
        assert cr.root() == want == TreeHasher(STORE).root(n), n
        if n < len(ROOTS):
            assert want == ROOTS[n]


def test_compact_range_hashes_are_the_complete_subtrees_and_resume_from_state() -> None:
    for n in range(0, 200, 7):
        cr = CompactRange()
        cr.extend(LEAVES[:n])
        # the frontier of size n holds one complete subtree per set bit, largest first
        start, want = 0, []
        for level in reversed(range(n.bit_length())):
            if n >> level & 1:
                want.append(STORE.subtree(level, start >> level))
                start += 1 << level
        assert list(cr.hashes) == want
        resumed = CompactRange.from_state(cr.size, cr.hashes)
        resumed.extend(LEAVES[n:])
        assert resumed.root() == merkle.root(LEAVES)
    with pytest.raises(ProofError):
        CompactRange.from_state(5, [LEAVES[0]])
    with pytest.raises(ProofError):
        CompactRange.from_state(1, [b"short"])
    with pytest.raises(ValueError):
        CompactRange().append(b"not a hash")


def test_memory_store_keeps_only_complete_subtrees() -> None:
    store = MemoryHashStore(LEAVES[:6])
    assert store.size == 6
    assert store.leaf(5) == LEAVES[5]
    assert store.subtree(1, 2) == node_hash(LEAVES[4], LEAVES[5])
    assert store.subtree(2, 0) == ROOTS[4]
    assert store.subtree(2, 1) is None  # leaves 4..7 are not all there
    assert store.subtree(3, 0) is None
    assert store.subtree(1, -1) is None
    with pytest.raises(IndexError):
        store.leaf(6)
    with pytest.raises(ValueError):
        store.append(b"short")


class CountingStore:
    """A HashStore of leaf hashes only, counting reads: what memoisation saves."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = leaves
        self.reads = 0

    @property
    def size(self) -> int:
        return len(self.leaves)

    def leaf(self, index: int) -> bytes:
        self.reads += 1
        return self.leaves[index]


def test_tree_hasher_memoises_complete_subtrees_of_a_plain_store() -> None:
    leaves = [leaf_hash(b"%d" % i) for i in range(5000)]
    store = CountingStore(leaves)
    hasher = TreeHasher(store)
    first = hasher.inclusion_proof(1234, 5000)
    cold = store.reads
    assert cold >= 4000  # the first proof reads (nearly) every leaf
    store.reads = 0
    rng = random.Random(1)
    root = merkle.root(leaves)
    for index in rng.sample(range(5000), 50):
        verify_inclusion(leaves[index], index, 5000, hasher.inclusion_proof(index, 5000), root)
    assert store.reads <= 50 * 16 * 13  # below one 16-leaf subtree per level per proof
    assert first == inclusion_proof(1234, 5000, leaves)
    verify_consistency(
        4097, 5000, merkle.root(leaves[:4097]), root, hasher.consistency_proof(4097, 5000)
    )


def test_large_store_proofs_verify() -> None:
    n = 70_000
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    store = MemoryHashStore(leaves)
    cr = CompactRange()
    cr.extend(leaves)
    root = cr.root()
    hasher = TreeHasher(store)
    assert hasher.root() == root
    rng = random.Random(2)
    for index in [0, 1, n // 2, n - 2, n - 1, *rng.sample(range(n), 20)]:
        verify_inclusion(leaves[index], index, n, hasher.inclusion_proof(index, n), root)
    for old in [1, 2, 65_536, 65_537, n - 1, *rng.sample(range(1, n), 20)]:
        old_root = hasher.root(old)
        verify_consistency(old, n, old_root, root, hasher.consistency_proof(old, n))


# --- the benchmark runs ---------------------------------------------------------------------------


def test_benchmark_quick_function_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Imported as `python benchmarks/merkle.py` runs it: its folder first on sys.path, where
    # it finds its sibling `measuring`.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    bench = importlib.import_module("merkle")

    figures = bench.quick(n=3000, samples=20)
    out = capsys.readouterr().out
    assert "baseline" in out and "inclusion proof" in out
    assert figures.append_s > 0 and figures.inclusion_p50_us > 0
