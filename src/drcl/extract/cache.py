"""Features of single items on disk, keyed by extractor fingerprint and content hash.

Re-running the step after items were added, or after a failed run, embeds only what is not here
yet. Each entry is written to a temporary file and renamed, so a killed run leaves no torn entry.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from drcl.array_files import READ_ERRORS
from drcl.data.sources.uci_mfeat import resolve_cache_dir


class FeatureCache:
    """``<cache>/features/<fingerprint>/<hash[:2]>/<hash>.npy``."""

    def __init__(self, cache_dir: str | Path | None, fingerprint: str) -> None:
        self.folder = resolve_cache_dir(cache_dir) / "features" / fingerprint

    def _file(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        try:
            return np.load(self._file(digest), allow_pickle=False)
        except READ_ERRORS:  # absent, or unreadable: computed again
            return None

    def put(self, digest: str, vector: np.ndarray) -> None:
        target = self._file(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npy", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(vector, dtype=np.float32))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
