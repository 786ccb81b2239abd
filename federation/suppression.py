"""Small-cell suppression for the compliance indicators: no count an overseer reads may
identify a case, neither as shown nor by subtracting shown counts from a shown total.

Primary suppression: a count from 1 to 4 is not shown (it reads `<5`); 0 is shown, since
"no request" identifies nobody. Secondary suppression: where counts add up to a total that
is shown (each peer to all peers, each month to the whole window, a breakdown to its total),
the hidden cells of a group must not be recoverable from `total - shown`. With k hidden
cells whose sum S is thus known, the cells are recovered exactly when k == 1, when every
cell is at its least (S equals the sum of their minima: 1 for a small cell, 5 for a larger
one hidden in turn), or when every small cell is at its most (S == 4k, no larger cell
hidden). While a group is recoverable, its smallest shown non-zero part is hidden too
(it reads `x`), or, with none left, the total. A share or median built on a hidden count,
or on fewer than 5 cases, is hidden too (`federation.indicators`).

The function works on opaque cell keys and integer values, so it knows nothing of what the
cells mean: `federation.indicators` builds the groups.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

# The smallest count shown as it is (besides 0).
THRESHOLD = 5

K = TypeVar("K", bound=Hashable)


def is_small(value: int) -> bool:
    """A count primary suppression hides: 1 to THRESHOLD - 1."""
    return 0 < value < THRESHOLD


def _recoverable(values: Sequence[int]) -> bool:
    """Whether hidden cells with these (true) values could be told from their sum alone."""
    if not values:
        return False
    if len(values) == 1:
        return True
    total = sum(values)
    least = sum(1 if is_small(v) else THRESHOLD for v in values)
    if total == least:
        return True
    return all(is_small(v) for v in values) and total == (THRESHOLD - 1) * len(values)


def suppress(
    values: Mapping[K, int], groups: Sequence[tuple[K, Sequence[K]]]
) -> tuple[frozenset[K], frozenset[K]]:
    """(primary, secondary): the cells to hide. `groups` are (total, parts) whose parts add
    up to the total; a group whose total is hidden protects nothing and is skipped.

    Deterministic: the same values and groups always hide the same cells (ties between
    equal parts go to the one listed first)."""
    primary = frozenset(k for k, v in values.items() if is_small(v))
    hidden: set[K] = set(primary)
    changed = True
    while changed:
        changed = False
        for total, parts in groups:
            if total in hidden:
                continue
            if not _recoverable([values[p] for p in parts if p in hidden]):
                continue
            shown = [p for p in parts if p not in hidden and values[p] > 0]
            if shown:
                hidden.add(min(shown, key=lambda p: values[p]))
            else:
                hidden.add(total)
            changed = True
    return primary, frozenset(hidden - primary)
