"""Wikipedia, the original SVCL release (Rasiwasia et al., ACM MM 2010), from its folder.

``raw_features.mat`` holds 128-bin SIFT bag-of-words image features (``I_tr``, ``I_te``) and
10-topic LDA text features (``T_tr``, ``T_te``); row i of each describes line i of
``trainset_txt_img_cat.list`` / ``testset_txt_img_cat.list`` (text id, image id, category 1..10),
whose categories are named by ``categories.list``. The 2173 training rows are the train split; of
the 693 test rows the first 231 are validation and the remaining 462 test (the DRCL protocol).
An item is named by its text id (the article section) in both modalities: the pair is one item.
The raw texts in ``texts/<text id>.xml`` can be embedded instead of LDA by the extract stage
(manifest format ``wikipedia_svcl``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drcl.config import DataParams
from drcl.data.sources import ImportedDataset, RawPart
from drcl.data.sources.benchmark import cut
from drcl.data.sources.matfile import read_arrays
from drcl.errors import DrclError

NAME = "wikipedia_svcl"
FEATURES = "raw_features.mat"
LISTS = {"train": "trainset_txt_img_cat.list", "test": "testset_txt_img_cat.list"}
CATEGORIES = "categories.list"
TEXTS = "texts"
VIEWS = {"image": "I", "text": "T"}
VALIDATION_ROWS = 231
TEXT_BODY = re.compile(r"<text>(.*?)</text>", re.DOTALL)


@dataclass(frozen=True)
class Pair:
    """One line of a .list file: an article section, its image, and its category (1-based)."""

    text_id: str
    image_id: str
    category: int


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read the release folder ``params.path``; ``cache_dir`` is unused."""
    assert params.path is not None  # DataParams requires a path for this source
    root = Path(params.path)
    classes = read_categories(root)
    pairs = {split: read_pairs(root, split, len(classes)) for split in LISTS}
    file = root / FEATURES
    arrays = read_arrays(file, [f"{v}_{s}" for v in VIEWS.values() for s in ("tr", "te")],
                         kind="Wikipedia raw_features.mat")
    modalities = {}
    for modality, prefix in VIEWS.items():
        parts = {}
        for split, suffix in (("train", "tr"), ("test", "te")):
            key = f"{prefix}_{suffix}"
            labels = np.array([p.category for p in pairs[split]], dtype=np.int64)
            ids = np.array([p.text_id for p in pairs[split]], dtype=np.str_)
            parts[split] = RawPart(features=arrays[key], labels=labels,
                                   features_at=f"{file}:{key}",
                                   labels_at=f"{root / LISTS[split]} (third column)",
                                   ids=ids, ids_at=f"{root / LISTS[split]} (first column)")
        rows = parts["test"].features.shape[0]
        modalities[modality] = {"train": parts["train"],
                                **cut(parts["test"], {"val": (0, VALIDATION_ROWS),
                                                      "test": (VALIDATION_ROWS, rows)})}
    return ImportedDataset(name=NAME, modalities=modalities, classes=classes, paired=True)


def read_categories(root: Path) -> list[str]:
    """Category names, line k naming category k."""
    names = [line.strip() for line in _lines(root / CATEGORIES) if line.strip()]
    if not names or len(set(names)) != len(names):
        raise DrclError(f"{root / CATEGORIES}: expected one unique category name per line")
    return names


def read_pairs(root: Path, split: str, num_classes: int) -> list[Pair]:
    """The rows of one .list file, in file order."""
    path = root / LISTS[split]
    pairs = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 3 or not fields[2].strip().isdigit() \
                or not 1 <= int(fields[2]) <= num_classes:
            raise DrclError(f"{path}:{number}: expected 'text id<TAB>image id<TAB>category "
                            f"1..{num_classes}', found {line.strip()!r}")
        pairs.append(Pair(fields[0].strip(), fields[1].strip(), int(fields[2])))
    return pairs


def text_path(root: Path, pair: Pair) -> Path:
    return root / TEXTS / f"{pair.text_id}.xml"


def read_text(path: Path) -> str:
    """The article body between <text> and </text> ('' when the file has none).

    The files hold a few invalid UTF-8 bytes, replaced rather than refused.
    """
    raw = path.read_bytes().decode("utf-8", errors="replace")
    match = TEXT_BODY.search(raw)
    return match.group(1).strip() if match else ""


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DrclError(f"{path}: file of the Wikipedia release not found (is data.path the "
                        "release folder?)")
    return path.read_text(encoding="utf-8").splitlines()
