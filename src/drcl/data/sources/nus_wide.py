"""NUS-WIDE (10-class single-label subset) as an HDF5 ``.h5py`` file with its own split.

Keys ``{train,valid,test}_imgs_deep`` (image), ``{train,valid,test}_texts`` (text) and
``{train,valid,test}_imgs_labels``, shared by both views; ``valid`` is the validation split.
"""

from __future__ import annotations

from pathlib import Path

from drcl.config import DataParams
from drcl.data.sources import ImportedDataset
from drcl.data.sources.benchmark import part
from drcl.data.sources.matfile import read_arrays

NAME = "nus_wide"
SPLITS = {"train": "train", "val": "valid", "test": "test"}
VIEWS = {"image": "imgs_deep", "text": "texts"}
KEYS = [f"{prefix}_{suffix}" for prefix in SPLITS.values()
        for suffix in (*VIEWS.values(), "imgs_labels")]


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read ``params.path`` (HDF5, or a .mat file with the same keys); ``cache_dir`` is unused."""
    assert params.path is not None  # DataParams requires a path for this source
    path = Path(params.path)
    arrays = read_arrays(path, KEYS, kind="NUS-WIDE .h5py")
    modalities = {
        modality: {split: part(path, arrays[f"{prefix}_{suffix}"], arrays[f"{prefix}_imgs_labels"],
                               features_key=f"{prefix}_{suffix}",
                               labels_key=f"{prefix}_imgs_labels")
                   for split, prefix in SPLITS.items()}
        for modality, suffix in VIEWS.items()
    }
    return ImportedDataset(name=NAME, modalities=modalities, paired=True)  # rows pair up
