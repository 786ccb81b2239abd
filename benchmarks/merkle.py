"""The audit log's Merkle tree at 1,000,000 entries, beside plain SHA-256 (docs/audit.md).

What the audit log will ask of ``federation.merkle``, measured in one process:

* **append**: 1,000,000 leaf hashes into a ``CompactRange`` (the frontier a log keeps to
  sign checkpoints) and into a ``MemoryHashStore`` (which also keeps every complete
  subtree, as tiles would);
* **proofs** at 1,000,000 leaves from the store: inclusion proofs at random indexes and
  consistency proofs from random older sizes, each timed alone (p50 and p99), and the
  first and following inclusion proofs from a store of bare leaf hashes (``TreeHasher``'s
  memo is all it has);
* **verify**: ``verify_inclusion`` and ``verify_consistency`` on those proofs.

The baseline, measured in the same run, is ``hashlib.sha256`` over 1,000,000 64-byte
messages (a node hash is SHA-256 over 65 bytes), so every figure can be read as "so many
plain hashes". ``--quick`` runs 20,000 leaves and a few samples (about a second).

    python benchmarks/merkle.py [--size 1000000] [--samples 1000] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from federation.merkle import (
    CompactRange,
    MemoryHashStore,
    TreeHasher,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from measuring import each_us, percentiles

DEFAULT_SIZE: Final = 1_000_000
DEFAULT_SAMPLES: Final = 1000
TARGET_PROOF_MS: Final = 50.0


@dataclass(frozen=True, slots=True)
class Figures:
    """One run's figures: seconds for bulk work, µs per call for proofs and checks."""

    n: int
    baseline_s: float  # n plain SHA-256 of 64 bytes
    leaf_hashing_s: float
    append_s: float  # CompactRange
    store_build_s: float  # MemoryHashStore
    root_us: float  # CompactRange.root() at n
    inclusion_p50_us: float
    inclusion_p99_us: float
    consistency_p50_us: float
    consistency_p99_us: float
    verify_inclusion_p50_us: float
    verify_consistency_p50_us: float
    bare_first_proof_ms: float
    bare_next_p50_us: float

    @property
    def baseline_us_per_hash(self) -> float:
        return self.baseline_s / self.n * 1e6


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(n: int, samples: int, seed: int = 9162) -> Figures:
    """Build the trees of `n` leaves and time everything the report prints."""
    rng = random.Random(seed)
    messages = [i.to_bytes(8, "big") * 8 for i in range(n)]  # 64 bytes each

    def baseline() -> None:
        sha = hashlib.sha256
        for m in messages:
            sha(m).digest()

    gc.disable()
    try:
        baseline_s = _timed(baseline)
        leaves: list[bytes] = []
        leaf_hashing_s = _timed(lambda: leaves.extend(leaf_hash(m) for m in messages))

        frontier = CompactRange()
        append_s = _timed(lambda: frontier.extend(leaves))
        store = MemoryHashStore()

        def build() -> None:
            for leaf in leaves:
                store.append(leaf)

        store_build_s = _timed(build)
        root_us = _timed(frontier.root) * 1e6
        root = frontier.root()
        hasher = TreeHasher(store)
        assert hasher.root() == root, "the store's root differs from the frontier's"

        indexes = [rng.randrange(n) for _ in range(samples)]
        olds = [rng.randrange(1, n) for _ in range(samples)]
        inclusion, inc_us = each_us(hasher.inclusion_proof, [(i, n) for i in indexes])
        consistency, con_us = each_us(hasher.consistency_proof, [(m, n) for m in olds])
        old_roots = [hasher.root(m) for m in olds]
        _, vinc_us = each_us(
            verify_inclusion,
            [(leaves[i], i, n, p, root) for i, p in zip(indexes, inclusion, strict=True)],
        )
        _, vcon_us = each_us(
            verify_consistency,
            [(m, n, r, root, p) for m, r, p in zip(olds, old_roots, consistency, strict=True)],
        )

        bare = TreeHasher(leaves)  # leaf hashes only: the memo is all it has
        first_ms = _timed(lambda: bare.inclusion_proof(indexes[0], n)) * 1e3
        _, bare_us = each_us(bare.inclusion_proof, [(i, n) for i in indexes[1:]])
    finally:
        gc.enable()

    inclusion_p50, inclusion_p99 = percentiles(inc_us, 0.5, 0.99)
    consistency_p50, consistency_p99 = percentiles(con_us, 0.5, 0.99)
    (verify_inclusion_p50,) = percentiles(vinc_us, 0.5)
    (verify_consistency_p50,) = percentiles(vcon_us, 0.5)
    (bare_next_p50,) = percentiles(bare_us or [first_ms * 1e3], 0.5)

    return Figures(
        n=n,
        baseline_s=baseline_s,
        leaf_hashing_s=leaf_hashing_s,
        append_s=append_s,
        store_build_s=store_build_s,
        root_us=root_us,
        inclusion_p50_us=inclusion_p50,
        inclusion_p99_us=inclusion_p99,
        consistency_p50_us=consistency_p50,
        consistency_p99_us=consistency_p99,
        verify_inclusion_p50_us=verify_inclusion_p50,
        verify_consistency_p50_us=verify_consistency_p50,
        bare_first_proof_ms=first_ms,
        bare_next_p50_us=bare_next_p50,
    )


def report(f: Figures, samples: int) -> None:
    per_hash = f.baseline_us_per_hash

    def hashes(us: float) -> str:
        return f"{us / per_hash:,.0f} plain hashes"

    print(
        f"baseline: hashlib.sha256 of {f.n:,} 64-byte messages: {f.baseline_s:.3f} s "
        f"({per_hash:.3f} µs per hash)"
    )
    print(
        f"leaf hashing of {f.n:,} entries: {f.leaf_hashing_s:.3f} s "
        f"(ratio to baseline {f.leaf_hashing_s / f.baseline_s:.2f})"
    )
    print(
        f"append {f.n:,} leaf hashes into a CompactRange: {f.append_s:.3f} s, "
        f"{f.append_s / f.n * 1e6:.2f} µs per leaf "
        f"(ratio to baseline {f.append_s / f.baseline_s:.2f})"
    )
    print(
        f"append {f.n:,} leaf hashes into a MemoryHashStore: {f.store_build_s:.3f} s, "
        f"{f.store_build_s / f.n * 1e6:.2f} µs per leaf "
        f"(ratio to baseline {f.store_build_s / f.baseline_s:.2f})"
    )
    print(f"CompactRange root at {f.n:,}: {f.root_us:.1f} µs ({hashes(f.root_us)})")
    print(
        f"inclusion proof at {f.n:,} from the store ({samples} random leaves): "
        f"p50 {f.inclusion_p50_us:.1f} µs, p99 {f.inclusion_p99_us:.1f} µs "
        f"(p50 = {hashes(f.inclusion_p50_us)})"
    )
    print(
        f"consistency proof to {f.n:,} from the store ({samples} random old sizes): "
        f"p50 {f.consistency_p50_us:.1f} µs, p99 {f.consistency_p99_us:.1f} µs "
        f"(p50 = {hashes(f.consistency_p50_us)})"
    )
    print(
        f"verify inclusion: p50 {f.verify_inclusion_p50_us:.1f} µs "
        f"({hashes(f.verify_inclusion_p50_us)}); verify consistency: p50 "
        f"{f.verify_consistency_p50_us:.1f} µs ({hashes(f.verify_consistency_p50_us)})"
    )
    print(
        f"inclusion proof from bare leaf hashes: first {f.bare_first_proof_ms:.1f} ms "
        f"(builds the memo), then p50 {f.bare_next_p50_us:.1f} µs"
    )
    worst_ms = max(f.inclusion_p99_us, f.consistency_p99_us) / 1e3
    met = "met" if worst_ms < TARGET_PROOF_MS else "NOT met"
    print(
        f"target: a proof at {f.n:,} well under {TARGET_PROOF_MS:.0f} ms after the store is "
        f"built: {met} (worst p99 {worst_ms:.3f} ms)"
    )


def run(n: int, samples: int) -> Figures:
    print(
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} cores; one thread; {n:,} leaves"
    )
    figures = measure(n, samples)
    report(figures, samples)
    return figures


def quick(n: int = 20_000, samples: int = 50) -> Figures:
    """A smoke run: small, about a second (tests/unit/test_merkle.py runs a smaller one)."""
    return run(n, samples)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="leaves (default 1e6)")
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="proofs of each kind (default 1000)"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 leaves, 50 samples")
    args = parser.parse_args(argv)
    if args.size < 2 or args.samples < 1:
        parser.error("--size must be at least 2 and --samples at least 1")
    if args.quick:
        quick()
    else:
        run(args.size, args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
