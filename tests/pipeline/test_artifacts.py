"""The glue between kfp artifacts and drcl's stage paths, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drcl.errors import DrclError
from drcl.kfp.artifacts import (
    flat_metrics,
    gather_encoders,
    map_table,
    task_layout,
    task_params,
    with_extracted,
)
from drcl.layout import Layout
from tests.pipeline.conftest import ROOT


def encoder_artifact(root: Path, *modalities: str) -> Path:
    for m in modalities:
        path = Layout(root).encoder(m)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(m.encode())
    return root


def test_a_task_writes_under_its_output_and_reads_its_inputs(tmp_path):
    a = encoder_artifact(tmp_path / "train-a", "image")
    b = encoder_artifact(tmp_path / "train-b", "text")
    layout = task_layout(tmp_path / "out", dataset=tmp_path / "ds", prior=tmp_path / "pr",
                         encoders=[a, b])
    assert layout.data == tmp_path / "ds/data/prepared"
    assert layout.prior == tmp_path / "pr/models/prior.safetensors"
    assert layout.encoder("text") == b / "models/encoders/text.safetensors"
    assert layout.eval_metrics == tmp_path / "out/metrics/eval.json"
    assert layout.encoder("audio") == tmp_path / "out/models/encoders/audio.safetensors"

    evaluation = task_layout(tmp_path / "eval")
    assert gather_encoders([a, b], evaluation) == ["image", "text"]
    assert evaluation.encoder("image").read_bytes() == b"image"


def test_encoder_artifacts_that_do_not_add_up(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DrclError, match=r"empty: no encoder in this artifact$"):
        task_layout(tmp_path / "out", encoders=[empty])
    a = encoder_artifact(tmp_path / "a", "image")
    again = encoder_artifact(tmp_path / "b", "image")
    with pytest.raises(DrclError, match="a second encoder for modality 'image'"):
        gather_encoders([a, again], task_layout(tmp_path / "out"))


def test_task_params_are_validated_and_recorded(tmp_path):
    layout = task_layout(tmp_path / "out")
    params = task_params(layout, seed=3, model={"hidden_dim": 64.0, "common_dim": 16.0})
    assert params.seed == 3 and params.model.hidden_dim == 64  # kfp's 64.0, as an int
    saved = yaml.safe_load((tmp_path / "out/params.yaml").read_text())  # the record
    assert saved["seed"] == 3 and saved["model"]["hidden_dim"] == 64
    with pytest.raises(DrclError) as err:
        task_params(task_layout(tmp_path / "bad"), train={"lr": -1})
    assert str(err.value).startswith("pipeline arguments: train.lr: Input should be greater")
    assert not (tmp_path / "bad").exists()


def test_extracted_data_points_at_the_extract_artifact(tmp_path):
    data = {"source": "extracted", "modalities": ["image"]}
    assert with_extracted(data, None) == data
    assert with_extracted(data, tmp_path)["path"] == str(tmp_path / "data/extracted")


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
    last = result.stderr.splitlines()[-1]  # after kfp's own log of the failed task
    assert last.startswith("drcl: error: local pipeline run failed: Pipeline 'drcl' finished "
                           "with status FAILURE. Inner task failed: 'prepare' inside ")
    assert last.endswith("(its log is above)")
    assert "missing.npz: npz file not found" in result.stdout  # the task's own one line
    assert not list((tmp_path / "runs").rglob("dataset/data"))  # nothing half-written

