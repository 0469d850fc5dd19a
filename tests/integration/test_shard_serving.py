"""A database served as shards by several deployments and one router, as
infra/k8s/serving-shards deploys it: `drcl serve` started as its serving runtime does, once per
InferenceService, each with the model config its manifest gives (the shards reading their parts
from a real S3 server under their own index_root, the router naming the shards' services, here
on 127.0.0.1), answers as `drcl search` does with every shard in one process, with and without
query expansion; a shard that does not answer and a router of another set are one line each."""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import boto3
import mlflow
import numpy as np
import pytest
import yaml
from mlflow.exceptions import MlflowException

from drcl.vector_index import VectorIndex
from tests.integration.test_index_cli import SIZE, indexed  # noqa: F401 - the fixture
from tests.integration.test_registry import drcl
from tests.integration.test_serving import post
from tests.services import free_ports, running

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "infra" / "k8s" / "serving-shards"
CHAMPION = "models:/drcl-set@champion"
EXPANDING = {"dba_k": 0, "qe_k": 3, "alpha": 3.0}


def services() -> dict[str, dict]:
    """Each InferenceService of the manifests: its model config, by name."""
    spec = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    found = {}
    for resource in spec["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / resource).read_text()):
            env = {e["name"]: e["value"] for e in doc["spec"]["predictor"]["model"]["env"]}
            found[doc["metadata"]["name"]] = json.loads(env["MLFLOW_PYFUNC_INFERENCE_CONFIG"])
    return found


def in_one_process(root: Path, monkeypatch) -> list[list[tuple[str, float]]]:
    result = drcl(root, monkeypatch, "search", "-q", "image", "--queries", "images.npy",
                  "--database", "s0/db.npz", "--database", "s1/db.npz", "-k", "10",
                  "--format", "json")
    assert result.exit_code == 0, result.output
    return [[(m["id"], m["score"]) for m in r["matches"]]
            for r in json.loads(result.stdout)["results"]]


def same(got: list[list[dict]], want: list[list[tuple[str, float]]]) -> None:
    assert [[m["id"] for m in row] for row in got] == [[i for i, _ in row] for row in want]
    assert np.allclose([[m["score"] for m in row] for row in got],
                       [[s for _, s in row] for row in want], atol=2e-6)


def shard_indexes(root: Path, s3, roots: list[str], *, setting: dict, name: str) -> None:
    """Both parts indexed as `drcl index` writes them, uploaded under each shard's root."""
    for n, prefix in enumerate(roots):
        index = VectorIndex.load(root / f"s{n}/db.npz")
        index.meta["rerank"] = setting  # the set's re-ranking, as `drcl index` records it
        index.save(root / f"s{n}/db.npz")
        bucket, _, key = prefix.removeprefix("s3://").partition("/")
        s3.upload_file(str(root / f"s{n}/db.npz"), bucket, f"{key}/{name}".lstrip("/"))


def test_shard_deployments_behind_a_router_answer_as_one_process(indexed, monkeypatch,  # noqa: F811
                                                                   tmp_path, s3_server):
    root, _ = indexed
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["index"]["kind"] = "flat"
    params["precision"] = "auto"  # as the manifests serve: the same arithmetic on both sides
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with np.load(root / "texts.npz") as npz:
        features, ids = npz["features"], npz["ids"]
    for n, part in enumerate((slice(0, 1000), slice(1000, SIZE))):
        (root / f"s{n}").mkdir()
        np.savez(root / f"part{n}.npz", features=features[part], ids=ids[part])
        assert drcl(root, monkeypatch, "index", "-m", "text", "--features", f"part{n}.npz",
                    "--out", f"s{n}/db.npz").exit_code == 0

    configs = services()
    router_name = next(name for name, c in configs.items() if c.get("shards"))
    shard_names = [name for name in configs if name != router_name]
    ports = dict(zip([*shard_names, router_name], free_ports(len(configs)), strict=True))
    local = {f"http://{name}-predictor.drcl.svc.cluster.local": f"http://127.0.0.1:{ports[name]}"
             for name in shard_names}
    assert set(configs[router_name]["shards"]) == set(local)  # the router names every shard
    roots = [configs[name]["index_root"] for name in shard_names]
    assert len(set(roots)) == len(roots) == 2
    env = {**os.environ, **s3_server.env(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint,
                      aws_access_key_id=s3_server.access_key,
                      aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    for bucket in {r.removeprefix("s3://").split("/")[0] for r in roots}:
        s3.create_bucket(Bucket=bucket)
    shard_indexes(root, s3, roots, setting={}, name="db.npz")

    asked = [{"modality": "image", "features": row.tolist(), "id": f"q{i}"}
             for i, row in enumerate(np.load(root / "images.npy"))]
    router = f"http://127.0.0.1:{ports[router_name]}"
    with ExitStack() as servers:
        for name, config in configs.items():  # as the runtime starts `drcl serve`
            if name == router_name:
                config = {**config, "shards": [local[u] for u in config["shards"]]}
            servers.enter_context(running(
                ["drcl", "serve", "-m", CHAMPION, "--port", str(ports[name])],
                health=f"http://127.0.0.1:{ports[name]}/ping", cwd=tmp_path,
                env={**env, "MLFLOW_PYFUNC_INFERENCE_CONFIG": json.dumps(config)},
                log=tmp_path / f"{name}.log", timeout=180))

        def ask(database: str) -> list[list[dict]]:
            body = {"inputs": asked, "params": {"database": database, "top_k": 10}}
            status, answer = post(router, json.dumps(body).encode())
            assert status == 200, answer
            return [a["matches"] for a in answer["predictions"]]

        plain = in_one_process(root, monkeypatch)
        same(ask("db.npz"), plain)

        shard_indexes(root, s3, roots, setting=EXPANDING, name="expanded.npz")
        expanded = in_one_process(root, monkeypatch)
        assert expanded != plain  # the expansion changes the answers
        same(ask("expanded.npz"), expanded)

        # one shard gone: the router answers with one line naming it
        (dead,) = free_ports(1)
        gone = f"http://127.0.0.1:{dead}"
        model = mlflow.pyfunc.load_model(CHAMPION, model_config={
            "shards": [local[next(iter(local))], gone], "shard_timeout_s": 5})
        with pytest.raises(MlflowException) as caught:
            model.predict(asked, params={"database": "db.npz"})
        assert caught.value.message.startswith(f"shard {gone}: no answer"), caught.value.message
        assert "\n" not in caught.value.message

        # a router of another set than its shards': refused, as its scores would not compare
        assert drcl(root, monkeypatch, "promote").exit_code == 0
        model = mlflow.pyfunc.load_model(CHAMPION, model_config={"shards": list(local.values())})
        with pytest.raises(MlflowException, match="built by another encoder than this router's"):
            model.predict(asked, params={"database": "db.npz"})
