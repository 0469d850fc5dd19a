"""`drcl index`, `drcl index-add`, `drcl index-remove` and `drcl search` with an approximate
index, as a user runs them: the recall it promises against exact search, items in and out by id,
the earlier index format, and each bad input refused in one line with the file untouched."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from drcl.search import read_index
from tests.integration.test_registry import drcl, one_error_line

SIZE = 3000


@pytest.fixture
def indexed(projects, tmp_path, mlflow_store, monkeypatch):
    """A promoted set, a text database of 3000 items (test texts with noise) and an index of
    it above exact_max_items; a stronger set waits in the project to be promoted."""
    root = projects.copy(tmp_path / "p")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["index"] = {"exact_max_items": 500, "calibration_queries": 300,
                       "recall_at_10": 0.9}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    with np.load(root / "data/prepared/text.npz") as npz:
        texts = npz["test.features"]
    with np.load(root / "data/prepared/image.npz") as npz:
        np.save(root / "images.npy", npz["test.features"][:20])
    features = texts[rng.integers(0, len(texts), SIZE)]
    features = features + 0.3 * features.std(0) * rng.standard_normal(features.shape)
    np.savez(root / "texts.npz", features=features.astype(np.float32),
             ids=np.asarray([f"t{i:04d}" for i in range(SIZE)]))
    unlike = features.mean(0) + 4 * features.std(0) * rng.standard_normal((3, texts.shape[1]))
    np.savez(root / "more.npz", features=unlike.astype(np.float32),
             ids=np.asarray(["n0", "n1", "n2"]))
    weak = projects.copy(tmp_path / "weak", quality="weak")
    assert drcl(weak, monkeypatch, "promote").exit_code == 0  # the champions index the texts
    built = drcl(root, monkeypatch, "index", "-m", "text", "--features", "texts.npz", "--out",
                 "index.npz")
    assert built.exit_code == 0, built.output
    return root, built.stdout


def search(root: Path, monkeypatch, database: str, *extra: str) -> list[list[str]]:
    result = drcl(root, monkeypatch, "search", "-q", "image", "--queries", "images.npy",
                  "--database", database, "-k", "10", "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return [[m["id"] for m in r["matches"]] for r in json.loads(result.stdout)["results"]]


def test_an_approximate_index_keeps_its_recall_promise(indexed, monkeypatch):
    root, said = indexed
    own = read_index(root / "index.npz")
    assert own.meta["layout"]["kind"].startswith("ivf_"), own.meta
    assert f"index.npz: {SIZE} text items embedded by drcl-encoder-text v1; IVF" in said
    assert f"recall@10 {own.meta['recall_at_10']:.3f} on 300 held-back items" in said
    # measured on the queries it will be asked: image queries of the validation split
    built = drcl(root, monkeypatch, "index", "-m", "text", "--features", "texts.npz", "--out",
                 "index.npz", "--queries", "data/prepared/image.npz", "--queries-key",
                 "val.features", "-q", "image")
    assert built.exit_code == 0, built.output
    asked = read_index(root / "index.npz")
    assert asked.meta["calibrated_on"] == "given queries" and "given queries" in built.stdout
    assert asked.meta["recall_at_10"] >= 0.9 and asked.vectors.nprobe >= own.vectors.nprobe
    approximate = search(root, monkeypatch, "index.npz")  # test queries: none chose anything
    exact = search(root, monkeypatch, "texts.npz", "-d", "text")  # embedded and searched exactly
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact,
                                                                strict=True)])
    assert recall >= 0.8, recall  # 20 test queries: within sampling error of the 0.9 promised
    model = mlflow.pyfunc.load_model("models:/drcl-set@champion",
                                     model_config={"indexes": [str(root / "index.npz")]})
    asked_for = [{"modality": "image", "features": row.tolist(), "id": str(i)}
                 for i, row in enumerate(np.load(root / "images.npy"))]
    served = model.predict(asked_for, params={"database": str(root / "index.npz"),
                                              "top_k": 10})
    assert [[m.id for m in answer.matches] for answer in served] == approximate
    line = one_error_line(drcl(root, monkeypatch, "index", "-m", "text", "--features",
                               "texts.npz", "--out", "index.npz", "--queries", "images.npy"))
    assert "index: give --queries with --query-modality, or neither" in line


def test_items_come_and_go_by_id(indexed, monkeypatch):
    root, _ = indexed
    added = drcl(root, monkeypatch, "index-add", "index.npz", "--features", "more.npz")
    assert added.exit_code == 0 and added.stdout.strip() == (
        f"index.npz: 3 items added, {SIZE + 3} in all")
    np.save(root / "new-texts.npy", np.load(root / "more.npz")["features"])
    found = drcl(root, monkeypatch, "search", "-q", "text", "--queries", "new-texts.npy",
                 "--database", "index.npz", "-k", "1", "--format", "json")
    assert [r["matches"][0]["id"] for r in json.loads(found.stdout)["results"]] == [
        "n0", "n1", "n2"]
    removed = drcl(root, monkeypatch, "index-remove", "index.npz", "n1", "t0007")
    assert removed.exit_code == 0 and removed.stdout.strip() == (
        f"index.npz: 2 items removed, {SIZE + 1} left")
    ids = set(read_index(root / "index.npz").ids)
    assert "n1" not in ids and "t0007" not in ids and {"n0", "n2", "t0008"} <= ids

    before = (root / "index.npz").read_bytes()
    np.savez(root / "wide.npz", features=np.zeros((2, 7), np.float32), ids=np.asarray(["w0",
                                                                                      "w1"]))
    for args, message in [
        (("index-remove", "index.npz", "n1"), "remove: id 'n1' is not in the index"),
        (("index-add", "index.npz", "--features", "more.npz"),
         "add: id 'n0' is already in the index"),
        (("index-add", "index.npz", "--features", "wide.npz"),
         "wide.npz: 7-d features, but the text encoder"),
        (("index-add", "texts.npz", "--features", "more.npz"),
         "texts.npz: not an index; build one with `drcl index`"),
    ]:
        assert message in one_error_line(drcl(root, monkeypatch, *args)), args
        assert (root / "index.npz").read_bytes() == before, args
    assert drcl(root, monkeypatch, "promote").exit_code == 0  # new champions: the index is stale
    assert "index.npz: built with drcl-encoder-text v1, but the champion is drcl-encoder-text " \
           "v2" in one_error_line(drcl(root, monkeypatch, "index-add", "index.npz",
                                       "--features", "wide.npz"))
    assert (root / "index.npz").read_bytes() == before


def test_a_bad_recall_target_is_refused_before_anything_is_written(indexed, monkeypatch):
    root, _ = indexed
    before = (root / "index.npz").read_bytes()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["index"]["recall_at_10"] = 1.5
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    line = one_error_line(drcl(root, monkeypatch, "index", "-m", "text", "--features",
                               "texts.npz", "--out", "index.npz"))
    assert "index.recall_at_10: Input should be less than or equal to 1" in line
    assert (root / "index.npz").read_bytes() == before


def test_an_index_of_the_earlier_format_is_still_searched(indexed, monkeypatch):
    root, _ = indexed
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["index"]["kind"] = "flat"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert drcl(root, monkeypatch, "index", "-m", "text", "--features", "texts.npz", "--out",
                "exact.npz").exit_code == 0
    exact = read_index(root / "exact.npz")
    stored = exact.vectors.index.reconstruct_batch(np.arange(exact.vectors.size))
    meta = {k: v for k, v in exact.meta.items() if k not in ("layout", "nprobe", "size",
                                                               "dim", "recall_at_10",
                                                               "build_s")}
    np.savez(root / "old.npz", embeddings=stored, ids=np.asarray(exact.ids),
             meta=np.asarray(json.dumps({**meta, "format": "drcl-index/1"})))
    assert search(root, monkeypatch, "old.npz") == search(root, monkeypatch, "exact.npz")
    # and searched as an exact index is: the same as plain features embedded on the fly
    assert search(root, monkeypatch, "exact.npz") == search(root, monkeypatch, "texts.npz",
                                                            "-d", "text")


def test_shards_split_by_id_range_answer_as_one_index(indexed, monkeypatch):
    root, _ = indexed
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["index"]["kind"] = "flat"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with np.load(root / "texts.npz") as npz:
        features, ids = npz["features"], npz["ids"]
    for n, part in enumerate((slice(0, 1000), slice(1000, SIZE))):
        np.savez(root / f"part{n}.npz", features=features[part], ids=ids[part])
        assert drcl(root, monkeypatch, "index", "-m", "text", "--features", f"part{n}.npz",
                    "--out", f"shard{n}.npz").exit_code == 0
    assert drcl(root, monkeypatch, "index", "-m", "text", "--features", "texts.npz", "--out",
                "whole.npz").exit_code == 0
    assert search(root, monkeypatch, "shard0.npz", "--database", "shard1.npz") == search(
        root, monkeypatch, "whole.npz")
    line = one_error_line(drcl(root, monkeypatch, "search", "-q", "image", "--queries",
                               "images.npy", "--database", "shard0.npz", "--database",
                               "part1.npz"))
    assert "part1.npz: plain features cannot be a shard" in line
