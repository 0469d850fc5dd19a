"""What an importer hands to `prepare`, and the dispatch from ``data.source`` to an importer.

An importer only reads: it returns the arrays as found, with the place each came from, and leaves
all checking, label normalisation and splitting to `prepare`. Adding a source is one module in
this package exposing ``import_dataset(params, *, cache_dir)``, plus its name in
``DataParams.source``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drcl.config import DataParams

UNSPLIT = "all"
"""The part name of a modality whose source has no train/val/test split."""


@dataclass(frozen=True)
class RawPart:
    """Rows as read, before any check; ``*_at`` say where they came from (``file:key``).

    ``ids`` name the rows' items when the source names them (None: `prepare` numbers them).
    """

    features: np.ndarray
    labels: np.ndarray
    features_at: str
    labels_at: str
    ids: np.ndarray | None = None
    ids_at: str = ""


@dataclass(frozen=True)
class ImportedDataset:
    """A source's content: per modality either the parts train/val/test or the single part UNSPLIT.

    ``classes`` is None when the source names no classes ("0".."C-1" are used). ``paired`` says
    whether the modalities describe the same items: True row by row (the field's convention for
    the file; unsplit ones then share one split), None when the items' ids decide (paired where
    an id occurs in several modalities).
    ``extractors`` names what made each modality's features from raw items, when drcl did.
    """

    name: str
    modalities: dict[str, dict[str, RawPart]] = field(default_factory=dict)
    classes: list[str] | None = None
    paired: bool | None = None
    extractors: dict[str, str] = field(default_factory=dict)


def import_source(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Run the importer module named by ``params.source``."""
    module = importlib.import_module(f"{__name__}.{params.source}")
    return module.import_dataset(params, cache_dir=cache_dir)
