"""A data set `drcl prepare` already made (a `data/prepared` folder, e.g. another pipeline's
DVC output): its splits, ids and class names are kept as they are."""

from __future__ import annotations

from pathlib import Path

from drcl.config import DataParams
from drcl.data.dataset import SPLITS, load_manifest, load_modality
from drcl.data.sources import ImportedDataset, RawPart


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read the folder `params.path` (each file checked against its manifest); `cache_dir` is
    unused."""
    assert params.path is not None  # DataParams requires a path for this source
    folder = Path(params.path)
    manifest = load_manifest(folder)
    modalities = {}
    for name in manifest.modalities:
        data = load_modality(folder, name)
        file = folder / f"{name}.npz"
        modalities[name] = {
            split: RawPart(features=data.split(split).features, labels=data.split(split).labels,
                           features_at=f"{file}:{split}.features",
                           labels_at=f"{file}:{split}.labels",
                           ids=data.split(split).item_ids(split), ids_at=f"{file}:{split}.ids")
            for split in SPLITS}
    return ImportedDataset(name=manifest.name, modalities=modalities, classes=manifest.classes,
                           paired=manifest.paired,
                           extractors={m: i.extractor for m, i in manifest.modalities.items()})

