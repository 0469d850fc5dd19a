"""Helpers shared by the importers of the field's benchmark files (one module per format).

They turn named arrays into `RawPart`s that say where each came from, and cut one array into
consecutive row ranges where a protocol splits a file's test set into test and validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drcl.data.sources import RawPart
from drcl.data.sources.matfile import Value
from drcl.errors import DrclError


def matrix(value: Value, where: str) -> np.ndarray:
    """An array read from a file, refusing a cell array where a matrix belongs."""
    if isinstance(value, list):
        raise DrclError(f"{where}: expected a matrix, found a cell array of {len(value)}")
    return value


def cells(value: Value, count: int, where: str) -> list[np.ndarray]:
    """A cell array of exactly ``count`` matrices (one per modality)."""
    if not isinstance(value, list) or len(value) != count:
        found = f"a cell array of {len(value)}" if isinstance(value, list) else \
            f"an array of shape {value.shape}"
        raise DrclError(f"{where}: expected a cell array of {count} matrices, found {found}")
    for i, cell in enumerate(value):
        matrix(cell, f"{where}{{{i + 1}}}")
    return value


def per_item(labels: np.ndarray) -> np.ndarray:
    """Labels with one entry (or one 0/1 row) per item: a MATLAB row vector 1 x n becomes n."""
    return labels.ravel() if labels.ndim == 2 and labels.shape[0] == 1 else labels


def part(path: Path, features: Value, labels: Value, *, features_key: str,
         labels_key: str) -> RawPart:
    """A whole array pair as one part."""
    return RawPart(features=matrix(features, f"{path}:{features_key}"),
                   labels=per_item(matrix(labels, f"{path}:{labels_key}")),
                   features_at=f"{path}:{features_key}", labels_at=f"{path}:{labels_key}")


def cut(whole: RawPart, bounds: dict[str, tuple[int, int]]) -> dict[str, RawPart]:
    """Consecutive row ranges of one part, e.g. ``{"val": (0, 231), "test": (231, 693)}``."""
    rows, count = whole.features.shape[0], whole.labels.shape[0]
    if count != rows:
        raise DrclError(f"{whole.labels_at}: {count} labels for {rows} feature rows in "
                        f"{whole.features_at}")
    needed = max(stop for _, stop in bounds.values())
    if rows < needed or any(stop <= start for start, stop in bounds.values()):
        raise DrclError(f"{whole.features_at}: {rows} rows; the protocol splits it at "
                        f"{', '.join(f'{s} {a}:{b}' for s, (a, b) in bounds.items())}")
    return {split: RawPart(features=whole.features[start:stop], labels=whole.labels[start:stop],
                           features_at=f"{whole.features_at}[{start}:{stop}]",
                           labels_at=f"{whole.labels_at}[{start}:{stop}]",
                           ids=None if whole.ids is None else whole.ids[start:stop],
                           ids_at=f"{whole.ids_at}[{start}:{stop}]" if whole.ids_at else "")
            for split, (start, stop) in bounds.items()}
