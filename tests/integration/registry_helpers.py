"""Candidate projects for the registry tests: prepared data, a prior and trained encoders.

Building one takes a second or two; `Projects` builds each kind once per session and copies it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from drcl.config import load_params
from drcl.data.prepare import prepare_dataset
from drcl.layout import Layout
from drcl.stages.prior import fit_prior
from drcl.stages.train import train_modality
from tests.integration.project import write_features, write_params

MODALITIES = ("image", "text", "audio")
LOW_GATE = {"min_mean_map": 0.0, "min_direction_map": 0.0, "min_gain": 0.0}
# how good a candidate is: a strong one trains for a while, a weak one hardly at all
QUALITY = {"strong": {"epochs": 8, "lr": 3e-3}, "weak": {"epochs": 1, "lr": 1e-4}}


def build_project(root: Path, *, quality: str = "strong", modalities: Sequence[str] = MODALITIES,
                  seed: int = 0, train: Sequence[str] | None = None) -> Path:
    """Features, params (orthogonal prior from `seed`, no tracking), data/prepared, the prior and
    the encoders of `train` (default: every modality)."""
    root.mkdir(parents=True, exist_ok=True)
    write_features(root / "features.npz")
    write_project_params(root, quality=quality, modalities=modalities, seed=seed)
    layout = Layout(root)
    params = load_params(root / "params.yaml")
    prepare_dataset(params, out_dir=layout.data)
    fit_prior(params, layout)
    for m in modalities if train is None else train:
        train_modality(params, layout, modality=m)
    return root


def write_project_params(root: Path, *, quality: str = "strong",
                         modalities: Sequence[str] = MODALITIES, seed: int = 0,
                         **groups: dict) -> Path:
    return write_params(root, seed=seed, data={"source": "npz",
                                               "path": str(root / "features.npz"),
                                               "modalities": list(modalities)},
                        prior={"method": "orthogonal"}, train=QUALITY[quality],
                        promotion=groups.pop("promotion", LOW_GATE), **groups)


class Projects:
    """Built projects, each kind once per session, copied into each test's folder."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def copy(self, dest: Path, **kind) -> Path:
        key = "-".join(f"{k}={v}" for k, v in sorted(kind.items())).replace("/", "_")
        source = self.cache / (key or "default")
        if not source.exists():
            build_project(source, **kind)
        shutil.copytree(source, dest)
        # the params name the features by absolute path: point them at the copy
        write_project_params(dest, quality=kind.get("quality", "strong"),
                             modalities=kind.get("modalities", MODALITIES),
                             seed=kind.get("seed", 0))
        return dest


def empty_store(path: Path) -> Path:
    """An MLflow sqlite store with its schema, made once (creating the schema takes seconds)."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path
