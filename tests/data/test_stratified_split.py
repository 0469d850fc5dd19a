"""splits: stratified proportions, determinism and a complete, disjoint partition."""

from __future__ import annotations

import numpy as np
import pytest

from drcl.config import DataParams, Params
from drcl.data import prepare
from drcl.data.dataset import SPLITS
from drcl.data.sources import UNSPLIT, ImportedDataset, RawPart
from drcl.data.splits import label_strata, split_counts, stratified_split

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.mark.parametrize(("n", "expected"), [
    (100, (60, 20, 20)), (7, (4, 2, 1)), (5, (3, 1, 1)), (3, (1, 1, 1)), (2, (1, 1, 0)),
    (1, (1, 0, 0)), (0, (0, 0, 0)),
])
def test_split_counts(n: int, expected: tuple[int, int, int]) -> None:
    counts = split_counts(n, FRACTIONS)
    assert tuple(counts[s] for s in SPLITS) == expected


def test_stratified_proportions_and_partition() -> None:
    strata = np.repeat(np.arange(4), [100, 50, 10, 3])
    index = stratified_split(strata, fractions=FRACTIONS, seed=0)
    joined = np.concatenate([index[s] for s in SPLITS])
    np.testing.assert_array_equal(np.sort(joined), np.arange(strata.size))  # disjoint, complete
    per_class = {s: np.bincount(strata[index[s]], minlength=4).tolist() for s in SPLITS}
    assert per_class == {"train": [60, 30, 6, 1], "val": [20, 10, 2, 1], "test": [20, 10, 2, 1]}


def test_same_seed_same_split_other_seed_other_split() -> None:
    strata = np.tile(np.arange(5), 40)
    first = stratified_split(strata, fractions=FRACTIONS, seed=3)
    again = stratified_split(strata, fractions=FRACTIONS, seed=3)
    other = stratified_split(strata, fractions=FRACTIONS, seed=4)
    for s in SPLITS:
        np.testing.assert_array_equal(first[s], again[s])
    assert any(not np.array_equal(first[s], other[s]) for s in SPLITS)


def test_label_strata() -> None:
    labels = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 1]], dtype=np.float32)
    assert label_strata(labels).tolist() == [1, 0, -1, 2]


def test_unpaired_unsplit_modalities_are_split_each_by_its_labels(monkeypatch, tmp_path) -> None:
    """A source without a split and without paired rows: each modality is split on its own."""
    rng = np.random.default_rng(0)

    def part(n: int, dim: int, modality: str) -> RawPart:
        return RawPart(rng.normal(size=(n, dim)), np.arange(n) % 2, f"src:{modality}.x",
                       f"src:{modality}.y")

    imported = ImportedDataset(name="src", modalities={"a": {UNSPLIT: part(20, 3, "a")},
                                                       "b": {UNSPLIT: part(10, 2, "b")}})
    monkeypatch.setattr(prepare, "import_source", lambda params, cache_dir: imported)
    params = DataParams(source="npz", path=tmp_path / "unused.npz")
    manifest = prepare.prepare_dataset(Params(data=params, seed=0), out_dir=tmp_path / "ds")
    assert manifest.modalities["a"].sizes == {"train": 12, "val": 4, "test": 4}
    assert manifest.modalities["b"].sizes == {"train": 6, "val": 2, "test": 2}
    assert manifest.classes == ["0", "1"]
