"""Helpers for end-to-end runs: a small multi-modal .npz source, params, subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "seed": 0, "device": "cpu", "precision": "fp32",  # the same figures on any CPU
    "model": {"hidden_dim": 32, "common_dim": 16},
    "train": {"epochs": 8, "batch_size": 32, "lr": 3e-3},
    "tracking": {"enabled": False},  # the tracking tests switch it on
}


def write_features(path: Path, *, classes: int = 4, seed: int = 0) -> Path:
    """Three unpaired modalities of different sizes whose features carry the class."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, dim, n in (("image", 12, 80), ("text", 6, 60), ("audio", 9, 50)):
        centers = rng.normal(size=(classes, dim))
        for split, size in (("train", n), ("val", n // 4), ("test", n // 4)):
            ids = np.arange(size) % classes
            arrays[f"{name}.{split}.features"] = 3 * centers[ids] + rng.normal(size=(size, dim))
            arrays[f"{name}.{split}.labels"] = ids + 1
    np.savez(path, **arrays)
    return path


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def write_params(folder: Path, **groups: dict) -> Path:
    """The project's params.yaml with the fast settings above, then `groups`, merged in."""
    params = _merge(_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), FAST), groups)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None):
    """Run a command with the test interpreter's scripts first on PATH."""
    full_env = {**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})}
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)


def copy_pipeline(dest: Path) -> None:
    """The project's dvc.yaml and the library code its stages depend on."""
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(ROOT / "src" / "drcl", dest / "src" / "drcl",
                    ignore=shutil.ignore_patterns("__pycache__"))


def validation_map(root: Path) -> float:
    """The workspace encoders' mean validation MAP@all, computed afresh."""
    import torch

    from drcl.data.dataset import load_manifest, load_modality
    from drcl.layout import Layout
    from drcl.metrics import direction_report
    from drcl.model import embed, load_encoder
    from drcl.runtime import compute_dtype

    layout = Layout(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    dtype = compute_dtype(params["precision"], torch.device("cpu"))
    embeddings, labels = {}, {}
    for m in load_manifest(layout.data).modalities:
        val = load_modality(layout.data, m, splits=("val",)).val
        embeddings[m] = embed(load_encoder(layout.encoder(m), compute_dtype=dtype), val.features)
        labels[m] = val.labels
    return direction_report(embeddings, labels, k=50, multi_label=False)[0]["map_all"]["mean"]
