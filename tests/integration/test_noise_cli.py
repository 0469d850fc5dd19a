"""Noisy labels through the commands a user runs: `drcl prepare` injects the noise named in
params.yaml, `drcl train` corrects labels and records how right they are; rewriting the clean
labels leaves the trained encoder byte for byte the same (training never reads them)."""

from __future__ import annotations

import csv
import json

import numpy as np
from typer.testing import CliRunner

from drcl.cli import app
from tests.integration.project import write_params


def drcl(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def test_noise_then_correction_from_the_command_line(project):
    write_params(project, data={"source": "npz", "path": "features.npz",
                                "modalities": ["image", "text"],
                                "noise": {"kind": "symmetric", "rate": 0.4}},
                 train={"epochs": 8, "correction": {"method": "partial_ot", "warmup": 3}})
    drcl("prepare")
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert manifest["noise"]["realised"]["image"]["train"] == 0.4
    drcl("prior")
    drcl("train", "--modality", "image")
    with (project / "plots/train/image.csv").open() as fh:
        history = list(csv.DictReader(fh))
    assert [r["correction_mass"] != "" for r in history] == [False] * 3 + [True] * 5
    assert float(history[-1]["correction_label_accuracy"]) > 0.6
    weights = (project / "models/encoders/image.safetensors").read_bytes()

    file = project / "data/prepared/image.npz"
    with np.load(file) as npz:
        arrays = dict(npz)
    arrays["train.clean_labels"] = np.zeros_like(arrays["train.clean_labels"])
    np.savez(file, **arrays)
    drcl("train", "--modality", "image")
    assert (project / "models/encoders/image.safetensors").read_bytes() == weights
