"""The on-disk feature data set: one folder, a manifest and one .npz file per modality.

Layout of a data set folder::

    manifest.json        name, classes, multi_label, paired, and per modality: dim, split
                         sizes, extractor, sha256
    <modality>.npz       train.features, train.labels, train.ids, val.features, ... test.ids,
                         classes, multi_label (so one modality's file stands alone)

Features are float32 ``(n, dim)``. Labels are int64 class ids ``(n,)`` for single-label data and
uint8 multi-hot ``(n, C)`` for multi-label data. In memory, labels are always a float32 one-hot or
multi-hot matrix, which is what the losses and the metrics consume. Ids are strings naming each
item, unique within a modality; when the manifest says ``paired``, one id in several modalities
is one item seen in each. Modalities need not have equal sizes or paired rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drcl.array_files import load_npz
from drcl.atomic import atomic_path, write_json
from drcl.errors import DrclError

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "manifest.json"
SOURCE_SUFFIX = ".source.json"
"""Beside the data set folder (`data/prepared.source.json`): where the data came from. Kept out
of the folder so that a new commit of the data repository that changes no data leaves the data
set's bytes, and so everything keyed by them, unchanged."""
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Split:
    """Features ``(n, dim)`` float32, labels ``(n, C)`` float32 one-hot or multi-hot, and the
    items' ids ``(n,)`` str (None: not named; a saved data set names them ``<split>/<row>``)."""

    features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def item_ids(self, split: str) -> np.ndarray:
        """The ids, or ``<split>/<row>`` when the items are not named."""
        if self.ids is not None:
            return np.asarray(self.ids, dtype=np.str_)
        return np.asarray([f"{split}/{row}" for row in range(len(self))], dtype=np.str_)


@dataclass(frozen=True)
class ModalityData:
    """One modality's three splits."""

    name: str
    train: Split
    val: Split
    test: Split
    unseen: tuple[int, ...] = ()
    """Class ids held out of training and validation (drcl.data.zero_shot)."""

    @property
    def dim(self) -> int:
        return int(self.train.features.shape[1])

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass(frozen=True)
class ModalityInfo:
    """``extractor`` names what made the features from raw items ('precomputed': not drcl)."""

    dim: int
    sizes: dict[str, int]
    sha256: str
    extractor: str = "precomputed"


@dataclass(frozen=True)
class Manifest:
    """What a data set holds, readable without loading any features."""

    name: str
    classes: list[str]
    multi_label: bool
    modalities: dict[str, ModalityInfo] = field(default_factory=dict)
    paired: bool = False
    source: dict | None = None
    """Where the data came from when a DVC reference named it: repo, rev, path, commit and
    DVC content hash (drcl.data.versioned). Stored beside the folder (`source_file`)."""
    noise: dict | None = None
    """Label noise injected by `prepare` (drcl.data.noise): kind, rate, scope and the rate
    realised per modality and split; None when there is none."""
    unseen_classes: list[str] = field(default_factory=list)
    """Classes held out of training and validation: test-only (drcl.data.zero_shot)."""
    class_text: dict[str, str] = field(default_factory=dict)
    """A class's description where it is more than its name (the semantic prior's input)."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def unseen_ids(self) -> list[int]:
        return [self.classes.index(c) for c in self.unseen_classes]

    def class_texts(self) -> list[str]:
        """One text per class: its description, else its name."""
        return [self.class_text.get(c, c) for c in self.classes]

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "classes": self.classes,
            "multi_label": self.multi_label,
            "paired": self.paired,
            "noise": self.noise,
            "unseen_classes": self.unseen_classes,
            "class_text": self.class_text,
            "modalities": {
                m: {"dim": i.dim, "sizes": i.sizes, "extractor": i.extractor, "sha256": i.sha256}
                for m, i in self.modalities.items()
            },
        }


def source_file(data_dir: str | Path) -> Path:
    """Where the provenance of the data set in `data_dir` is kept."""
    data_dir = Path(data_dir)
    return data_dir.with_name(data_dir.name + SOURCE_SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encode_labels(labels: np.ndarray, multi_label: bool) -> np.ndarray:
    if multi_label:
        return (labels > 0).astype(np.uint8)
    return labels.argmax(axis=1).astype(np.int64)


def _decode_labels(stored: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    if stored.ndim == 1:
        if stored.size and (stored.min() < 0 or stored.max() >= num_classes):
            raise DrclError(f"{where}: class ids must lie in [0, {num_classes - 1}]")
        onehot = np.zeros((stored.shape[0], num_classes), dtype=np.float32)
        onehot[np.arange(stored.shape[0]), stored] = 1.0
        return onehot
    if stored.ndim == 2 and stored.shape[1] == num_classes:
        return stored.astype(np.float32)
    raise DrclError(f"{where}: labels of shape {stored.shape} do not match {num_classes} classes")


def save_dataset(
    path: str | Path,
    *,
    name: str,
    classes: list[str],
    multi_label: bool,
    modalities: dict[str, ModalityData],
    paired: bool = False,
    extractors: dict[str, str] | None = None,
    source: dict | None = None,
    noise: dict | None = None,
    clean_labels: dict[str, dict[str, np.ndarray]] | None = None,
    unseen: list[int] | None = None,
    class_text: dict[str, str] | None = None,
) -> Manifest:
    """Write a data set folder atomically and return its manifest; `clean_labels` (the labels
    noise replaced, per modality and split) are stored as `<split>.clean_labels`, `unseen`
    (held-out class ids) in every modality's file."""
    infos: dict[str, ModalityInfo] = {}
    with atomic_path(path) as tmp:
        tmp.mkdir()
        for mod_name, mod in modalities.items():
            arrays: dict[str, np.ndarray] = {
                "classes": np.asarray(list(classes), dtype=np.str_),
                "multi_label": np.asarray(multi_label),
            }
            if unseen:
                arrays["unseen_classes"] = np.asarray(unseen, dtype=np.int64)
            for split in SPLITS:
                part = mod.split(split)
                arrays[f"{split}.features"] = np.ascontiguousarray(part.features, np.float32)
                arrays[f"{split}.labels"] = _encode_labels(part.labels, multi_label)
                arrays[f"{split}.ids"] = part.item_ids(split)
            for split, labels in (clean_labels or {}).get(mod_name, {}).items():
                arrays[f"{split}.clean_labels"] = _encode_labels(labels, multi_label)
            file = tmp / f"{mod_name}.npz"
            with file.open("wb") as fh:
                np.savez(fh, **arrays)
            infos[mod_name] = ModalityInfo(
                dim=mod.dim,
                sizes={s: len(mod.split(s)) for s in SPLITS},
                sha256=file_sha256(file),
                extractor=(extractors or {}).get(mod_name, "precomputed"),
            )
        manifest = Manifest(name=name, classes=list(classes), multi_label=multi_label,
                            modalities=infos, paired=paired, source=source,
                            noise=None if not noise or noise.get("kind") == "none" else noise,
                            unseen_classes=[classes[c] for c in unseen or []],
                            class_text=dict(class_text or {}))
        write_json(tmp / MANIFEST, manifest.to_dict())
    write_json(source_file(path), source)
    return manifest


def load_manifest(path: str | Path) -> Manifest:
    """Read ``manifest.json`` of a data set folder."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise DrclError(f"{file}: no data set manifest here (run `drcl prepare` first)")
    try:
        raw = json.loads(file.read_text())
        beside = source_file(path)
        source = json.loads(beside.read_text()) if beside.is_file() else raw.get("source")
        return Manifest(
            name=raw["name"],
            classes=list(raw["classes"]),
            multi_label=bool(raw["multi_label"]),
            paired=bool(raw.get("paired", False)),
            source=source,
            noise=raw.get("noise"),
            unseen_classes=list(raw.get("unseen_classes") or []),
            class_text=dict(raw.get("class_text") or {}),
            modalities={
                m: ModalityInfo(dim=int(i["dim"]), sizes={k: int(v) for k, v in i["sizes"].items()},
                                sha256=str(i["sha256"]),
                                extractor=str(i.get("extractor", "precomputed")))
                for m, i in raw["modalities"].items()
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DrclError(f"{file}: not a valid data set manifest ({exc!r})") from exc


def load_modality(path: str | Path, modality: str, *, verify: bool = True,
                  splits: tuple[str, ...] = SPLITS) -> ModalityData:
    """Load one modality's splits from its own file.

    With `verify`, the file is checked against the manifest's list and checksum; without it only
    `<modality>.npz` is read, so a stage that trains one modality depends on that file alone.
    Only `splits` are read (a Kubeflow task holds just the splits it uses); the others come
    back with no rows.
    """
    path = Path(path)
    file = path / f"{modality}.npz"
    if verify:
        manifest = load_manifest(path)
        if modality not in manifest.modalities:
            raise DrclError(
                f"{path / MANIFEST}: no modality {modality!r}; it has {sorted(manifest.modalities)}"
            )
        if not file.is_file():
            raise DrclError(f"{file}: file missing from the data set")
        if file_sha256(file) != manifest.modalities[modality].sha256:
            raise DrclError(f"{file}: checksum differs from {MANIFEST}; the data set was modified")
    elif not file.is_file():
        raise DrclError(f"{file}: no such modality file (run `drcl prepare` first)")
    expected = ["classes", *(f"{s}.{kind}" for s in splits for kind in ("features", "labels"))]
    # only what training reads: the clean labels kept beside noisy ones stay on disk
    names, npz = load_npz(file, [*expected, *(f"{s}.ids" for s in splits), "unseen_classes"],
                          what="a prepared modality file")
    missing = [key for key in expected if key not in npz]
    if missing:
        raise DrclError(f"{file}: key {missing[0]!r} missing; found {sorted(names)} (run "
                        "`drcl prepare` again)")
    num_classes = len(npz["classes"])
    dim = next((npz[f"{s}.features"].shape[1] for s in splits), 0)
    loaded = {}
    for split in SPLITS:
        if split not in splits:
            loaded[split] = Split(features=np.zeros((0, dim), np.float32),
                                  labels=np.zeros((0, num_classes), np.float32),
                                  ids=np.zeros(0, np.str_))
            continue
        where = f"{file}:{split}.labels"
        ids_key = f"{split}.ids"
        loaded[split] = Split(
            features=npz[f"{split}.features"].astype(np.float32, copy=False),
            labels=_decode_labels(npz[f"{split}.labels"], num_classes, where),
            ids=npz[ids_key].astype(np.str_) if ids_key in npz else None,
        )
    unseen = tuple(int(c) for c in npz["unseen_classes"]) if "unseen_classes" in npz else ()
    if any(not 0 <= c < num_classes for c in unseen):
        raise DrclError(f"{file}:unseen_classes: class ids must lie in [0, {num_classes - 1}]")
    return ModalityData(name=modality, **loaded, unseen=unseen)


def dataset_checksum(manifest: Manifest) -> str:
    """One hash for the whole data set, from the per-modality file hashes."""
    joined = "\n".join(f"{m}:{i.sha256}" for m, i in sorted(manifest.modalities.items()))
    return hashlib.sha256(joined.encode()).hexdigest()
