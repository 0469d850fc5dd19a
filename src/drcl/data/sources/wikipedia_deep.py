"""Wikipedia as the DRCL line of work ships it: ``wiki.mat`` with VGG-19 image features and
Doc2Vec text features of the 2866 article/image pairs.

Both views share the image labels. The file's 693 test rows are cut in two: the first 231 are the
validation split, the remaining 462 the test split (the published protocol).
"""

from __future__ import annotations

from pathlib import Path

from drcl.config import DataParams
from drcl.data.sources import ImportedDataset
from drcl.data.sources.benchmark import cut, part
from drcl.data.sources.matfile import read_arrays

NAME = "wikipedia_deep"
VIEWS = {"image": "imgs_deep", "text": "texts_doc"}
VALIDATION_ROWS = 231
KEYS = [f"{split}_{suffix}" for split in ("train", "test")
        for suffix in (*VIEWS.values(), "imgs_labels")]


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read ``params.path`` (wiki.mat, MATLAB v5 or v7.3); ``cache_dir`` is unused."""
    assert params.path is not None  # DataParams requires a path for this source
    path = Path(params.path)
    arrays = read_arrays(path, KEYS, kind="Wikipedia wiki.mat")
    modalities = {}
    for modality, suffix in VIEWS.items():
        train, test = (part(path, arrays[f"{s}_{suffix}"], arrays[f"{s}_imgs_labels"],
                            features_key=f"{s}_{suffix}", labels_key=f"{s}_imgs_labels")
                       for s in ("train", "test"))
        rows = test.features.shape[0]
        modalities[modality] = {"train": train, **cut(test, {"val": (0, VALIDATION_ROWS),
                                                             "test": (VALIDATION_ROWS, rows)})}
    return ImportedDataset(name=NAME, modalities=modalities, paired=True)  # rows pair up
