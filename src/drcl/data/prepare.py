"""The `prepare` step: import the configured source, validate it, split it if needed, save it.

Everything is checked in memory before the first byte is written, and the data set folder is
written atomically, so a failed prepare leaves ``out_dir`` exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from drcl.config import Params
from drcl.data.dataset import SPLITS, Manifest, ModalityData, Split, save_dataset
from drcl.data.labels import LabelSource, normalize_labels
from drcl.data.noise import check_noise, corrupt
from drcl.data.sources import UNSPLIT, ImportedDataset, RawPart, import_source
from drcl.data.splits import label_strata, stratified_split
from drcl.data.validate import (
    check_ids,
    check_imported,
    check_paired_labels,
    check_shared_ids_agree,
    check_splits,
    check_training_classes,
)
from drcl.data.zero_shot import choose_unseen, hold_out
from drcl.errors import DrclError


def prepare_dataset(params: Params, *, out_dir: str | Path,
                    cache_dir: str | Path | None = None) -> Manifest:
    """Step `prepare`: import `params.data`'s source, validate it, split it (by `params.seed`)
    if it has no split, and save it to `out_dir` atomically."""
    data, seed = params.data, params.seed
    reference = None
    if data.dvc is not None:
        from drcl.data.sources.uci_mfeat import resolve_cache_dir
        from drcl.data.versioned import fetch, resolve

        reference = resolve(data.dvc.repo, data.dvc.commit or data.dvc.rev,
                            data.path.as_posix())
        reference = replace(reference, rev=data.dvc.rev)  # record the branch, not only the pin
        local = fetch(reference, resolve_cache_dir(cache_dir))
        data = data.model_copy(update={"path": local, "dvc": None})
    imported = _select_modalities(import_source(data, cache_dir=cache_dir), data.modalities)
    check_imported(imported)
    labels, num_classes, multi_label = _labels(imported)
    _check_every_class_occurs(imported, labels, num_classes)
    fractions = data.split.model_dump()
    shared = _shared_split(imported, labels, fractions=fractions, seed=seed)
    modalities: dict[str, ModalityData] = {}
    for modality, parts in imported.modalities.items():
        if UNSPLIT in parts:
            features = parts[UNSPLIT].features.astype(np.float32)
            mod_labels = labels[modality][UNSPLIT]
            ids = _ids(parts[UNSPLIT], default=lambda rows: [str(r) for r in range(rows)])
            index = shared if shared is not None else stratified_split(
                label_strata(mod_labels), fractions=fractions, seed=seed)
            splits = {s: Split(features[index[s]], mod_labels[index[s]], ids[index[s]])
                      for s in SPLITS}
        else:
            splits = {s: Split(parts[s].features.astype(np.float32), labels[modality][s],
                               _ids(parts[s], default=lambda rows, s=s: [f"{s}/{r}"
                                                                           for r in range(rows)]))
                      for s in SPLITS}
        modalities[modality] = ModalityData(name=modality, **splits)
    check_splits(modalities)
    check_ids(modalities, where={m: _ids_at(parts) for m, parts in imported.modalities.items()})
    check_training_classes(modalities)
    check_shared_ids_agree(modalities, [m for m, parts in imported.modalities.items()
                                        if all(p.ids is not None for p in parts.values())])
    classes = imported.classes or [str(c) for c in range(num_classes)]
    paired = _paired(imported, modalities)
    check_noise(data.noise, name=imported.name, paired=paired, multi_label=multi_label)
    modalities, clean, noise = corrupt(modalities, data.noise, seed=seed,
                                       multi_label=multi_label, num_classes=num_classes)
    unknown = sorted(set(data.class_text) - set(classes))
    if unknown:
        raise DrclError(f"data.class_text: {imported.name} has no class {unknown[0]!r}; its "
                        f"classes are {', '.join(classes)}")
    unseen = choose_unseen(classes, data, seed=seed, name=imported.name)
    modalities = hold_out(modalities, unseen)
    return save_dataset(out_dir, name=imported.name, classes=classes, multi_label=multi_label,
                        modalities=modalities, paired=paired, extractors=imported.extractors,
                        source=reference.as_dict() if reference else None, noise=noise,
                        clean_labels=clean, unseen=unseen, class_text=data.class_text)


def _ids(part: RawPart, *, default: Callable[[int], list[str]]) -> np.ndarray:
    """The part's ids as strings, or the default naming of its rows."""
    rows = part.features.shape[0]
    return np.asarray(default(rows) if part.ids is None else part.ids.astype(np.str_),
                      dtype=np.str_)


def _ids_at(parts: dict[str, RawPart]) -> str:
    """Where a modality's ids come from, for messages."""
    named = [p.ids_at for p in parts.values() if p.ids is not None]
    return ", ".join(named) if named else "the row numbers"


def _paired(imported: ImportedDataset, modalities: dict[str, ModalityData]) -> bool:
    """What the source says, else whether named items recur across modalities."""
    if imported.paired is not None:
        return imported.paired
    named = [m for m, parts in imported.modalities.items()
             if all(p.ids is not None for p in parts.values())]
    seen: set[str] = set()
    for modality in named:
        ids = set(np.concatenate([modalities[modality].split(s).ids for s in SPLITS]).tolist())
        if seen & ids:
            return True
        seen |= ids
    return False


def _check_every_class_occurs(imported: ImportedDataset,
                              labels: dict[str, dict[str, np.ndarray]], num_classes: int) -> None:
    """A class with no item in any split or modality is an error, not a warning: it still gets
    a column of the prior and of every score, and it usually means the ids were misread (labels
    1..9 and 99, say, taken as 100 classes)."""
    counts = sum(matrix.sum(axis=0) for parts in labels.values() for matrix in parts.values())
    empty = np.flatnonzero(np.asarray(counts) == 0)
    if empty.size:
        names = imported.classes or [str(c) for c in range(num_classes)]
        shown = ", ".join(names[c] for c in empty[:8]) + (" ..." if empty.size > 8 else "")
        raise DrclError(f"{imported.name}: {empty.size} of {num_classes} classes occur in no "
                        f"split of any modality ({shown}); labels must use every class, or the "
                        "classes array must list only the classes used")


def _select_modalities(imported: ImportedDataset, wanted: list[str] | None) -> ImportedDataset:
    """Keep the modalities named in ``data.modalities`` (all when null), in that order."""
    if wanted is None:
        return imported
    missing = [m for m in wanted if m not in imported.modalities]
    if missing:
        raise DrclError(f"data.modalities [{', '.join(wanted)}] names {', '.join(missing)}, "
                        f"which {imported.name} lacks (it has {', '.join(imported.modalities)})")
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
