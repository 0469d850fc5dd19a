"""What a small pipeline run leaves in MLflow: one parent run, a child per stage or modality,
with params, per-epoch losses, SPL scores, MAP figures, pictures and checksums."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from drcl.cli import app
from drcl.data.dataset import dataset_checksum, file_sha256, load_manifest
from drcl.errors import DrclError
from tests.integration.project import write_params

MODALITIES = ["image", "text", "audio"]


def drcl(*args: str):
    return CliRunner().invoke(app, list(args))


def track(project, **groups) -> None:
    """Switch tracking on in the project's params (the fast test params switch it off)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    write_params(project, data=params["data"], tracking={"enabled": True}, **groups)


def run_pipeline() -> None:
    for step in (["prepare"], ["prior"], *(["train", "--modality", m] for m in MODALITIES),
                 ["evaluate"]):
        result = drcl(*step)
        assert result.exit_code == 0, (step, result.output)


def runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("drcl")
    return client.search_runs([experiment.experiment_id], max_results=100)


def test_a_pipeline_run_is_one_parent_with_a_child_per_stage(project, mlflow_store):
    track(project)
    run_pipeline()
    client = MlflowClient(mlflow_store)
    found = runs(client)
    parents = [r for r in found if r.data.tags.get("drcl.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["train.epochs"] == "8" and parent.data.tags["drcl.git_commit"]
    children = {r.info.run_name: r for r in found if r is not parent}
    assert set(children) == {"prior", "evaluate", *(f"train@{m}" for m in MODALITIES)}
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.params["model.hidden_dim"] == "32"
        assert child.data.tags["drcl.git_commit"] == parent.data.tags["drcl.git_commit"]

    manifest = load_manifest(project / "data/prepared")
    prior = children["prior"]
    summary = json.loads((project / "metrics/prior.json").read_text())
    assert prior.data.tags["drcl.chosen_modality"] == summary["chosen"]
    assert prior.data.tags["drcl.dataset_sha256"] == dataset_checksum(manifest)
    assert prior.data.metrics["quality_score.image"] == pytest.approx(summary["scores"]["image"])
    assert len(client.get_metric_history(prior.info.run_id, "spl.text.score")) == 8

    image = children["train@image"]
    assert image.data.tags["drcl.dataset_sha256"] == file_sha256(
        project / "data/prepared/image.npz")
    for key in ("train_loss", "val_loss"):
        history = client.get_metric_history(image.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 9))
    assert {a.path for a in client.list_artifacts(image.info.run_id)} >= {
        "image.csv", "train_image.png", "params.yaml"}

    evaluate = children["evaluate"]
    report = json.loads((project / "metrics/eval.json").read_text())
    assert evaluate.data.metrics["map_all.mean"] == pytest.approx(report["map_all"]["mean"])
    assert evaluate.data.metrics["map_at_50.image_to_text"] == pytest.approx(
        report["map_at_50"]["image->text"])
    assert {a.path for a in client.list_artifacts(evaluate.info.run_id)} >= {
        "pr_curves.png", "pr", "eval.json"}

    # a stage rerun with the same params joins the same parent; new params start a new one
    assert drcl("train", "--modality", "image").exit_code == 0
    track(project, train={"lr": 1e-3})
    assert drcl("train", "--modality", "text").exit_code == 0
    found = runs(client)
    parents = [r for r in found if r.data.tags.get("drcl.kind") == "pipeline"]
    assert len(parents) == 2
    by_parent = {}
    for r in found:
        by_parent.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r.info.run_name)
    assert sorted(by_parent[parent.info.run_id]).count("train@image") == 2


def test_the_parent_can_be_named_and_a_failed_stage_is_marked(project, mlflow_store,
                                                              monkeypatch):
    track(project)
    assert drcl("prepare").exit_code == 0
    client = MlflowClient(mlflow_store)
    experiment = client.create_experiment("drcl")
    outer = client.create_run(experiment, run_name="kubeflow run").info.run_id
    monkeypatch.setenv("DRCL_PIPELINE_RUN_ID", outer)

    def fail(*args, **kwargs):
        raise DrclError("prior: injected failure")

    monkeypatch.setattr("drcl.stages.prior.select_prior", fail)
    assert drcl("prior").exit_code == 1
    (child,) = [r for r in runs(client) if r.info.run_id != outer]
    assert child.data.tags["mlflow.parentRunId"] == outer and child.info.status == "FAILED"
    assert client.get_run(outer).info.status == "RUNNING"  # whoever named it ends it
    monkeypatch.setenv("DRCL_PIPELINE_RUN_ID", "no-such-run")
    assert "DRCL_PIPELINE_RUN_ID: no run 'no-such-run'" in drcl("prior").stderr


def test_default_store_is_sqlite_in_the_working_folder(project, empty_mlflow_store,
                                                       monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DRCL_PIPELINE_RUN_ID", raising=False)
    assert drcl("prepare").exit_code == 0
    assert drcl("prior").exit_code == 0  # tracking off (the fast params): no store at all
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()
    shutil.copyfile(empty_mlflow_store, project / "mlflow.db")  # spares creating the schema
    track(project)
    assert drcl("prior").exit_code == 0
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert {r.info.run_name for r in runs(client)} >= {"prior"}
    assert (project / "mlruns").is_dir()


def test_an_unreachable_tracking_server_stops_the_stage_before_it_starts(project,
                                                                         monkeypatch):
    track(project)
    assert drcl("prepare").exit_code == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    result = drcl("prior")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"drcl: error: MLflow at http://127.0.0.1:{port} is unreachable" in result.stderr
    assert not (project / "models").exists()


KILLED_STAGE = """
import os, signal
import drcl.stages.prior as stages
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # killed outright: no chance to end its runs
stages.select_prior = die
from drcl.cli import app
app(["prior"], prog_name="drcl")
"""


def test_runs_of_a_killed_stage_are_marked_killed_by_the_next_one(project, mlflow_store):
    import os
    import subprocess
    import sys

    track(project)
    assert drcl("prepare").exit_code == 0
    killed = subprocess.run([sys.executable, "-c", KILLED_STAGE], cwd=project, check=False,
                            env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_store})
    assert killed.returncode == -9
    client = MlflowClient(tracking_uri=mlflow_store)
    left = {r.data.tags["drcl.kind"]: r.info.run_id for r in runs(client)
            if r.info.status == "RUNNING"}
    assert set(left) == {"stage", "pipeline"}  # the prior stage's run and its parent
    assert drcl("prior").exit_code == 0
    after = {r.info.run_id: r.info.status for r in runs(client)}
    assert after[left["stage"]] == "KILLED"
    assert "RUNNING" not in after.values()  # the parent ends with the stage that rejoined it
