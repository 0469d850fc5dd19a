"""Import a generic .npz file with keys ``<modality>.<split>.features`` / ``.labels`` / ``.ids``.

Every modality found must have all three splits; an optional ``classes`` key (array of str) names
the classes, and optional ``<modality>.<split>.ids`` (str or int, unique within a modality) name
the items. Modalities may differ in size and need not be paired; items that share an id across
modalities are one item seen in each. The data set takes the file's stem as its name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drcl.array_files import load_npz
from drcl.config import DataParams
from drcl.data.dataset import SPLITS
from drcl.data.sources import ImportedDataset, RawPart
from drcl.errors import DrclError

CLASSES_KEY = "classes"
KINDS = ("features", "labels")
IDS = "ids"


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read ``params.path``; ``cache_dir`` is unused (the file is local)."""
    assert params.path is not None  # DataParams requires a path for this source
    return read_npz(params.path)


def read_npz(path: str | Path) -> ImportedDataset:
    """Load every array of the file (allow_pickle=False) and group them by modality and split."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: npz file not found")
    keys, arrays = load_npz(path, what="an .npz feature file")

    modalities = _modality_names(path, keys)
    if not modalities:
        raise DrclError(f"{path}: no key of the form <modality>.<split>.features; "
                        f"it has {sorted(keys)}")
    parts: dict[str, dict[str, RawPart]] = {}
    for modality in modalities:
        parts[modality] = {}
        for split in SPLITS:
            feat_key, label_key = (f"{modality}.{split}.{kind}" for kind in KINDS)
            for key in (feat_key, label_key):
                if key not in arrays:
                    raise DrclError(f"{path}: missing key {key!r}; it has {sorted(keys)}")
            ids_key = f"{modality}.{split}.{IDS}"
            parts[modality][split] = RawPart(
                features=arrays[feat_key], labels=arrays[label_key],
                features_at=f"{path}:{feat_key}", labels_at=f"{path}:{label_key}",
                ids=arrays.get(ids_key), ids_at=f"{path}:{ids_key}",
            )
    classes = _class_names(path, arrays[CLASSES_KEY]) if CLASSES_KEY in arrays else None
    return ImportedDataset(name=path.stem, modalities=parts, classes=classes)


def _modality_names(path: Path, keys: list[str]) -> list[str]:
    """Modalities in file order; any key that fits no pattern is refused, as it is likely a typo."""
    names: list[str] = []
    for key in keys:
        if key == CLASSES_KEY:
            continue
        modality, _, rest = key.partition(".")
        split, _, kind = rest.partition(".")
        if not modality or split not in SPLITS or kind not in (*KINDS, IDS):
            raise DrclError(
                f"{path}: unexpected key {key!r}; expected <modality>.<split>.features, "
                f".labels or .ids with split in {', '.join(SPLITS)}, or {CLASSES_KEY!r}"
            )
        if modality not in names:
            names.append(modality)
    return names


def _class_names(path: Path, raw: np.ndarray) -> list[str]:
    if raw.ndim != 1 or raw.dtype.kind != "U":
        raise DrclError(f"{path}:{CLASSES_KEY}: expected a 1-D array of str, got "
                        f"{raw.dtype} of shape {raw.shape}")
    names = [str(c) for c in raw]
    if not names or len(set(names)) != len(names):
        raise DrclError(f"{path}:{CLASSES_KEY}: class names must be non-empty and unique")
    return names
