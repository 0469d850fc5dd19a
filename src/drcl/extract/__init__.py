"""Feature extraction: raw images and texts listed in a manifest become a feature data set.

The step (`drcl extract`, the DVC stage `extract`) writes ``data/extracted/``: ``features.npz`` in
the npz source's format and ``extraction.json`` (name, classes, extractors, sizes, skipped items),
which the ``extracted`` data source hands to `prepare`. This package imports no model code until
there is something to embed, so the stage costs nothing for the other sources.
"""

from pathlib import Path

EXTRACTED_DIR = Path("data") / "extracted"
FEATURES_FILE = "features.npz"
REPORT_FILE = "extraction.json"
