"""The glue between a Kubeflow task and drcl's stage paths: the store, the data set by
reference, keyed tasks, and a failed local run's one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from drcl.config import DataParams, Params
from drcl.data.dataset import load_modality
from drcl.data.prepare import prepare_dataset
from drcl.errors import DrclError
from drcl.kfp.artifacts import flat_metrics, map_table, with_extracted
from drcl.kfp.plan import params_of
from drcl.kfp.store import Store, sha256_file
from drcl.kfp.tasks import (
    dataset_inputs,
    dataset_ref,
    fetch_dataset,
    run_keyed,
    split_dataset,
    task_layout,
)
from drcl.layout import Layout
from tests.pipeline.conftest import ROOT


def test_the_store_keeps_files_by_content_and_checks_them(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "a").write_bytes(b"weights")
    sha = store.put(tmp_path / "a")
    assert sha == sha256_file(tmp_path / "a") and store.has(sha)
    assert store.put(tmp_path / "a") == sha and store.written == 7  # stored once
    assert store.get(sha, tmp_path / "back" / "a").read_bytes() == b"weights"
    assert store.read == 7
    Path(store.object_path(sha)).write_bytes(b"tampered")
    with pytest.raises(DrclError, match=rf"object {sha[:12]} holds content .*; the store is "
                                        "damaged$"):
        store.get(sha, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    with pytest.raises(DrclError, match="object 000000000000 is missing"):
        store.get("0" * 64, tmp_path / "none")


def test_a_record_counts_only_when_every_object_it_names_exists(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "a").write_bytes(b"x")
    sha = store.put(tmp_path / "a")
    store.save_record("train", "k1", {"run": "r1", "outputs": {"a": sha}})
    assert store.record("train", "k1")["run"] == "r1"
    assert store.record("train", "other") is None
    store.save_record("train", "k2", {"run": "r1", "outputs": {"a": "f" * 64}})
    assert store.record("train", "k2") is None  # a cleaned store: run again


def test_a_keyed_task_runs_once_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_RUN_ID", "run-1")
    store = Store(tmp_path / "store")
    calls = []

    def work(given: Path, made: Path) -> None:
        calls.append(given)
        (made / "out.txt").write_text("result")

    first = run_keyed(store, "evaluate", task="evaluate", view={"evaluate": {"k": 5}}, code="c",
                      inputs={"x": "1"}, work=work)
    assert first.report["run"] == "run-1" and first.report["reused"] == ""
    monkeypatch.setenv("KFP_RUN_ID", "run-2")
    again = run_keyed(store, "evaluate", task="evaluate", view={"evaluate": {"k": 5}}, code="c",
                      inputs={"x": "1"}, work=work)
    assert len(calls) == 1 and again.outputs == first.outputs
    assert (again.report["run"], again.report["reused"]) == ("run-1", "store")
    other = run_keyed(store, "evaluate", task="evaluate", view={"evaluate": {"k": 5}},
                      code="c", inputs={"x": "2"}, work=work)
    assert len(calls) == 2 and other.report["run"] == "run-2"


def test_a_failed_task_records_nothing(tmp_path):
    store = Store(tmp_path / "store")

    def work(given: Path, made: Path) -> None:
        (made / "half.txt").write_text("half")
        raise DrclError("the step failed")

    with pytest.raises(DrclError, match="the step failed"):
        run_keyed(store, "prior", task="prior", view={}, code="c", inputs={}, work=work)
    assert not (tmp_path / "store" / "tasks").exists()


def test_a_data_set_travels_as_one_object_per_modality_and_split(tmp_path, uci_cache):
    params = Params(data=DataParams(modalities=["fou", "mor"]))
    prepared = tmp_path / "prepared"
    prepare_dataset(params, out_dir=prepared, cache_dir=uci_cache)
    store = Store(tmp_path / "store")
    split_dataset(prepared, tmp_path / "split")
    outputs = {p.relative_to(tmp_path / "split").as_posix(): store.put(p)
               for p in (tmp_path / "split").rglob("*") if p.is_file()}
    ref = dataset_ref(outputs, ["fou", "mor"])
    split_dataset(prepared, tmp_path / "again")  # the same data: the same objects
    assert sha256_file(tmp_path / "again" / "mor" / "test.npz") == ref["modalities"]["mor"][
        "test"]
    assert set(dataset_inputs(ref, ("test",))) == {"manifest", "fou.test", "mor.test"}

    layout = task_layout(tmp_path / "in", tmp_path / "out")
    fetch_dataset(store, ref, ("train", "val"), layout, modalities=["mor"])
    assert sorted(p.name for p in layout.data.iterdir()) == ["manifest.json", "mor.npz"]
    got = layout.modality("mor", ("train", "val"))
    whole = load_modality(prepared, "mor")
    for split in ("train", "val"):
        np.testing.assert_array_equal(got.split(split).features, whole.split(split).features)
        np.testing.assert_array_equal(got.split(split).labels, whole.split(split).labels)
        np.testing.assert_array_equal(got.split(split).ids, whole.split(split).ids)
    assert len(got.test) == 0  # a split the task did not fetch is empty, never stale
    with np.load(layout.data / "mor.npz") as npz:
        assert not any(name.startswith("test.") for name in npz.files)


def test_a_task_reads_its_inputs_and_writes_its_outputs_apart(tmp_path):
    layout = task_layout(tmp_path / "in", tmp_path / "out", prior=tmp_path / "p.safetensors",
                         encoders={"text": tmp_path / "t.safetensors"})
    assert layout.data == tmp_path / "in/data/prepared"
    assert layout.prior == tmp_path / "p.safetensors"
    assert layout.posteriors == tmp_path / "posteriors.npz"
    assert layout.encoder("text") == tmp_path / "t.safetensors"
    assert layout.encoder("audio") == tmp_path / "out/models/encoders/audio.safetensors"
    assert layout.eval_metrics == tmp_path / "out/metrics/eval.json"
    assert Layout(tmp_path).prior == tmp_path / "models/prior.safetensors"


def test_a_view_is_validated_params():
    params = params_of({"params": {"seed": 3.0, "model": {"hidden_dim": 64.0}}},
                       tracking={"enabled": False})
    assert params.seed == 3 and params.model.hidden_dim == 64  # kfp's 64.0, as an int
    with pytest.raises(DrclError) as err:
        params_of({"params": {"train": {"lr": -1}}})
    assert str(err.value).startswith("pipeline arguments: train.lr: Input should be greater")


def test_extracted_data_points_at_the_fetched_features(tmp_path):
    data = {"source": "extracted", "modalities": ["image"]}
    assert with_extracted(data, None) == data
    assert with_extracted(data, tmp_path)["path"] == str(tmp_path)


def test_markdown_summary_is_a_query_by_database_matrix():
    report = {"map_all": {"mean": 0.5, "a->b": 0.25, "b->a": 0.75}}
    page = map_table(report, ["a", "b"])
    assert "## map_all (mean 0.5000)" in page
    assert "| a |  | 0.2500 |" in page and "| b | 0.7500 |  |" in page


def test_held_out_classes_get_their_own_matrices_and_metric_names():
    table = {"mean": 0.5, "a->b": 0.25, "b->a": 0.75}
    report = {"map_all": table, "unseen": {"map_all": {"mean": 0.3, "a->b": 0.2, "b->a": 0.4}},
              "seen": {"map_all": table}}
    assert "## unseen map_all (mean 0.3000)" in map_table(report, ["a", "b"])
    flat = flat_metrics(report)
    assert flat["unseen.map_all.b->a"] == 0.4 and flat["map_all.mean"] == 0.5 and len(flat) == 9


def test_a_failing_task_fails_the_local_run_with_one_line(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"source": "npz", "path": str(tmp_path / "missing.npz"),
                      "modalities": ["image", "text"]}
    params["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [str(Path(sys.executable).parent / "drcl"), "pipeline", "run", "--local", "-p",
               str(tmp_path / "params.yaml"), "--pipeline-root", str(tmp_path / "runs")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"})
    assert result.returncode == 1
    assert result.stdout == ""  # kfp's log went to the run's log file
    (line,) = result.stderr.splitlines()
    assert line.startswith("drcl: error: local pipeline run local-")
    assert "missing.npz does not exist where this task runs" in line  # the task's own line
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert "does not exist where this task runs" in log.read_text()  # with its traceback
    assert not (tmp_path / "runs" / "store" / "tasks").exists()  # nothing recorded
