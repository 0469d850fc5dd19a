"""Fixtures for the data tests: a small two-modality npz source and a folder-snapshot helper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from drcl.config import DataParams

SIZES = {"image": {"train": 12, "val": 6, "test": 6}, "text": {"train": 9, "val": 4, "test": 5}}
DIMS = {"image": 5, "text": 3}


@pytest.fixture
def npz_arrays() -> dict[str, np.ndarray]:
    """Two modalities of different sizes and widths, 3 classes as 1-based column labels."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for modality, sizes in SIZES.items():
        for split, n in sizes.items():
            arrays[f"{modality}.{split}.features"] = rng.normal(size=(n, DIMS[modality]))
            arrays[f"{modality}.{split}.labels"] = (np.arange(n) % 3 + 1).reshape(n, 1)
    return arrays


@pytest.fixture
def write_npz(tmp_path: Path) -> Callable[..., Path]:
    """Write arrays to ``<tmp>/<name>.npz`` and return the path."""

    def write(arrays: dict[str, np.ndarray], name: str = "toy") -> Path:
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        return path

    return write


@pytest.fixture
def npz_params() -> Callable[[Path], DataParams]:
    return lambda path: DataParams(source="npz", path=path)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to prove a failed step changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def folder_snapshot() -> Callable[[Path], dict[str, bytes]]:
    return snapshot
