"""The champion set as an MLflow Model, loaded by alias with plain MLflow (sqlite store): its
answers are `drcl search`'s, bad requests are one-line errors, damaged weights refuse to load."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from drcl.cli import app
from drcl.model import embed, load_encoder
from drcl.vector_index import VectorIndex
from tests.services import free_ports, running

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
    monkeypatch.chdir(promoted)  # by default, a request may name the indexes under the cwd
    model = mlflow.pyfunc.load_model(CHAMPION)
    meta = model.metadata.metadata["drcl"]
    assert set(meta["modalities"]) == {"image", "text", "audio"}
    assert meta["modalities"]["image"]["extractor"] == "precomputed"
    assert model.metadata.get_params_schema() is not None
    # the arithmetic the gate measured in: recorded, and the model's default
    version = mlflow.MlflowClient().get_model_version_by_alias("drcl-set", "champion")
    measured = {"device": version.tags["drcl.measured_device"],
                "precision": version.tags["drcl.measured_precision"]}
    assert measured["precision"] in {"fp32", "tf32", "bf16"} and meta["measured_with"] == measured
    assert model.model_config["precision"] == measured["precision"]

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
    model = mlflow.pyfunc.load_model(CHAMPION, model_config={
        "index_root": os.path.commonpath([promoted, tmp_path])})
    good = queries(promoted)[0]
    index = str(promoted / "text-index.npz")
    np.save(tmp_path / "plain.npy", np.zeros((2, 3), dtype=np.float32))
    for request, params, message in [
        ([{**good, "modality": "video"}], None,
         "query img-0: no encoder for modality 'video' (this model has image, text, audio)"),
        ([{**good, "features": good["features"][:-1]}], None,
         "query img-0: 11-d features, but the image encoder (drcl-encoder-image v1) takes 12-d"),
        ([{"modality": "image", "id": "x"}], None,
         "query x: give one of features, text or embedding"),
        ([{**good, "embedding": [0.5, 0.5]}], None,
         "query img-0: give one of features, text or embedding"),
        ([{"modality": "image", "embedding": [0.5, 0.5], "id": "e"}], None,
         "query e: an embedding of this set has"),
        ([{"modality": "image", "text": "a dog"}], None,
         "the image encoder takes 12-d precomputed features, not text"),
        ([good], {"database": index, "top_k": 0}, "params top_k must be at least 1, got 0"),
        ([good], {"database": index, "top_k": 10**9}, "params top_k 1000000000 is over this "
                                                    "deployment's 1000 matches per query"),
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
    other = VectorIndex.load(promoted / "text-index.npz")
    other.meta["weights_sha256"] = "0" * 64
    other.save(tmp_path / "other.npz")
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


@pytest.fixture
def http_hits() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every path asked of it."""
    import http.server

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"not an index")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_a_request_reads_only_the_indexes_the_deployment_allows(promoted, tmp_path,
                                                                 monkeypatch, http_hits):
    url, hits = http_hits
    monkeypatch.chdir(promoted)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(promoted / "text-index.npz", tmp_path / "elsewhere" / "text-index.npz")
    good = queries(promoted)[0]
    model = mlflow.pyfunc.load_model(CHAMPION)  # default: local files under the cwd
    assert model.predict([good], params={"database": "text-index.npz", "top_k": 2})
    for database in [str(tmp_path / "elsewhere" / "text-index.npz"),
                     "../" + tmp_path.name + "/elsewhere/text-index.npz",
                     "data/../../" + promoted.name + "-x/text-index.npz",
                     f"{url}/text-index.npz", "s3://another-bucket/text-index.npz",
                     "runs:/0123/text-index.npz"]:
        with pytest.raises(MlflowException) as caught:
            model.predict([good], params={"database": database})
        message = caught.value.message
        assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
        assert f"params database: {database} is not an index this deployment serves" in message
        assert "allowed: none by name; and any under the server's working directory" in message
    assert hits == []  # nothing was fetched

    remote = mlflow.pyfunc.load_model(CHAMPION, model_config={
        "index_root": "s3://drcl-indexes/prod", "indexes": [str(promoted / "text-index.npz")]})
    assert remote.predict([good], params={"database": str(promoted / "text-index.npz")})
    for database in ["s3://drcl-indexes/prod/../staging/x.npz", "s3://drcl-indexes/production/x",
                     "../staging/x.npz", "a/../../staging/x.npz"]:
        with pytest.raises(MlflowException, match="allowed: .*text-index.npz; and any under "
                                                  "s3://drcl-indexes/prod"):
            remote.predict([good], params={"database": database})
    assert hits == []
    # a relative name lies under the root (shard deployments read their parts so)
    assert remote.unwrap_python_model().resolved("shards/text-index.npz") == (
        "s3://drcl-indexes/prod/shards/text-index.npz")

    capped = mlflow.pyfunc.load_model(CHAMPION, model_config={"max_index_mb": 0.0001})
    with pytest.raises(MlflowException, match="over this deployment's cap of 0 MB"):
        capped.predict([good], params={"database": "text-index.npz"})


def test_concurrent_requests_share_one_model_safely(promoted, monkeypatch):
    """32 threads for 5 s against one loaded model, as the scoring server's threads call it:
    every answer is the single-threaded one, whichever index each asks."""
    monkeypatch.chdir(promoted)
    drcl(promoted, monkeypatch, "index", "-m", "audio", "--features", "data/prepared/audio.npz",
         "--key", "test.features", "--out", "audio-index.npz")
    model = mlflow.pyfunc.load_model(CHAMPION)
    asked = queries(promoted)
    expected = {db: [[m.model_dump() for m in a.matches]
                     for a in model.predict(asked, params={"database": db, "top_k": 5})]
                for db in ("text-index.npz", "audio-index.npz")}
    fresh = mlflow.pyfunc.load_model(CHAMPION)  # its cache starts empty: loads race too

    def ask(n: int) -> str | None:
        db = ("text-index.npz", "audio-index.npz")[n % 2]
        got = [[m.model_dump() for m in a.matches]
               for a in fresh.predict(asked, params={"database": db, "top_k": 5})]
        return None if got == expected[db] else f"{db} answered differently"

    hammer(ask)


def hammer(ask, *, clients: int = 32, seconds: float = 5) -> None:
    """`clients` threads calling `ask(n)` for `seconds`; `ask` returns what went wrong, or None.
    Every answer must be right, and every client must have been answered."""
    errors: list[str] = []
    answered = [0]
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        while time.monotonic() < stop:
            wrong = ask(n)
            if wrong:
                errors.append(f"client {n}: {wrong}")
                return
            answered[0] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert answered[0] >= clients


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_drcl_serve_refuses_at_the_door_and_answers_like_the_model(promoted, tmp_path):
    """`drcl serve` as README.md starts it: a request the model would not see whole (too big,
    no `inputs`, params it does not take) is refused with one line; 32 clients at once get the
    model's own answers."""
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    model = mlflow.pyfunc.load_model(CHAMPION)
    asked = queries(promoted)
    expected = [[m.model_dump() for m in a.matches]
                for a in model.predict(asked, params={"database": "text-index.npz", "top_k": 3})]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with running(["drcl", "serve", "-m", CHAMPION, "--port", str(port), "--max-request-mb",
                  "0.5"], health=url + "/ping", cwd=promoted, env=env,
                 log=tmp_path / "serve.log", timeout=120):
        good = {"inputs": asked, "params": {"database": "text-index.npz", "top_k": 3}}
        status, answer = post(url, json.dumps(good).encode())
        assert status == 200
        assert [[m for m in a["matches"]] for a in answer["predictions"]] == expected
        for body, status_wanted, message in [
            ({**good, "params": {"database": "text-index.npz", "topk": 3}}, 400,
             "request: unknown params 'topk'; this model takes database, top_k, expand, "
             "neighbours"),
            ({}, 400, "request: the body is a JSON object with `inputs`"),
            ({"instances": asked}, 400, "found keys 'instances'"),
            ({"inputs": {"modality": "image"}}, 400, "`inputs` is a list of queries"),
            ({**good, "params": {"database": "http://127.0.0.1:9/x.npz"}}, 400,
             "params database: http://127.0.0.1:9/x.npz is not an index this deployment serves"),
            ({**good, "params": {"database": "text-index.npz", "top_k": 10**9}}, 400,
             "params top_k 1000000000 is over this deployment's 1000 matches per query"),
        ]:
            status, error = post(url, json.dumps(body).encode())
            assert status == status_wanted, (body.keys(), status, error)
            assert message in error["message"] and "\n" not in error["message"], error

        # a body over the limit is refused from its declared length, before it is sent
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(200 * 2**20))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["message"] == (
            "request: body of 200.0 MB is over this server's limit of 0.5 MB (drcl serve "
            "--max-request-mb); send fewer queries per request")
        conn.close()

        def ask(n: int) -> str | None:
            status, got = post(url, json.dumps(good).encode())
            if status != 200 or [a["matches"] for a in got["predictions"]] != expected:
                return f"{status} {str(got)[:200]}"
            return None

        hammer(ask)


def test_drcl_serve_of_a_damaged_model_stops_with_one_line(promoted, tmp_path):
    folder = Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path / "m")))
    weights = folder / "artifacts/drcl/text/encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-40] ^= 0x01
    weights.write_bytes(bytes(data))
    done = subprocess.run(["drcl", "serve", "-m", str(folder), "--port", "1"], cwd=tmp_path,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}"
                                                    f"{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("drcl: error: ") and "drcl-encoder-text v1: the stored weights " \
        "differ" in last, done.stderr[-2000:]


@pytest.mark.parametrize(("config", "message"), [
    ("{device: cpu}", "MLFLOW_PYFUNC_INFERENCE_CONFIG: not JSON"),
    ('["cpu"]', "MLFLOW_PYFUNC_INFERENCE_CONFIG: expected a JSON object of settings"),
    ('{"devcie": "cpu"}', "MLFLOW_PYFUNC_INFERENCE_CONFIG: devcie: unknown key"),
])
def test_drcl_serve_with_a_bad_model_config_stops_with_one_line(promoted, tmp_path, config,
                                                                message):
    done = subprocess.run(["drcl", "serve", "-m", CHAMPION, "--port", "1"], cwd=tmp_path,
                          env={**os.environ, "MLFLOW_PYFUNC_INFERENCE_CONFIG": config,
                               "PATH": f"{Path(sys.executable).parent}"
                                       f"{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"drcl: error: {message}"), done.stderr[-2000:]


def test_a_bad_model_config_given_to_load_model_names_the_key(promoted):
    with pytest.raises(Exception, match=r"model config .*: max_index_mb: Input should be "
                                        r"greater than 0"):
        mlflow.pyfunc.load_model(CHAMPION, model_config={"max_index_mb": -1})
