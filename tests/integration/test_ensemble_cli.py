"""`train.ensemble: K` as users meet it: `drcl train` writes one file of K encoders whose first
is the plain run; evaluate, promote, index, search and the served model take it as one encoder,
its weights checked like any other."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pytest
import torch

from drcl.data.dataset import load_modality
from drcl.model import Ensemble, embed, load_encoder, read_metadata
from tests.integration.project import run, write_params

pytestmark = pytest.mark.slow

MODALITIES = ["image", "text", "audio"]


def drcl(project, *args: str) -> str:
    done = run(["drcl", *args], project)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def params(project, **train) -> None:
    write_params(project, data={"source": "npz", "path": "features.npz",
                                "modalities": MODALITIES},
                 prior={"method": "orthogonal"}, train=train,
                 promotion={"min_mean_map": 0.0, "min_direction_map": 0.0, "min_gain": 0.0})


def test_an_ensemble_trains_registers_and_serves_as_one_encoder(project, tmp_path, mlflow_store):
    params(project, ensemble=1)
    drcl(project, "prepare")
    drcl(project, "prior")
    drcl(project, "train", "-m", "image")
    plain = load_encoder(project / "models/encoders/image.safetensors")

    params(project, ensemble=3, per_modality={"audio": {"ensemble": 2}})
    for m in MODALITIES:
        drcl(project, "train", "-m", m)
    sizes = {m: read_metadata(project / f"models/encoders/{m}.safetensors").get("ensemble")
             for m in MODALITIES}
    assert sizes == {"image": "3", "text": "3", "audio": "2"}
    image = load_encoder(project / "models/encoders/image.safetensors")
    assert isinstance(image, Ensemble)
    x = load_modality(project / "data/prepared", "image").test.features
    # member 0 is the plain run, to the last digit; the others differ
    assert torch.equal(embed(image.members[0], x), embed(plain, x))
    assert not torch.allclose(embed(image.members[1], x), embed(plain, x))
    record = json.loads((project / "metrics/train/image.json").read_text())
    assert len(record["ensemble"]) == 3 and record["best_epoch"] == record["ensemble"][0][
        "best_epoch"]

    drcl(project, "evaluate")
    assert json.loads((project / "metrics/eval.json").read_text())["map_all"]["mean"] > 0.5
    assert drcl(project, "promote").startswith("champion: drcl-set v1")
    np.save(project / "queries.npy", x[:4])
    drcl(project, "index", "-m", "text", "--features", "data/prepared/text.npz", "--key",
         "test.features", "--out", "text-index.npz")
    found = json.loads(drcl(project, "search", "-q", "image", "--queries", "queries.npy",
                            "--database", "text-index.npz", "-k", "3", "--format", "json"))
    model = mlflow.pyfunc.load_model("models:/drcl-set@champion")
    served = model.predict([{"modality": "image", "features": row.tolist(), "id": str(i)}
                            for i, row in enumerate(x[:4])],
                           params={"database": str(project / "text-index.npz"), "top_k": 3})
    assert [[m.id for m in a.matches] for a in served] == \
        [[m["id"] for m in r["matches"]] for r in found["results"]]
    np.testing.assert_allclose(np.asarray(model.predict([{"modality": "image", "features":
                                                           x[0].tolist()}])[0].embedding),
                               embed(image, x[:1])[0].numpy(), atol=1e-5)

    # a damaged member is caught by the set's checksum when the champion loads
    folder = mlflow.artifacts.download_artifacts("models:/drcl-set@champion",
                                                 dst_path=str(tmp_path / "m"))
    weights = next((tmp_path / "m").rglob("image/encoder.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(Exception, match="the stored weights differ"):
        mlflow.pyfunc.load_model(folder)
    shutil.rmtree(tmp_path / "m")


def test_an_ensemble_below_one_is_refused_in_one_line(project):
    for bad, where in ((0, "train.ensemble"), (33, "train.ensemble")):
        params(project, ensemble=bad)
        done = run(["drcl", "train", "-m", "image"], project)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and where in lines[0], done.stderr
    params(project, per_modality={"image": {"ensemble": 0}})
    done = run(["drcl", "train", "-m", "image"], project)
    assert done.returncode != 0
    assert "train.per_modality: image.ensemble: Input should be greater" in done.stderr
