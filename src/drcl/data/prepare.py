"""The `prepare` step: import the configured source, validate it, split it if needed, save it.

Everything is checked in memory before the first byte is written, and the data set folder is
written atomically, so a failed prepare leaves ``out_dir`` exactly as it was.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from drcl.config import DataParams
from drcl.data.dataset import SPLITS, Manifest, ModalityData, Split, save_dataset
from drcl.data.labels import LabelSource, normalize_labels
from drcl.data.sources import UNSPLIT, ImportedDataset, import_source
from drcl.data.splits import label_strata, stratified_split
from drcl.data.validate import check_imported, check_paired_labels, check_splits
from drcl.errors import DrclError


def prepare_dataset(params: DataParams, *, seed: int, out_dir: str | Path,
                    cache_dir: str | Path | None = None) -> Manifest:
    """Import the configured source, validate it, split it if it has no split, save atomically."""
    imported = _select_modalities(import_source(params, cache_dir=cache_dir), params.modalities)
    check_imported(imported)
    labels, num_classes, multi_label = _labels(imported)
    fractions = params.split.model_dump()
    shared = _shared_split(imported, labels, fractions=fractions, seed=seed)
    modalities: dict[str, ModalityData] = {}
    for modality, parts in imported.modalities.items():
        if UNSPLIT in parts:
            features = parts[UNSPLIT].features.astype(np.float32)
            mod_labels = labels[modality][UNSPLIT]
            index = shared if shared is not None else stratified_split(
                label_strata(mod_labels), fractions=fractions, seed=seed)
            splits = {s: Split(features[index[s]], mod_labels[index[s]]) for s in SPLITS}
        else:
            splits = {s: Split(parts[s].features.astype(np.float32), labels[modality][s])
                      for s in SPLITS}
        modalities[modality] = ModalityData(name=modality, **splits)
    check_splits(modalities)
    classes = imported.classes or [str(c) for c in range(num_classes)]
    return save_dataset(out_dir, name=imported.name, classes=classes, multi_label=multi_label,
                        modalities=modalities)


def _select_modalities(imported: ImportedDataset, wanted: list[str] | None) -> ImportedDataset:
    """Keep the modalities named in ``data.modalities`` (all when null), in that order."""
    if wanted is None:
        return imported
    missing = [m for m in wanted if m not in imported.modalities]
    if missing:
        raise DrclError(f"data.modalities: {', '.join(map(repr, missing))} not in {imported.name} "
                        f"(it has {', '.join(imported.modalities)})")
    return replace(imported, modalities={m: imported.modalities[m] for m in wanted})


def _shared_split(imported: ImportedDataset, labels: dict[str, dict[str, np.ndarray]], *,
                  fractions: dict[str, float], seed: int) -> dict[str, np.ndarray] | None:
    """For paired unsplit views: one index split, made on the (checked identical) labels."""
    unsplit = {m: parts[UNSPLIT] for m, parts in labels.items() if UNSPLIT in parts}
    if not imported.paired or not unsplit:
        return None
    check_paired_labels(unsplit, where={m: imported.modalities[m][UNSPLIT].labels_at
                                        for m in unsplit})
    first = next(iter(unsplit.values()))
    return stratified_split(label_strata(first), fractions=fractions, seed=seed)


def _labels(imported: ImportedDataset) -> tuple[dict[str, dict[str, np.ndarray]], int, bool]:
    """Normalise all label arrays together (one id base, one class count for the data set)."""
    keys = [(m, p) for m, parts in imported.modalities.items() for p in parts]
    sources = [LabelSource(part.labels, part.features.shape[0], part.labels_at)
               for part in (imported.modalities[m][p] for m, p in keys)]
    num_classes = len(imported.classes) if imported.classes is not None else None
    result = normalize_labels(sources, num_classes=num_classes)
    by_modality: dict[str, dict[str, np.ndarray]] = {m: {} for m in imported.modalities}
    for (modality, part), matrix in zip(keys, result.matrices, strict=True):
        by_modality[modality][part] = matrix
    return by_modality, result.num_classes, result.multi_label
