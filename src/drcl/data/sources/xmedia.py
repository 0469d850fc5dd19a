"""XMedia (20 classes, 5 media) as ``XMediaFeatures.mat``.

Each medium has its own training and test arrays and 1-based category labels. The protocol cuts
every test array in two: the first half is the test split, the second half the validation split.
"""

from __future__ import annotations

from pathlib import Path

from drcl.config import DataParams
from drcl.data.sources import ImportedDataset
from drcl.data.sources.benchmark import cut, part
from drcl.data.sources.matfile import read_arrays

NAME = "xmedia"
# modality: (training features, test features, training labels, test labels)
MEDIA = {
    "image": ("I_tr_CNN", "I_te_CNN", "trImgCat", "teImgCat"),
    "text": ("T_tr_BOW", "T_te_BOW", "trTxtCat", "teTxtCat"),
    "audio": ("A_tr", "A_te", "trAudCat", "teAudCat"),
    "3d": ("d3_tr", "d3_te", "tr3dCat", "te3dCat"),
    "video": ("V_tr_CNN", "V_te_CNN", "trVidCat", "teVidCat"),
}
KEYS = [key for keys in MEDIA.values() for key in keys]


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read ``params.path`` (MATLAB v5 or v7.3); ``cache_dir`` is unused."""
    assert params.path is not None  # DataParams requires a path for this source
    path = Path(params.path)
    arrays = read_arrays(path, KEYS, kind="XMedia XMediaFeatures.mat")
    modalities = {}
    for modality, (tr, te, tr_lab, te_lab) in MEDIA.items():
        train = part(path, arrays[tr], arrays[tr_lab], features_key=tr, labels_key=tr_lab)
        test = part(path, arrays[te], arrays[te_lab], features_key=te, labels_key=te_lab)
        rows = test.features.shape[0]
        modalities[modality] = {"train": train,
                                **cut(test, {"test": (0, rows // 2), "val": (rows // 2, rows)})}
    return ImportedDataset(name=NAME, modalities=modalities)
