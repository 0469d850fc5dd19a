"""A database served as shards by several deployments and one router, as infra/README.md sets
it up: three `drcl serve` processes (two shards, each with its part of the database under the
same name, and a router whose model config names them) answer as `drcl search` does with both
shards in one process, with and without query expansion; a shard that does not answer is one
line naming it."""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

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

CHAMPION = "models:/drcl-set@champion"
EXPANDING = {"dba_k": 0, "qe_k": 3, "alpha": 3.0}


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


def test_shard_deployments_behind_a_router_answer_as_one_process(indexed, monkeypatch,  # noqa: F811
                                                                   tmp_path):
    root, _ = indexed
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["index"]["kind"] = "flat"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with np.load(root / "texts.npz") as npz:
        features, ids = npz["features"], npz["ids"]
    for n, part in enumerate((slice(0, 1000), slice(1000, SIZE))):
        (root / f"s{n}").mkdir()
        np.savez(root / f"part{n}.npz", features=features[part], ids=ids[part])
        assert drcl(root, monkeypatch, "index", "-m", "text", "--features", f"part{n}.npz",
                    "--out", f"s{n}/db.npz").exit_code == 0
    asked = [{"modality": "image", "features": row.tolist(), "id": f"q{i}"}
             for i, row in enumerate(np.load(root / "images.npy"))]
    request = json.dumps({"inputs": asked, "params": {"database": "db.npz", "top_k": 10}})

    ports = free_ports(3)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    router = {**env, "MLFLOW_PYFUNC_INFERENCE_CONFIG": json.dumps({"shards": urls[:2]})}
    with ExitStack() as servers:
        for n in (0, 1):  # each shard deployment holds its part as db.npz in its index_root
            servers.enter_context(running(
                ["drcl", "serve", "-m", CHAMPION, "--port", str(ports[n])], health=urls[n] +
                "/ping", cwd=root / f"s{n}", env=env, log=tmp_path / f"s{n}.log", timeout=180))
        servers.enter_context(running(
            ["drcl", "serve", "-m", CHAMPION, "--port", str(ports[2])], health=urls[2] + "/ping",
            cwd=root, env=router, log=tmp_path / "router.log", timeout=180))

        status, answer = post(urls[2], request.encode())
        assert status == 200, answer
        plain = in_one_process(root, monkeypatch)
        same([a["matches"] for a in answer["predictions"]], plain)

        for n in (0, 1):  # the set's query expansion, recorded in both shards
            index = VectorIndex.load(root / f"s{n}/db.npz")
            index.meta["rerank"] = EXPANDING
            index.save(root / f"s{n}/db.npz")
        expanded = in_one_process(root, monkeypatch)
        assert expanded != plain  # the expansion changes the answers
        request = request.replace('"db.npz"', '"./db.npz"')  # read afresh by every server
        status, answer = post(urls[2], request.encode())
        assert status == 200, answer
        same([a["matches"] for a in answer["predictions"]], expanded)

        # one shard gone: the router answers with one line naming it
        (dead,) = free_ports(1)
        model = mlflow.pyfunc.load_model(CHAMPION, model_config={
            "shards": [urls[0], f"http://127.0.0.1:{dead}"], "shard_timeout_s": 5})
        monkeypatch.chdir(root)
        with pytest.raises(MlflowException) as caught:
            model.predict(asked, params={"database": "db.npz"})
        message = caught.value.message
        assert message.startswith(f"shard http://127.0.0.1:{dead}: no answer"), message
        assert "\n" not in message
