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
    from PIL import Image

    with Image.open(project / "plots/images/train_image.png") as png:
        assert png.height > png.width  # the loss panel and, below it, the correction panel
    weights = (project / "models/encoders/image.safetensors").read_bytes()

    # the gate on noisy validation labels: each direction above chance, not the clean floors
    drcl("train", "--modality", "text")
    result = CliRunner().invoke(app, ["promote", "--report", "promotion.json"])
    assert result.exit_code == 0, result.output
    report = json.loads((project / "promotion.json").read_text())
    assert report["verdict"] == "champion"
    assert report["map_all"]["mean"] < 0.5  # the default floor it would have failed

    file = project / "data/prepared/image.npz"
    with np.load(file) as npz:
        arrays = dict(npz)
    arrays["train.clean_labels"] = np.zeros_like(arrays["train.clean_labels"])
    np.savez(file, **arrays)
    drcl("train", "--modality", "image")
    assert (project / "models/encoders/image.safetensors").read_bytes() == weights


def write_paired(path, *, classes: int = 4, seed: int = 0):
    """Two views of the same items (shared ids) whose features carry the class."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for view, dim in (("image", 10), ("text", 6)):
        centers = rng.normal(size=(classes, dim))
        for split, n in (("train", 120), ("val", 40), ("test", 40)):
            labels = np.arange(n) % classes
            arrays[f"{view}.{split}.features"] = 3 * centers[labels] + rng.normal(size=(n, dim))
            arrays[f"{view}.{split}.labels"] = labels
            arrays[f"{view}.{split}.ids"] = np.asarray([f"{split}-{i}" for i in range(n)])
    np.savez(path, **arrays)


def test_the_cross_modal_cost_blends_the_other_views(project):
    write_paired(project / "paired.npz")
    write_params(project, data={"source": "npz", "path": "paired.npz",
                                "modalities": ["image", "text"],
                                "noise": {"kind": "symmetric", "rate": 0.4}},
                 train={"epochs": 8, "correction": {"method": "partial_ot", "warmup": 3,
                                                    "cost": "cross_modal"}})
    drcl("prepare")
    drcl("prior")
    with np.load(project / "models/posteriors.npz") as npz:
        assert sorted(npz.files) == ["image.ids", "image.posteriors", "text.ids",
                                     "text.posteriors"]
        assert npz["image.posteriors"].shape == (120, 4)
        np.testing.assert_allclose(npz["image.posteriors"].sum(1), 1, atol=1e-5)
    drcl("train", "--modality", "text")
    with (project / "plots/train/text.csv").open() as fh:
        assert float(list(csv.DictReader(fh))[-1]["correction_label_accuracy"]) > 0.6


def test_the_cross_modal_cost_needs_paired_data(project):
    write_params(project, data={"source": "npz", "path": "features.npz",
                                "modalities": ["image", "text"]},
                 train={"epochs": 5, "correction": {"method": "partial_ot", "warmup": 2,
                                                    "cost": "cross_modal"}})
    drcl("prepare")
    result = CliRunner().invoke(app, ["prior"])
    assert result.exit_code == 1
    assert result.stderr == (
        "drcl: error: train.correction.cost: cross_modal blends the posteriors of one item's "
        "modalities, but features is not paired (no item id recurs across modalities); use "
        "own\n")
    assert not (project / "models/prior.safetensors").exists()
