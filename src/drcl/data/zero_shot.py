"""Zero-shot retrieval's protocol: classes held out of training, kept in the test split.

`prepare` removes every item of an unseen class (for multi-label data: every item with an unseen
label) from the training and validation splits of every modality, so nothing of those classes
reaches training, the choice of standardisation, model selection or promotion's gate; the test
split keeps all classes, and `evaluate` reports unseen classes only (the zero-shot figure), seen
classes only and all classes (generalised zero-shot). The label matrices keep one column per
class of the data set; `training_view` narrows training and validation labels to the seen
columns, which is the label space the prior W covers.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from drcl.config import DataParams
from drcl.data.dataset import ModalityData, Split
from drcl.errors import DrclError

HELD_OUT_SPLITS = ("train", "val")
_STREAM = 0x7A73686F  # keeps the class draw apart from every other use of the seed


def choose_unseen(classes: list[str], data: DataParams, *, seed: int, name: str) -> list[int]:
    """The held-out class ids, ascending: named in `data.unseen_classes`, or
    `data.unseen_class_count` of them drawn with `seed`; empty when neither is set."""
    if data.unseen_classes is not None:
        unknown = [c for c in data.unseen_classes if c not in classes]
        if unknown:
            raise DrclError(f"data.unseen_classes: {name} has no class {unknown[0]!r}; its "
                            f"classes are {', '.join(classes)}")
        chosen = sorted(classes.index(c) for c in data.unseen_classes)
        key = "data.unseen_classes"
    elif data.unseen_class_count is not None:
        count = data.unseen_class_count
        if count >= len(classes):
            chosen = list(range(len(classes)))
        else:
            rng = np.random.default_rng([seed, _STREAM])
            chosen = sorted(int(c) for c in rng.choice(len(classes), size=count, replace=False))
        key = "data.unseen_class_count"
    else:
        return []
    seen = len(classes) - len(chosen)
    if seen < 2:
        raise DrclError(f"{key}: holding out {len(chosen)} of {name}'s {len(classes)} classes "
                        f"leaves {seen} seen; training needs at least two")
    return chosen


def hold_out(modalities: dict[str, ModalityData], unseen: list[int]) -> dict[str, ModalityData]:
    """Every modality without the training and validation items that carry an unseen label."""
    if not unseen:
        return modalities
    out = {}
    for name, data in modalities.items():
        parts = {}
        for split in HELD_OUT_SPLITS:
            part = data.split(split)
            keep = part.labels[:, unseen].sum(axis=1) == 0
            parts[split] = Split(part.features[keep], part.labels[keep],
                                 None if part.ids is None else part.ids[keep])
            if not keep.any():
                raise DrclError(f"data.unseen_classes: modality {name!r} has no {split} item "
                                "of a seen class left")
        out[name] = replace(data, **parts, unseen=tuple(unseen))
    return out


def seen_classes(num_classes: int, unseen: tuple[int, ...] | list[int]) -> np.ndarray:
    """The class ids that training sees, ascending."""
    return np.setdiff1d(np.arange(num_classes), np.asarray(unseen, dtype=np.int64))


def training_view(data: ModalityData) -> ModalityData:
    """`data` with its training and validation labels narrowed to the seen classes' columns
    (the test split, which only evaluation reads, keeps every class). The view holds nothing
    back any more, so taking it twice changes nothing."""
    if not data.unseen:
        return data
    seen = seen_classes(data.train.labels.shape[1], data.unseen)
    parts = {s: replace(data.split(s), labels=np.ascontiguousarray(data.split(s).labels[:, seen]))
             for s in HELD_OUT_SPLITS}
    return replace(data, **parts, unseen=())


def class_subset(labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose every label lies in `classes` (and that have one), and their labels narrowed
    to those columns: the test items of one evaluation set."""
    inside = labels[:, classes].sum(axis=1)
    rows = np.flatnonzero((inside > 0) & (inside == labels.sum(axis=1)))
    return rows, np.ascontiguousarray(labels[np.ix_(rows, classes)])
