"""INRIA-Websearch (100 classes) as a ``.mat`` file with its own split.

Keys ``tr_img``, ``tr_txt``, ``tr_img_lab`` and the same with ``val_`` and ``te_``; the image
labels serve both views.
"""

from __future__ import annotations

from pathlib import Path

from drcl.config import DataParams
from drcl.data.sources import ImportedDataset
from drcl.data.sources.benchmark import part
from drcl.data.sources.matfile import read_arrays

NAME = "inria_websearch"
SPLITS = {"train": "tr", "val": "val", "test": "te"}
VIEWS = {"image": "img", "text": "txt"}
KEYS = [f"{prefix}_{suffix}" for prefix in SPLITS.values() for suffix in ("img", "txt", "img_lab")]


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read ``params.path`` (MATLAB v5 or v7.3); ``cache_dir`` is unused."""
    assert params.path is not None  # DataParams requires a path for this source
    path = Path(params.path)
    arrays = read_arrays(path, KEYS, kind="INRIA-Websearch .mat")
    modalities = {
        modality: {split: part(path, arrays[f"{prefix}_{suffix}"], arrays[f"{prefix}_img_lab"],
                               features_key=f"{prefix}_{suffix}", labels_key=f"{prefix}_img_lab")
                   for split, prefix in SPLITS.items()}
        for modality, suffix in VIEWS.items()
    }
    return ImportedDataset(name=NAME, modalities=modalities, paired=True)  # rows pair up
