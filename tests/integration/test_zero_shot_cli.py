"""Zero-shot retrieval through the commands a user runs: classes held out in params.yaml never
reach training, the semantic prior gives every class a column, and `evaluate` reports the
unseen, seen and all-class test sets."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from drcl.cli import app
from drcl.tensor_files import load_tensors
from tests.integration.project import write_params

CLASSES = ["cat", "dog", "ship", "car", "tree"]


def drcl(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_held_out_classes_and_the_semantic_prior_from_the_command_line(tmp_path, monkeypatch,
                                                                       mlflow_store):
    rng = np.random.default_rng(0)
    arrays = {"classes": np.array(CLASSES)}
    for view, dim in (("image", 10), ("text", 6)):
        centers = rng.normal(size=(5, dim))
        for split, n in (("train", 100), ("val", 40), ("test", 50)):
            labels = np.arange(n) % 5
            arrays[f"{view}.{split}.features"] = 3 * centers[labels] + rng.normal(size=(n, dim))
            arrays[f"{view}.{split}.labels"] = labels
    np.savez(tmp_path / "animals.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, data={"source": "npz", "path": "animals.npz",
                                 "modalities": ["image", "text"],
                                 "unseen_classes": ["dog", "tree"],
                                 "class_text": {"car": "a car on the road"}},
                 prior={"method": "semantic"}, train={"epochs": 4},
                 promotion={"min_mean_map": 0.0, "min_direction_map": 0.0})
    drcl("prepare")
    drcl("prior")
    tensors, meta = load_tensors(tmp_path / "models/prior.safetensors", what="prior")
    assert tensors["W"].shape == (16, 3)  # the seen classes' columns
    assert tensors["class_embeddings"].shape == (5, 384)
    assert json.loads(meta["classes"]) == ["cat", "ship", "car"]
    assert json.loads(meta["class_texts"])[3] == "a car on the road"
    drcl("train", "--modality", "image")
    drcl("train", "--modality", "text")
    printed = json.loads(drcl("evaluate"))
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert set(report) == {"map_all", "map_at_50", "unseen", "seen"}
    assert set(report["unseen"]["map_all"]) == {"mean", "image->text", "text->image"}
    assert printed["unseen.map_all"] == round(report["unseen"]["map_all"]["mean"], 4)
    assert 0 < report["unseen"]["map_all"]["mean"] <= 1
    summary = drcl("metrics")
    assert "classes unseen in training (zero-shot): MAP@all" in summary

    # the registered set keeps the class texts: search by a class, seen or added later
    drcl("promote")
    found = json.loads(drcl("search", "--class-text", "ship", "--class-text", "a wolf",
                            "-d", "text", "--database", "data/prepared/text.npz",
                            "--key", "test.features", "-k", "5", "--format", "json"))
    assert found["query_modality"] == "class"
    assert [r["query"] for r in found["results"]] == ["ship", "a wolf"]
    labels = dict(zip(arrays["text.test.ids"] if "text.test.ids" in arrays else
                      [f"test/{i}" for i in range(50)], arrays["text.test.labels"], strict=True))
    ships = [labels[m["id"]] == CLASSES.index("ship") for m in found["results"][0]["matches"]]
    assert sum(ships) >= 4  # a seen class's column finds its items
