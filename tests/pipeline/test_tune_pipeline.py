"""The tuning pipeline: compiled for a cluster (its workers fanned out on GPU nodes over one
shared study, never cached, after the training pipeline's own first tasks), refused without a
study every worker reaches, and run here with kfp's local runner, where the settings it finds,
applied, give the training pipeline the validation MAP@all the search reported."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drcl.cli import app
from drcl.config import deep_merge, parse_params
from drcl.errors import DrclError
from drcl.kfp import task_steps
from drcl.kfp.project import STAGE_GROUPS, compile_pipeline
from tests.pipeline.conftest import ROOT
from tests.pipeline.test_compile import all_tasks, group, handler
from tests.pipeline.test_local_run import write_params

CLUSTER_STUDY = {"storage": "postgresql://drcl@optuna-db.drcl.svc.cluster.local/optuna",
                 "workers": 3}


@pytest.fixture(scope="module")
def tuning(tmp_path_factory, project_params) -> tuple[dict, dict]:
    """What `drcl pipeline compile --tune` writes for the project's params with a study in
    the cluster's database."""
    params = parse_params(deep_merge(project_params.model_dump(mode="json"),
                                     {"tune": CLUSTER_STUDY}))
    out = tmp_path_factory.mktemp("tune") / "drcl-tune-pipeline.yaml"
    compile_pipeline(params, out, tuning=True)
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform


def test_workers_fan_out_on_gpu_nodes_over_one_study(tuning, project_params):
    spec, platform = tuning
    cluster = project_params.kubeflow
    assert set(all_tasks(spec)) == {"resolve", "probe", "prepare", "prior", "tune",
                                    "tune-result", "finish"}
    loop, loop_tasks = group(spec, handler(spec), "workers")
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"  # tune.workers
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    assert list(loop_tasks) == ["tune"]
    executors = spec["deploymentSpec"]["executors"]
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    accelerator = executors["exec-tune"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == cluster.gpu.accelerator
    assert kube["exec-tune"]["nodeSelector"]["labels"] == cluster.node_selector
    assert "accelerator" not in executors["exec-tune-result"]["container"]["resources"]
    # every worker reads the probe's view (precision as the GPU nodes make it) and the prior
    worker = loop_tasks["tune"]["inputs"]["parameters"]
    assert worker["task"]["componentInputParameter"] == "pipelinechannel--probe-tune"
    assert worker["class_prior"]["componentInputParameter"] == \
        "pipelinechannel--prior-class_prior"
    result = handler(spec)["tune-result"]["inputs"]["parameters"]["results"]
    assert result["taskOutputParameter"]["producerTask"].startswith("for-loop-")
    # the study is the workers' state: neither they nor the result come from Kubeflow's cache
    cached = {name for name, t in all_tasks(spec).items()
              if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"prepare", "prior"}


def test_the_first_tasks_are_the_training_pipelines(tuning, compiled):
    """Same components, same executors: a tuning run's data set and prior tasks have the
    keys a training run's have, and each reuses what the other left in the store."""
    spec, _ = tuning
    train_spec, _ = compiled
    for name in ("resolve", "probe", "prepare", "prior", "finish"):
        assert spec["components"][f"comp-{name}"] == train_spec["components"][f"comp-{name}"]
        assert spec["deploymentSpec"]["executors"][f"exec-{name}"] == \
            train_spec["deploymentSpec"]["executors"][f"exec-{name}"]


def test_parameters_are_the_stage_groups_and_tune(tuning, project_params):
    spec, _ = tuning
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert set(declared) == {*STAGE_GROUPS, "tune"}
    tune = declared["tune"]["defaultValue"]
    assert tune["storage"] == CLUSTER_STUDY["storage"] and tune["workers"] == 3
    assert tune["space"].keys() == project_params.tune.space.keys()


def test_the_database_password_stays_in_the_cluster(tmp_path, monkeypatch, project_params):
    monkeypatch.setenv("PGPASSWORD", "pg-s3cr3t-never-in-yaml")
    params = parse_params(deep_merge(project_params.model_dump(mode="json"),
                                     {"tune": CLUSTER_STUDY}))
    out = tmp_path / "t.yaml"
    compile_pipeline(params, out, tuning=True)
    assert "pg-s3cr3t-never-in-yaml" not in out.read_text()


@pytest.mark.parametrize(("tune", "message"), [
    ({}, "tune.storage: null (sqlite in tune/) is a file one pod sees"),
    ({"storage": "sqlite:///tune/study.db"}, "tune.storage: sqlite:///tune/study.db is a file"),
    ({"storage": CLUSTER_STUDY["storage"], "workers": 0}, "tune.workers: Input should be "
                                                         "greater than or equal to 1"),
])
def test_compile_refuses_a_study_the_workers_cannot_share(tmp_path, monkeypatch, tune, message):
    monkeypatch.chdir(ROOT)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tune": tune}))
    out = tmp_path / "t.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "--tune", "-p", str(params),
                                      "-o", str(out)])
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_compile_tune_writes_its_own_file(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"modalities": ["fou", "kar"]},
        "kubeflow": {"store": "s3://bucket/drcl-store"}, "tune": CLUSTER_STUDY}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["pipeline", "compile", "--tune"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "build" / "drcl-tune-pipeline.yaml").is_file()
    assert not (tmp_path / "build" / "drcl-pipeline.yaml").exists()


def test_submit_tune_uploads_the_tuning_pipeline_under_its_own_name(tmp_path, monkeypatch,
                                                                    fake_client,
                                                                    project_params):
    monkeypatch.chdir(ROOT)
    raw = project_params.model_dump(mode="json", exclude_none=True)
    raw["tune"] |= CLUSTER_STUDY
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["pipeline", "submit", "--tune", "-p", str(params),
                                      "--host", "http://kfp.example.test"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"run 'drcl-tune-\d{8}-\d{6}' created: \S+", result.stdout.strip())
    (upload,) = fake_client.calls("upload_pipeline")
    assert upload["pipeline_name"] == "drcl-tune"
    (version,) = fake_client.calls("upload_pipeline_version")
    assert re.fullmatch(r"drcl-tune-[0-9a-f]{12}", version["name"])
    (run,) = fake_client.calls("run_pipeline")
    assert run["params"]["tune"]["storage"] == CLUSTER_STUDY["storage"]
    assert "exec-tune" in fake_client.uploaded[-1]["deploymentSpec"]["executors"]

    # without a study every worker reaches: one line, and nothing sent
    raw["tune"].pop("storage")
    params.write_text(yaml.safe_dump(raw))
    requests = len(fake_client.requests)
    result = CliRunner().invoke(app, ["pipeline", "submit", "--tune", "-p", str(params),
                                      "--host", "http://kfp.example.test"])
    assert result.exit_code == 1 and result.stderr.startswith("drcl: error: tune.storage: ")
    assert len(fake_client.requests) == requests


def test_kept_embeddings_reach_every_worker_through_the_store(tmp_path):
    """What one worker keeps (the baseline's and each best encoder's validation embeddings),
    another fetches instead of training it again."""
    from drcl.kfp.store import Store

    store = Store(tmp_path / "store")
    kept = tmp_path / "one" / "fou-0123.npy"
    kept.parent.mkdir()
    kept.write_bytes(b"\x93NUMPY embeddings")
    other = task_steps.StoredEmbeddings(store)
    assert not other.fetch("fou-0123.npy", tmp_path / "two" / "fou-0123.npy")
    task_steps.StoredEmbeddings(store).keep("fou-0123.npy", kept)
    assert other.fetch("fou-0123.npy", tmp_path / "two" / "fou-0123.npy")
    assert (tmp_path / "two" / "fou-0123.npy").read_bytes() == kept.read_bytes()


def test_workers_that_disagree_are_one_line(tmp_path):
    """Every worker settles on the study's best trials; two different answers mean the study
    was changed under them, and nothing is written."""
    task = {"params": {"tune": {"storage": "sqlite:///nowhere.db"}}}
    results = [{"worker": 0, "overrides": {"fou": {"lr": 0.001}}, "modalities": ["fou"]},
               {"worker": 1, "overrides": {"fou": {"lr": 0.002}}, "modalities": ["fou"]}]
    with pytest.raises(DrclError, match=r"^tune: workers 0 and 1 ended with different"):
        task_steps.tune_result(task, results=results, tracking={"enabled": False},
                               folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_local_tuning_run_is_reproduced_by_the_training_pipeline(tmp_path, monkeypatch,
                                                                 uci_cache):
    """`drcl pipeline run --local --tune` as typed: two workers on one study (the first
    spends the budget, the second finds it spent), best.yaml in tune/; applied, the training
    pipeline trains with it and its promotion gate measures the very validation MAP@all the
    search reported. Run again before that, the search resumes its study and runs no trial
    again."""
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("DRCL_CACHE_DIR", str(uci_cache))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    for name in ("MLFLOW_REGISTRY_URI", "DRCL_PIPELINE_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    write_params(
        project, data={"source": "uci_mfeat", "modalities": ["fou", "kar"]},
        train={"epochs": 3, "batch_size": 32, "lr": 3e-3},
        evaluate={"rerank": {"dba_k": [0], "qe_k": [0], "alpha": [3.0]}},
        tune={"trials": 3, "workers": 2, "strategy": "coordinate",
              "space": {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}})
    drcl = str(Path(sys.executable).parent / "drcl")

    def run(*args: str) -> list[str]:
        result = subprocess.run([drcl, *args], cwd=project, env=dict(os.environ),
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout.splitlines()

    search = run("pipeline", "run", "--local", "--tune")
    found = float(re.match(r"validation MAP@all (\S+) \(before: (\S+)\)", search[0])[1])
    assert search[1].startswith("trials: 6, by 2 worker(s)")
    rows = list(csv.DictReader((project / "tune" / "trials.csv").open()))
    assert {r["study"] for r in rows} == {"drcl.fou", "drcl.kar"} and len(rows) == 6
    log = (Path(search[-1].removeprefix("outputs in ")).parent / "kfp.log").read_text()
    assert "tune worker 1: kar: validation MAP@all" in log  # the second worker: no trial left
    # what the first worker kept, the second fetched: the baseline and each best, by name
    kept = sorted(p.stem.split("-")[0] for p in
                  (project / "build" / "kfp-local" / "store" / "tasks" / "tune-embeddings")
                  .glob("*.json"))
    assert set(kept) == {"fou", "kar"} and len(kept) >= 2
    best = (project / "tune" / "best.yaml").read_text()
    # run again, the study resumes: its budget is spent, no trial runs, the same result
    again = run("pipeline", "run", "--local", "--tune")
    assert again[0] == search[0]
    assert len(list(csv.DictReader((project / "tune" / "trials.csv").open()))) == 6
    assert (project / "tune" / "best.yaml").read_text() == best

    run("profile", "apply", "tune/best.yaml")
    trained = run("pipeline", "run", "--local")
    promotion = next(line for line in trained if line.startswith("promotion: "))
    assert f"mean MAP@all {found:.4f} (val)" in promotion
    assert next(line for line in trained if line.startswith("prior ")).split()[1] == "reused"


    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("drcl-kfp-test")
    (study,) = client.search_runs([experiment.experiment_id],
                                  filter_string="tags.`drcl.tune.study` = 'drcl'")
    assert study.info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.`mlflow.parentRunId` = '{study.info.run_id}'"))
    assert len(children) == 6
    assert {a.path for a in client.list_artifacts(study.info.run_id)} == {"best.yaml",
                                                                          "trials.csv"}
