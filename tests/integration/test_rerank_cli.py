"""Re-ranking as users meet it: chosen on validation by `drcl evaluate` and `drcl promote`,
kept with the set, applied by `drcl index` (DBA) and `drcl search` and the served model (aQE),
each result checked against the library's own computation from the encoders."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch

from drcl.data.dataset import load_modality
from drcl.metrics import direction_report
from drcl.model import embed, load_encoder
from drcl.rerank import TAG, Rerank, augment_database, candidates, choose, ranked
from drcl.search import read_index
from tests.integration.project import run
from tests.integration.registry_helpers import write_project_params

pytestmark = pytest.mark.slow

GRID = {"dba_k": [0, 3], "qe_k": [0, 3], "alpha": [1.0]}


def drcl(project, *args: str) -> str:
    done = run(["drcl", *args], project)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def embeddings(project, split: str) -> tuple[dict, dict]:
    emb, labels = {}, {}
    for m in ("image", "text", "audio"):
        data = getattr(load_modality(project / "data/prepared", m), split)
        emb[m] = embed(load_encoder(project / f"models/encoders/{m}.safetensors"), data.features)
        labels[m] = data.labels
    return emb, labels


def test_the_setting_chosen_on_validation_reaches_index_search_and_the_served_model(
        projects, tmp_path, mlflow_store):
    a = projects.copy(tmp_path / "a")
    write_project_params(a, evaluate={"rerank": GRID})

    drcl(a, "evaluate")
    report = json.loads((a / "metrics/eval.json").read_text())
    val, val_labels = embeddings(a, "val")
    want, table = choose(val, val_labels, candidates(**GRID), multi_label=False)
    chosen = Rerank.from_dict(report["rerank"])
    assert chosen == want and not chosen.off, table  # the toy classes gain from it
    assert report["rerank"]["val_map_all"] == max(r["map_all"] for r in table)
    assert report["rerank"]["val_map_all_off"] == table[0]["map_all"]
    plain, _ = direction_report(*embeddings(a, "test"), k=50, multi_label=False)
    assert report["map_all"] == pytest.approx(plain["map_all"])  # the plain table is unchanged
    assert report["reranked"]["map_all"]["mean"] != report["map_all"]["mean"]
    assert "re-ranked (" in drcl(a, "metrics")

    drcl(a, "promote")
    version = mlflow.MlflowClient().get_model_version_by_alias("drcl-set", "champion")
    assert Rerank.from_dict(json.loads(version.tags[TAG])) == chosen

    with np.load(a / "data/prepared/image.npz") as npz:
        np.save(a / "queries.npy", npz["test.features"][:6])
    drcl(a, "index", "-m", "text", "--features", "data/prepared/text.npz", "--key",
         "test.features", "--out", "text-index.npz")
    index = read_index(a / "text-index.npz")
    assert index.meta["layout"]["kind"] == "flat"  # a test split is far below exact_max_items
    stored = index.vectors.index.reconstruct_batch(np.arange(index.vectors.size))
    assert Rerank.from_dict(index.meta["rerank"]) == chosen
    test, _ = embeddings(a, "test")
    augmented = augment_database(test["text"], k=chosen.dba_k, alpha=chosen.alpha)
    np.testing.assert_allclose(stored, augmented.numpy(), atol=1e-5)

    found = json.loads(drcl(a, "search", "-q", "image", "--queries", "queries.npy",
                            "--database", "text-index.npz", "-k", "5", "--format", "json"))
    queries = test["image"][:6]
    scores, rows = ranked(queries, torch.as_tensor(stored), chosen, k=5)
    with np.load(a / "data/prepared/text.npz") as npz:
        ids = [str(i) for i in npz["test.ids"]]
    for result, row_s, row_i in zip(found["results"], scores, rows, strict=True):
        assert [m["id"] for m in result["matches"]] == [ids[j] for j in row_i.tolist()]
        assert [m["score"] for m in result["matches"]] == pytest.approx(row_s.tolist(),
                                                                        abs=1e-5)

    model = mlflow.pyfunc.load_model("models:/drcl-set@champion",
                                      model_config={"indexes": [str(a / "text-index.npz")]})
    asked = [{"modality": "image", "features": row.tolist(), "id": str(i)}
             for i, row in enumerate(np.load(a / "queries.npy"))]
    served = model.predict(asked, params={"database": str(a / "text-index.npz"), "top_k": 5})
    for answer, result in zip(served, found["results"], strict=True):
        assert [m.id for m in answer.matches] == [m["id"] for m in result["matches"]]


def test_without_candidates_nothing_changes(projects, tmp_path, mlflow_store):
    a = projects.copy(tmp_path / "a")
    drcl(a, "evaluate")
    report = json.loads((a / "metrics/eval.json").read_text())
    assert "rerank" not in report and "reranked" not in report
    drcl(a, "promote")
    version = mlflow.MlflowClient().get_model_version_by_alias("drcl-set", "champion")
    assert TAG not in version.tags
    drcl(a, "index", "-m", "text", "--features", "data/prepared/text.npz", "--key",
         "test.features", "--out", "text-index.npz")
    assert Rerank.from_dict(read_index(a / "text-index.npz").meta["rerank"]).off


@pytest.mark.parametrize(("rerank", "message"), [
    ({"dba_k": []}, "evaluate.rerank.dba_k: List should have at least 1 item"),
    ({"qe_k": [-1]}, "evaluate.rerank.qe_k.0: Input should be greater than or equal to 0"),
    ({"alpha": [0]}, "evaluate.rerank.alpha.0: Input should be greater than 0"),
    ({"k": [3]}, "evaluate.rerank.k: unknown key"),
])
def test_bad_candidates_are_one_line(project, rerank, message):
    write_project_params(project, evaluate={"rerank": rerank})
    done = run(["drcl", "evaluate"], project)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"drcl: error: params.yaml: {message}"), \
        done.stderr
