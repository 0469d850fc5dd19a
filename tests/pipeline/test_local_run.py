"""The whole pipeline on this machine (kfp SubprocessRunner) on a slice of the default data set:
the same MAP as the `drcl` stages (what `dvc repro` runs) with the same params and seed, the
same kind of outputs, promotion under the gate, and one MLflow parent run for the Kubeflow run.
The slice's labels are made noisy and corrected with the cross-modal cost, so the SPL
posteriors travel from the prior task to the training tasks as they do between DVC stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drcl.cli import app
from tests.pipeline.conftest import ROOT

pytestmark = pytest.mark.slow

SLICE = ["fou", "kar", "mor"]
FAST = {"seed": 0, "device": "cpu", "precision": "fp32",  # the same figures on any CPU
        "data": {"source": "uci_mfeat", "modalities": SLICE,
                 "noise": {"kind": "symmetric", "rate": 0.2}},
        "model": {"hidden_dim": 32, "common_dim": 16},
        "train": {"epochs": 3, "batch_size": 32, "lr": 3e-3,
                  "correction": {"method": "partial_ot", "warmup": 1, "cost": "cross_modal"},
                  # a seed ensemble of two for one view: two tasks, packed into one encoder
                  "per_modality": {"kar": {"ensemble": 2}}},
        # the gate measures the noisy validation labels: a lower bar than clean data clears
        "promotion": {"min_mean_map": 0.2, "min_direction_map": 0.1},
        # re-ranking chosen on validation: evaluate and promote tasks read that split too
        "evaluate": {"rerank": {"dba_k": [0, 3], "qe_k": [0, 3], "alpha": [3.0]}},
        "tracking": {"enabled": True, "experiment": "drcl-kfp-test"}}


def write_params(folder: Path, **changes: dict) -> Path:
    """The project's params.yaml with the fast settings, then ``changes``, merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for group, values in (FAST | changes).items():
        params[group] = {**params[group], **values} if isinstance(values, dict) else values
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def drcl(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result


def test_local_pipeline_run_matches_the_cli_stages(tmp_path, monkeypatch, uci_cache):
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    monkeypatch.setenv("DRCL_CACHE_DIR", str(uci_cache))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    for name in ("MLFLOW_REGISTRY_URI", "DRCL_PIPELINE_RUN_ID"):
        monkeypatch.delenv(name, raising=False)

    params = write_params(tmp_path / "kfp")
    command = [str(Path(sys.executable).parent / "drcl"), "pipeline", "run", "--local",
               "-p", str(params), "--pipeline-root", str(tmp_path / "kfp" / "runs")]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # only a summary: each task, MAP, what promotion did, what it computed, where the outputs
    # are (kfp's own log is in the run's folder)
    lines = result.stdout.splitlines()
    trains = ["train@fou", "train@kar#0", "train@kar#1", "train@mor"]
    assert [line.split()[:2] for line in lines[:7]] == [
        ["prepare", "ran"], ["prior", "ran"], *([t, "ran"] for t in trains),
        ["evaluate", "ran"]]
    summary, promotion, computed, where = lines[7:]
    assert computed == "computed: prior, " + ", ".join(trains)
    evaluation = Path(where.removeprefix("outputs in "))
    run_dir = evaluation.parent
    assert run_dir.is_relative_to(tmp_path / "kfp" / "runs") and (run_dir / "kfp.log").is_file()
    assert promotion.startswith("promotion: champion: drcl-set v1; mean MAP@all ")

    # the CLI stages (each a dvc.yaml stage's command), tracking off, in their own folder
    cli_dir = tmp_path / "cli"
    write_params(cli_dir, tracking={"enabled": False})
    monkeypatch.chdir(cli_dir)
    for step in (["prepare"], ["prior"], *(["train", "-m", m] for m in SLICE), ["evaluate"]):
        drcl(*step)

    expected = json.loads((cli_dir / "metrics/eval.json").read_text())
    got = json.loads((evaluation / "metrics/eval.json").read_text())
    assert got == expected  # same code, params and seed: the same MAP, to the last digit
    reranked = expected["reranked"]
    assert summary == (f"test MAP@all {expected['map_all']['mean']:.4f}, "
                       f"MAP@50 {expected['map_at_50']['mean']:.4f}, "
                       f"re-ranked MAP@all {reranked['map_all']['mean']:.4f}, "
                       f"re-ranked MAP@50 {reranked['map_at_50']['mean']:.4f}")
    assert expected["map_all"]["mean"] > 0.3  # ten classes: chance is about 0.1
    # each training task corrected its labels with the posteriors the prior task handed over
    histories = {h.stem: h.read_text() for h in evaluation.glob("plots/train/*.csv")}
    assert sorted(histories) == sorted(SLICE)
    assert all("correction_label_accuracy" in text for text in histories.values())
    assert sorted(p.name for p in (evaluation / "plots/pr").iterdir()) == \
        sorted(p.name for p in (cli_dir / "plots/pr").iterdir())
    assert (evaluation / "plots/images/pr_curves.png").stat().st_size > 1000
    assert sorted(p.stem for p in (evaluation / "models/encoders").iterdir()) == sorted(SLICE)
    from drcl.model import read_metadata

    assert read_metadata(evaluation / "models/encoders/kar.safetensors")["ensemble"] == "2"
    assert (evaluation / "models/encoders/kar.safetensors").read_bytes() == \
        (cli_dir / "models/encoders/kar.safetensors").read_bytes()  # packed as drcl train
    summary_md = next(run_dir.glob("kfp/*/evaluate/summary")).read_text()
    assert "| fou |" in summary_md and "map_all" in summary_md
    outcome = json.loads(next(run_dir.glob("kfp/*/promote/outcome")).read_text())
    assert outcome["verdict"] == "champion"
    assert sorted(outcome["members"]) == sorted(SLICE)
    assert "reranked" in got and outcome["rerank"] == {
        k: expected["rerank"][k] for k in ("dba_k", "qe_k", "alpha")}

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    assert str(client.get_model_version_by_alias("drcl-set", "champion").version) == "1"
    experiment = client.get_experiment_by_name("drcl-kfp-test")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "drcl.kfp_run_id" in r.data.tags]
    assert parent.info.status == "FINISHED"  # closed by the exit handler
    assert parent.data.tags["drcl.kfp_run_id"] == run_dir.name
    assert parent.data.tags["drcl.task.train.fou"] == "ran"
    children = sorted(r.info.run_name for r in runs
                      if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    # one training run per task: the ensemble's two members each have theirs
    assert children == ["evaluate", "prior", "promote", "train@fou", "train@kar", "train@kar",
                        "train@mor"]
    # (what a run reuses from earlier ones: tests/pipeline/test_incremental.py)
