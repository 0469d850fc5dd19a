"""The champion set as an MLflow Model, loaded by alias with plain MLflow (sqlite store): its
answers are `drcl search`'s, bad requests are one-line errors, damaged weights refuse to load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from drcl.cli import app
from drcl.model import embed, load_encoder

CHAMPION = "models:/drcl-set@champion"


def drcl(project: Path, monkeypatch, *args: str):
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def promoted(projects, tmp_path_factory, empty_mlflow_store) -> Iterator[Path]:
    """A promoted set, a text index and image queries as `drcl search` takes them; made once
    for the module (no test changes the store)."""
    root = tmp_path_factory.mktemp("serving")
    store = root / "mlflow.db"
    shutil.copyfile(empty_mlflow_store, store)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        for name in ("MLFLOW_REGISTRY_URI", "DRCL_PIPELINE_RUN_ID"):
            patch.delenv(name, raising=False)
        a = projects.copy(root / "a")
        drcl(a, patch, "promote")
        with np.load(a / "data/prepared/image.npz") as npz:
            np.savez(a / "images.npz", features=npz["test.features"][:5],
                     ids=np.asarray([f"img-{i}" for i in range(5)]))
        drcl(a, patch, "index", "-m", "text", "--features", "data/prepared/text.npz",
             "--key", "test.features", "--out", "text-index.npz")
        yield a


def queries(project: Path) -> list[dict]:
    with np.load(project / "images.npz") as npz:
        return [{"modality": "image", "features": row.tolist(), "id": str(i)}
                for row, i in zip(npz["features"], npz["ids"], strict=True)]


def test_the_champion_loads_by_alias_and_answers_like_drcl_search(promoted, monkeypatch):
    model = mlflow.pyfunc.load_model(CHAMPION)
    meta = model.metadata.metadata["drcl"]
    assert set(meta["modalities"]) == {"image", "text", "audio"}
    assert meta["modalities"]["image"]["extractor"] == "precomputed"
    assert model.metadata.get_params_schema() is not None

    asked = queries(promoted)
    exact = mlflow.pyfunc.load_model(CHAMPION, model_config={"precision": "fp32"})
    embedded = exact.predict(asked)
    encoder = load_encoder(promoted / "models/encoders/image.safetensors")
    with np.load(promoted / "images.npz") as npz:
        expected = embed(encoder, npz["features"]).numpy()
    got = np.asarray([a.embedding for a in embedded])
    assert [a.query for a in embedded] == [q["id"] for q in asked]
    np.testing.assert_allclose(got, expected, atol=1e-5)

    found = model.predict(asked, params={"database": str(promoted / "text-index.npz"),
                                         "top_k": 4})
    cli = json.loads(drcl(promoted, monkeypatch, "search", "-q", "image", "--queries",
                          "images.npz", "--database", "text-index.npz", "-k", "4",
                          "--format", "json").stdout)["results"]
    assert [a.query for a in found] == [r["query"] for r in cli]
    for answer, row in zip(found, cli, strict=True):
        assert [m.model_dump() for m in answer.matches] == row["matches"]


def test_bad_requests_are_one_line_errors(promoted, tmp_path, monkeypatch):
    model = mlflow.pyfunc.load_model(CHAMPION)
    good = queries(promoted)[0]
    index = str(promoted / "text-index.npz")
    np.save(tmp_path / "plain.npy", np.zeros((2, 3), dtype=np.float32))
    for request, params, message in [
        ([{**good, "modality": "video"}], None,
         "query img-0: no encoder for modality 'video' (this model has image, text, audio)"),
        ([{**good, "features": good["features"][:-1]}], None,
         "query img-0: 11-d features, but the image encoder (drcl-encoder-image v1) takes 12-d"),
        ([{"modality": "image", "id": "x"}], None, "query x: give either features or text"),
        ([{"modality": "image", "text": "a dog"}], None,
         "the image encoder takes 12-d precomputed features, not text"),
        ([good], {"database": index, "top_k": 0}, "params top_k must be at least 1, got 0"),
        ([good], {"database": str(tmp_path / "none.npz")}, "params database: no index file"),
        ([good], {"database": str(tmp_path / "plain.npy")}, "is not an index"),
    ]:
        with pytest.raises(MlflowException) as caught:
            model.predict(request, params=params)
        assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
        assert message in caught.value.message, caught.value.message
        assert "\n" not in caught.value.message
    # an index of another encoder than this set's
    drcl(promoted, monkeypatch, "index", "-m", "text", "--features", "data/prepared/text.npz",
         "--key", "test.features", "--out", "text-index.npz")
    with np.load(promoted / "text-index.npz") as npz:
        arrays = dict(npz)
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.asarray(json.dumps({**meta, "weights_sha256": "0" * 64}))
    np.savez(tmp_path / "other.npz", **arrays)
    with pytest.raises(MlflowException, match="rebuild it with `drcl index`"):
        model.predict([good], params={"database": str(tmp_path / "other.npz")})


def test_damaged_weights_in_the_set_refuse_to_load(promoted):
    folder = Path(mlflow.artifacts.download_artifacts(CHAMPION))
    weights = folder / "artifacts/drcl/text/encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-40] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(Exception, match="drcl-encoder-text v1: the stored weights differ"):
        mlflow.pyfunc.load_model(str(folder))
