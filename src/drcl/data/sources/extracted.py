"""The extract stage's output (``data/extracted`` unless ``data.path`` names another folder).

``features.npz`` is read as an npz source; the data set takes its name from ``extraction.json``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from drcl.config import DataParams
from drcl.data.sources import ImportedDataset
from drcl.data.sources.npz import read_npz
from drcl.errors import DrclError
from drcl.extract import EXTRACTED_DIR, FEATURES_FILE, REPORT_FILE


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Read the folder; ``cache_dir`` is unused."""
    folder = Path(params.path) if params.path is not None else EXTRACTED_DIR
    report = folder / REPORT_FILE
    if not report.is_file():
        raise DrclError(f"{report}: no extraction here (run `drcl extract` first)")
    try:
        info = json.loads(report.read_text())
        if info["manifest"] is None:
            raise DrclError(f"{report}: the extract stage ran with extract.manifest null; set "
                            "extract.manifest to use data.source 'extracted'")
        name = str(info["name"])
        extractors = {str(m): str(e) for m, e in info["extractors"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DrclError(f"{report}: not a valid extraction report ({exc!r})") from None
    return replace(read_npz(folder / FEATURES_FILE), name=name, extractors=extractors)
