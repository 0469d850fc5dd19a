"""End to end through a real `mlflow server` on 127.0.0.1 whose artifacts go to a real
SeaweedFS S3 server: register, promote, load by alias, index and search; then the champion set
loaded with plain MLflow and served by `mlflow models serve` over HTTP."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from drcl.cli import EXIT_CHALLENGER, app
from drcl.model import load_encoder
from tests.integration.mlflow_server import mlflow_server
from tests.integration.registry_helpers import MODALITIES
from tests.services import HOST, free_ports, running

pytestmark = pytest.mark.slow
BUCKET = "drcl-artifacts"


@pytest.fixture(scope="module")
def server(s3_server, empty_mlflow_store, tmp_path_factory):
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint,
                      aws_access_key_id=s3_server.access_key,
                      aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), env=s3_server.env(),
                       artifacts=f"s3://{BUCKET}/mlflow",
                       store_template=empty_mlflow_store) as url:
        yield url, s3


def drcl(project: Path, monkeypatch, *args: str):
    monkeypatch.chdir(project)
    return CliRunner().invoke(app, list(args))


def test_promote_load_by_alias_and_search_through_the_server(server, projects, tmp_path,
                                                             monkeypatch):
    url, s3 = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for name in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "MLFLOW_REGISTRY_URI", "DRCL_PIPELINE_RUN_ID"):
        monkeypatch.delenv(name, raising=False)  # artifacts go through the server only
    strong = projects.copy(tmp_path / "strong")
    weak = projects.copy(tmp_path / "weak", quality="weak")

    started = time.perf_counter()
    result = drcl(strong, monkeypatch, "promote")
    print(f"promotion through the server: {time.perf_counter() - started:.2f} s")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("champion: drcl-set v1")  # the only line: no run links
    assert result.stdout.count("\n") == 1
    assert drcl(weak, monkeypatch, "promote").exit_code == EXIT_CHALLENGER

    client = MlflowClient(url)
    aliases = client.get_registered_model("drcl-set").aliases
    assert {a: str(v) for a, v in aliases.items()} == {"champion": "1", "challenger": "2"}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")["Contents"]]
    for m in MODALITIES:
        assert any(k.endswith(f"encoders/{m}/artifacts/drcl/{m}/encoder.safetensors")
                   for k in keys)
        folder = Path(mlflow.artifacts.download_artifacts(
            f"models:/drcl-encoder-{m}@champion", dst_path=str(tmp_path / m),
            tracking_uri=url, registry_uri=url))
        assert load_encoder(folder / f"artifacts/drcl/{m}/encoder.safetensors").spec.modality == m

    with np.load(strong / "data/prepared/text.npz") as npz:
        np.savez(strong / "texts.npz", features=npz["test.features"],
                 ids=np.array([f"text-{i}" for i in range(len(npz["test.features"]))]))
    with np.load(strong / "data/prepared/image.npz") as npz:
        np.save(strong / "images.npy", npz["test.features"][:4])
        labels = npz["test.labels"][:4]
    built = drcl(strong, monkeypatch, "index", "-m", "text", "--features", "texts.npz",
                 "--out", "texts-index.npz")
    assert built.exit_code == 0 and "embedded by drcl-encoder-text v1" in built.stdout
    found = drcl(strong, monkeypatch, "search", "-q", "image", "--queries", "images.npy",
                 "--database", "texts-index.npz", "-k", "5", "--format", "json")
    assert found.exit_code == 0, found.output
    results = json.loads(found.stdout)["results"]
    with np.load(strong / "data/prepared/text.npz") as npz:
        text_labels = npz["test.labels"]
    # the strong encoders retrieve same-class texts first
    for row, label in zip(results, labels, strict=True):
        best = int(row["matches"][0]["id"].removeprefix("text-"))
        assert text_labels[best] == label

    # where a serving runtime that reads the store finds the champion's MLflow Model
    proxied = drcl(strong, monkeypatch, "champion", "--storage-uri")
    assert proxied.exit_code == 1 and "give --artifacts-destination" in proxied.stderr
    located = drcl(strong, monkeypatch, "champion", "--storage-uri", "--artifacts-destination",
                   f"s3://{BUCKET}/mlflow")
    assert located.exit_code == 0, located.output
    bucket, _, prefix = located.stdout.strip().removeprefix("s3://").partition("/")
    assert bucket == BUCKET and prefix.endswith("/artifacts/set")
    s3.head_object(Bucket=BUCKET, Key=f"{prefix}/MLmodel")

    # the same set through MLflow alone: loaded by alias, then served by `mlflow models serve`
    model = mlflow.pyfunc.load_model("models:/drcl-set@champion")
    asked = [{"modality": "image", "features": row.tolist(), "id": str(i)}
             for i, row in enumerate(np.load(strong / "images.npy"))]
    index = str(strong / "texts-index.npz")
    by_python = model.predict(asked, params={"database": index, "top_k": 5})
    assert [[m.model_dump() for m in a.matches] for a in by_python] == [
        r["matches"] for r in results]

    (port,) = free_ports(1)
    serve = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
             "models:/drcl-set@champion", "--env-manager", "local", "--host", HOST,
             "--port", str(port)]
    endpoint = f"http://{HOST}:{port}"
    started = time.perf_counter()
    with running(serve, health=endpoint + "/ping", cwd=tmp_path, env=dict(os.environ),
                 log=tmp_path / "serve.log", timeout=120):
        print(f"mlflow models serve ready in {time.perf_counter() - started:.1f} s")
        status, found = post(endpoint, {"inputs": asked,
                                        "params": {"database": index, "top_k": 5}})
        assert status == 200, found
        assert [a["query"] for a in found["predictions"]] == [r["query"] for r in results]
        assert [a["matches"] for a in found["predictions"]] == [r["matches"] for r in results]
        status, embedded = post(endpoint, {"inputs": asked[:2]})
        assert status == 200 and len(embedded["predictions"][0]["embedding"]) == 16
        good = asked[0]
        for body, message in [
            ({"inputs": [{**good, "features": good["features"][:3]}]},
             "query 0: 3-d features, but the image encoder (drcl-encoder-image v1) takes 12-d "
             "precomputed features"),
            ({"inputs": [{**good, "modality": "video"}]},
             "query 0: no encoder for modality 'video' (this model has image, text, audio)"),
        ]:
            status, answer = post(endpoint, body)
            assert status == 400 and answer["message"] == message, (status, answer)
        status, answer = post(endpoint, b'{"inputs": [{"modality": "image", "features": [1, 2')
        assert status == 400 and "valid JSON" in answer["message"], answer
        status, again = post(endpoint, {"inputs": asked, "params": {"database": index,
                                                                    "top_k": 5}})
        assert status == 200 and again == found  # still serving, the same answers


def post(endpoint: str, body: dict | bytes) -> tuple[int, dict]:
    """POST to /invocations; the status and the JSON answer (also for an error)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(endpoint + "/invocations", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
