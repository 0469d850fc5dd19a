"""Turn raw labels into the float32 one-hot / multi-hot matrices ``(n, C)`` used everywhere.

Sources store labels as class ids (0- or 1-based; flat ``(n,)``, a column ``(n, 1)`` or a row
``(1, n)``) or as a 0/1 matrix ``(n, C)``. Decisions that depend on the values (the id base, the
number of classes, single- vs multi-label) are taken once over the whole data set, all
modalities and splits together: deciding per array would map the same id to different classes
when one split happens to miss class 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from drcl.errors import DrclError

Layout = Literal["ids", "matrix"]


class LabelSource(NamedTuple):
    """Raw labels of ``rows`` items, and where they came from (``file:key``) for messages."""

    values: np.ndarray
    rows: int
    where: str


@dataclass(frozen=True)
class NormalizedLabels:
    """One float32 ``(n, C)`` matrix per input, in input order."""

    matrices: list[np.ndarray]
    num_classes: int
    multi_label: bool


def label_layout(shape: tuple[int, ...], rows: int) -> Layout | None:
    """How labels of this shape describe ``rows`` items; None when they cannot."""
    if shape in ((rows,), (rows, 1), (1, rows)):
        return "ids"
    if len(shape) == 2 and shape[0] == rows:
        return "matrix"
    return None


def normalize_labels(sources: Sequence[LabelSource], *,
                     num_classes: int | None = None) -> NormalizedLabels:
    """Map every input to a one-hot / multi-hot matrix with one shared base and class count.

    Shapes must already fit (see `label_layout`). ``num_classes`` is the number of named classes
    when the source names them; otherwise it is inferred from the labels.
    """
    layouts = {label_layout(s.values.shape, s.rows) for s in sources}
    if None in layouts:
        bad = next(s for s in sources if label_layout(s.values.shape, s.rows) is None)
        raise DrclError(f"{bad.where}: labels of shape {bad.values.shape} do not describe "
                        f"{bad.rows} items")
    if layouts == {"ids", "matrix"}:
        ids = next(s for s in sources if label_layout(s.values.shape, s.rows) == "ids")
        mat = next(s for s in sources if label_layout(s.values.shape, s.rows) == "matrix")
        raise DrclError(f"{ids.where}: labels are class ids here but a 0/1 matrix in "
                        f"{mat.where}; use one form throughout the data set")
    if layouts == {"matrix"}:
        return _from_matrices(sources, num_classes)
    return _from_ids(sources, num_classes)


def _from_ids(sources: Sequence[LabelSource], num_classes: int | None) -> NormalizedLabels:
    ids = [_integer_ids(s) for s in sources]
    present = np.unique(np.concatenate(ids))
    if present.size == 0:
        raise DrclError(f"{sources[0].where}: no labels in the whole data set")
    # 1-based when 0 never occurs and the largest id is the number of classes (the named
    # classes, else the distinct ids seen): [1, 2, 3] is 1-based, [1, 3] keeps its ids.
    count = num_classes if num_classes is not None else present.size
    offset = int(present[0] >= 1 and present[-1] == count)
    classes = num_classes if num_classes is not None else int(present[-1]) + 1 - offset
    matrices = []
    for source, raw in zip(sources, ids, strict=True):
        shifted = raw - offset
        if shifted.size and shifted.max() >= classes:
            raise DrclError(f"{source.where}: class id {int(raw.max())} is out of range for "
                            f"{classes} classes ({offset}-based ids)")
        onehot = np.zeros((shifted.size, classes), dtype=np.float32)
        onehot[np.arange(shifted.size), shifted] = 1.0
        matrices.append(onehot)
    return NormalizedLabels(matrices=matrices, num_classes=classes, multi_label=False)


def _integer_ids(source: LabelSource) -> np.ndarray:
    values = source.values.ravel()
    if values.dtype.kind not in "biuf":
        raise DrclError(f"{source.where}: class ids must be numeric, got {values.dtype}")
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            i = int(np.argmax(bad))
            raise DrclError(f"{source.where}: class ids must be whole numbers; "
                            f"{int(bad.sum())} are not (first {values[i].item()!r} at row {i})")
    ids = values.astype(np.int64)
    if ids.size and ids.min() < 0:
        i = int(np.argmin(ids))
        raise DrclError(f"{source.where}: class ids must be >= 0; found {ids[i]} at row {i}")
    return ids


def _from_matrices(sources: Sequence[LabelSource], num_classes: int | None) -> NormalizedLabels:
    width = num_classes if num_classes is not None else sources[0].values.shape[1]
    matrices = []
    for source in sources:
        values = source.values
        if values.dtype.kind not in "biuf":
            raise DrclError(f"{source.where}: multi-hot labels must be numeric, got {values.dtype}")
        if values.shape[1] != width:
            raise DrclError(f"{source.where}: multi-hot labels have {values.shape[1]} columns, "
                            f"expected {width} classes")
        bad = (values != 0) & (values != 1)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise DrclError(f"{source.where}: multi-hot labels must be 0 or 1; found "
                            f"{values[row, col].item()!r} at row {row}, column {col}")
        matrices.append(values.astype(np.float32))
    # One-hot matrices everywhere mean single-label data, which is stored more compactly as ids.
    multi = any(bool((m.sum(axis=1) != 1).any()) for m in matrices)
    return NormalizedLabels(matrices=matrices, num_classes=width, multi_label=multi)
