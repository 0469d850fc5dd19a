"""Checks on imported data before anything is written, each failing with one line that says where.

Bad values are reported, never repaired: a NaN silently replaced would change the results without
anyone knowing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from drcl.data.dataset import SPLITS, ModalityData
from drcl.data.labels import label_layout
from drcl.data.sources import UNSPLIT, ImportedDataset, RawPart
from drcl.errors import DrclError

MODALITY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def check_imported(data: ImportedDataset) -> None:
    """Names, shapes, dtypes and finiteness of every part, and consistency within a modality."""
    if not data.modalities:
        raise DrclError(f"{data.name}: the source holds no modality")
    for modality, parts in data.modalities.items():
        _check_name(modality, parts)
        if set(parts) not in ({UNSPLIT}, set(SPLITS)):
            raise DrclError(f"{data.name}: modality {modality!r} has parts {sorted(parts)}; "
                            f"expected {', '.join(SPLITS)}")
        for part in parts.values():
            _check_part(part)
        _check_widths(modality, parts)
    if data.paired:
        _check_paired_rows(data)


def _check_part(part: RawPart) -> None:
    """2-D finite numeric features, at least one row, and labels that describe those rows."""
    features = part.features
    if features.ndim != 2 or features.dtype.kind not in "biuf":
        raise DrclError(f"{part.features_at}: features must be a 2-D numeric array, got "
                        f"{features.dtype} of shape {features.shape}")
    if features.shape[0] == 0:
        raise DrclError(f"{part.features_at}: no rows; every split needs at least one item")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported
        as_float32 = features.astype(np.float32, copy=False)
    _check_finite(as_float32, part.features_at, "features must be finite float32 numbers")
    labels = part.labels
    rows = features.shape[0]
    layout = label_layout(labels.shape, rows)
    if layout is None:
        length = labels.shape[0] if labels.ndim == 2 and labels.shape[0] != 1 else labels.size
        if labels.ndim in (1, 2) and length != rows:
            raise DrclError(f"{part.labels_at}: {length} labels for {rows} feature rows "
                            f"in {part.features_at}")
        raise DrclError(f"{part.labels_at}: labels of shape {labels.shape} are neither class ids "
                        f"(n,), (n, 1), (1, n) nor a 0/1 matrix (n, C) for n = {rows}")
    if labels.dtype.kind not in "biuf":
        raise DrclError(f"{part.labels_at}: labels must be numeric, got {labels.dtype}")
    _check_finite(labels, part.labels_at, "labels must be finite")
    ids = part.ids
    if ids is not None and (ids.ndim != 1 or ids.shape[0] != rows or ids.dtype.kind not in "Uiu"):
        raise DrclError(f"{part.ids_at}: ids must be strings or whole numbers, one per feature row "
                        f"({rows}), got {ids.dtype} of shape {ids.shape}")


def check_splits(modalities: Mapping[str, ModalityData]) -> None:
    """After splitting: no split is empty (a source too small for its fractions)."""
    for modality, data in modalities.items():
        for split in SPLITS:
            if len(data.split(split)) == 0:
                raise DrclError(f"modality {modality!r}: the {split} split is empty; the source "
                                "has too few items for the split fractions")


def check_ids(modalities: Mapping[str, ModalityData], *, where: Mapping[str, str]) -> None:
    """Ids name items: one per row, none empty, none repeated within a modality."""
    for modality, data in modalities.items():
        joined = np.concatenate([data.split(split).item_ids(split) for split in SPLITS])
        if (np.char.str_len(np.char.strip(joined)) == 0).any():
            raise DrclError(f"{where[modality]}: modality {modality!r} has an empty id")
        values, counts = np.unique(joined, return_counts=True)
        if (counts > 1).any():
            repeated = values[counts > 1]
            raise DrclError(f"{where[modality]}: modality {modality!r} repeats {repeated.size} "
                            f"id(s), first {str(repeated[0])!r}; ids must be unique within a "
                            "modality")


def check_training_classes(modalities: Mapping[str, ModalityData]) -> None:
    """Each modality's training split must hold two classes at least: its encoder learns to
    tell classes apart, and with one class every loss is satisfied by a constant."""
    for modality, data in modalities.items():
        labels = data.train.labels
        present = np.flatnonzero(labels.sum(axis=0) > 0) if labels.ndim == 2 else np.unique(labels)
        if present.size < 2:
            raise DrclError(f"modality {modality!r}: its training split holds one class only; "
                            "an encoder learns from two classes at least: add items of other "
                            "classes or leave the modality out (data.modalities)")


def check_shared_ids_agree(modalities: Mapping[str, ModalityData], named: list[str]) -> None:
    """One id names one item: where two modalities (with ids of their own naming) share an
    id, its labels must agree."""
    def by_id(modality: str) -> tuple[np.ndarray, np.ndarray]:
        data = modalities[modality]
        return (np.concatenate([data.split(s).item_ids(s) for s in SPLITS]),
                np.concatenate([data.split(s).labels for s in SPLITS]))

    for i, first in enumerate(named):
        ids_a, labels_a = by_id(first)
        for second in named[i + 1:]:
            ids_b, labels_b = by_id(second)
            shared, at_a, at_b = np.intersect1d(ids_a, ids_b, return_indices=True)
            if not shared.size:
                continue
            differ = np.flatnonzero((labels_a[at_a] != labels_b[at_b]).reshape(
                len(shared), -1).any(axis=1))
            if differ.size:
                raise DrclError(f"modalities {first!r} and {second!r} label {differ.size} "
                                f"shared id(s) differently, first {str(shared[differ[0]])!r}; "
                                "one id names one item, with one label")


def check_paired_labels(modalities: Mapping[str, np.ndarray], *, where: Mapping[str, str]) -> None:
    """Paired views describe the same items, so their labels must agree row by row."""
    first, *others = modalities
    for modality in others:
        differ = np.flatnonzero((modalities[modality] != modalities[first]).any(axis=1))
        if differ.size:
            raise DrclError(f"{where[modality]}: labels differ from modality {first!r} in "
                            f"{differ.size} rows (first row {differ[0]}); paired views must "
                            "list the same items in the same order")


def _check_name(modality: str, parts: Mapping[str, RawPart]) -> None:
    # The name becomes a file name in the data set folder.
    if not MODALITY_NAME.fullmatch(modality):
        where = next(iter(parts.values())).features_at
        raise DrclError(f"{where}: modality name {modality!r} must use only letters, digits, "
                        "'_' and '-'")


def _check_finite(values: np.ndarray, where: str, rule: str) -> None:
    if values.dtype.kind != "f":
        return
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        place = f"row {first[0]}, column {first[1]}" if len(first) == 2 else f"index {first[0]}"
        raise DrclError(f"{where}: {int(bad.sum())} NaN or infinite value(s) (first at {place}); "
                        f"{rule}")


def _check_widths(modality: str, parts: Mapping[str, RawPart]) -> None:
    first, *others = parts.values()
    for part in others:
        if part.features.shape[1] != first.features.shape[1]:
            raise DrclError(f"{part.features_at}: {part.features.shape[1]} feature columns but "
                            f"{first.features_at} has {first.features.shape[1]}; modality "
                            f"{modality!r} needs one width in every split")


def _check_paired_rows(data: ImportedDataset) -> None:
    rows = {m: parts[UNSPLIT].features.shape[0] for m, parts in data.modalities.items()
            if UNSPLIT in parts}
    if len(set(rows.values())) > 1:
        detail = ", ".join(f"{m} {n}" for m, n in rows.items())
        raise DrclError(f"{data.name}: paired modalities have different numbers of rows ({detail})")
