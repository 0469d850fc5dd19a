"""Stratified train/val/test split for sources that come without one.

Each stratum (class) is shuffled with ``numpy.random.Generator(PCG64(seed))`` and cut by counts
from largest-remainder rounding, so split sizes follow the fractions per class and every split
gets items of every class that has at least three. For paired multi-view data the split is made
once and the same indices are applied to every view.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from drcl.data.dataset import SPLITS


def label_strata(labels: np.ndarray) -> np.ndarray:
    """The stratum of each row of a one-hot / multi-hot matrix: its first class, -1 for none.

    For single-label data that is the class; multi-label data is stratified on its first label,
    which keeps every class represented without enumerating label combinations.
    """
    positive = labels > 0
    return np.where(positive.any(axis=1), positive.argmax(axis=1), -1)


def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Sizes of the splits of ``n`` items: largest-remainder rounding, then no split left empty
    when ``n`` allows it (one item moves from the largest split)."""
    exact = np.array([n * fractions[s] for s in SPLITS], dtype=np.float64)
    counts = np.floor(exact).astype(np.int64)
    # Stable sort: ties in the remainder go to the earlier split (train, then val, then test).
    for i in np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    while n >= len(SPLITS) and (counts == 0).any():
        counts[int(np.argmax(counts))] -= 1
        counts[int(np.argmin(counts))] += 1
    return dict(zip(SPLITS, (int(c) for c in counts), strict=True))


def stratified_split(strata: np.ndarray, *, fractions: Mapping[str, float],
                     seed: int) -> dict[str, np.ndarray]:
    """Row indices of each split (sorted), the same for the same strata, fractions and seed."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for stratum in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == stratum))
        start = 0
        for split, count in split_counts(rows.size, fractions).items():
            chosen[split].append(rows[start:start + count])
            start += count
    return {s: np.sort(np.concatenate(chosen[s])) if chosen[s] else np.zeros(0, np.int64)
            for s in SPLITS}
