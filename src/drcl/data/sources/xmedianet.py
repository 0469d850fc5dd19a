"""XMediaNet (200 classes, 5 media) as a ``.mat`` file of cell arrays with its own split.

``train``, ``valid`` and ``test`` are 1 x 5 cell arrays of feature matrices, ``train_labels``,
``valid_labels`` and ``test_labels`` 1 x 5 cell arrays of their labels. The cells start with
image and text; the other three follow the data set's own listing of its media.
"""

from __future__ import annotations

from pathlib import Path

from drcl.config import DataParams
from drcl.data.sources import ImportedDataset, RawPart
from drcl.data.sources.benchmark import cells, per_item
from drcl.data.sources.matfile import read_arrays

NAME = "xmedianet"
MEDIA = ("image", "text", "video", "audio", "3d")
SPLITS = {"train": "train", "val": "valid", "test": "test"}
KEYS = [k for prefix in SPLITS.values() for k in (prefix, f"{prefix}_labels")]


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read ``params.path`` (MATLAB v5 or v7.3); ``cache_dir`` is unused."""
    assert params.path is not None  # DataParams requires a path for this source
    path = Path(params.path)
    arrays = read_arrays(path, KEYS, kind="XMediaNet .mat")
    modalities: dict[str, dict[str, RawPart]] = {m: {} for m in MEDIA}
    for split, prefix in SPLITS.items():
        features = cells(arrays[prefix], len(MEDIA), f"{path}:{prefix}")
        labels = cells(arrays[f"{prefix}_labels"], len(MEDIA), f"{path}:{prefix}_labels")
        for i, modality in enumerate(MEDIA):
            modalities[modality][split] = RawPart(
                features=features[i], labels=per_item(labels[i]),
                features_at=f"{path}:{prefix}{{{i + 1}}}",
                labels_at=f"{path}:{prefix}_labels{{{i + 1}}}")
    return ImportedDataset(name=NAME, modalities=modalities)
