"""`drcl tune` as a user types it, on the small three-modality project: the search, what it
leaves, the tuned run reproduced from it, interruption and resumption, and bad input."""

from __future__ import annotations

import contextlib
import csv
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

from tests.integration.project import run, validation_map

pytestmark = pytest.mark.slow

MODALITIES = ("image", "text", "audio")


def drcl(project: Path, *args: str):
    return run([sys.executable, "-m", "drcl", *args], project)


def ok(project: Path, *args: str) -> str:
    done = drcl(project, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def in_process(*args: str):
    """The same command without a new interpreter: for checks that end before any training."""
    from typer.testing import CliRunner

    from drcl.cli import app

    return CliRunner().invoke(app, list(args))


def set_params(project: Path, **groups) -> None:
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for group, values in groups.items():
        raw[group] = {**raw.get(group, {}), **values}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _schema_made(path: Path) -> bool:
    """Whether Optuna finished making its tables (read-only: opening the storage before then
    would make them a second time, beside the search)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return bool(db.execute("SELECT version_num FROM alembic_version").fetchall())
        except sqlite3.OperationalError:
            return False


def study_trials(project: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials; KeyError while the search has not made it yet."""
    path = project / "tune" / "study.db"
    if not path.is_file() or not _schema_made(path):  # never race the search making it
        raise KeyError(name)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}").get_trials(
        deepcopy=False)


def finished_trials(project: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The finished trials as the search has them now, read while it writes: a read that
    meets the search's write lock or a study not made yet counts as none finished yet."""
    try:
        return [t for t in study_trials(project, name) if t.state.is_finished()]
    except (KeyError, sqlite3.Error, sqlalchemy.exc.SQLAlchemyError):
        return []


def wait_for_finished(proc: subprocess.Popen, project: Path, name: str, count: int,
                      timeout_s: float = 600) -> list[optuna.trial.FrozenTrial]:
    """Poll until the search has finished `count` trials (or it ended, or time ran out)."""
    deadline = time.monotonic() + timeout_s
    done: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline and proc.poll() is None and len(done) < count:
        time.sleep(0.2)
        done = finished_trials(project, name)
    return done


@pytest.fixture
def prepared(project) -> Path:
    set_params(project, tune={"trials": 3}, train={"epochs": 4})
    ok(project, "prepare")
    ok(project, "prior")
    return project


def test_tune_writes_a_profile_that_reproduces_its_figure(prepared, mlflow_store):
    # a width among the searched keys: the encoders' own, the prior fixed
    set_params(prepared, tracking={"enabled": True}, tune={"space": {
        "train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
        "train.hidden_dim": {"choices": [16, 48]}}})
    out = ok(prepared, "tune")
    assert "validation MAP@all" in out and "drcl profile apply tune/best.yaml" in out
    reported = float(out.rsplit("validation MAP@all ", 1)[1].split()[0])
    before = float(out.split("(before: ")[1].split(")")[0])
    assert reported >= before  # the first trial of each search is the settings before it

    best = yaml.safe_load((prepared / "tune" / "best.yaml").read_text())
    assert set(best) == {"train"} and set(best["train"]) == {"per_modality"}
    assert set(best["train"]["per_modality"]) <= set(MODALITIES)
    rows = list(csv.DictReader((prepared / "tune" / "trials.csv").open()))
    assert len([r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]) == 3 * 3
    assert {r["study"] for r in rows} == {f"drcl.{m}" for m in MODALITIES}

    # the tuned run, as the README has it: apply the profile, retrain, the same figure
    assert in_process("profile", "apply", "tune/best.yaml").exit_code == 0
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    assert params["train"]["per_modality"] == best["train"]["per_modality"]
    for m in MODALITIES:
        assert in_process("train", "--modality", m).exit_code == 0
    last = [float(r["val_map_all"]) for r in rows
            if r["study"] == "drcl.audio" and r["state"] == "COMPLETE"]
    assert validation_map(prepared) == pytest.approx(max(last), abs=1e-9)
    assert reported == pytest.approx(max(last), abs=5e-5)
    from drcl.model import read_metadata

    model_width = yaml.safe_load((prepared / "params.yaml").read_text())["model"]["hidden_dim"]
    for m in MODALITIES:
        width = best["train"]["per_modality"].get(m, {}).get("hidden_dim", model_width)
        meta = read_metadata(prepared / "models" / "encoders" / f"{m}.safetensors")
        assert int(meta["hidden_dim"]) == width
    assert {r["train.hidden_dim"] for r in rows} <= {"16", "48", str(model_width)}

    # MLflow: the study's run, one child run per trial, the best values as tags
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_store)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("drcl").experiment_id],
        filter_string="tags.`drcl.tune.study` = 'drcl'")
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=100)
    assert len(children) == 3 * 3
    assert parent.data.metrics["val_map_all_best"] == pytest.approx(reported, abs=5e-5)
    assert parent.info.status == "FINISHED"
    assert {"best.yaml", "trials.csv"} <= {a.path for a in client.list_artifacts(
        parent.info.run_id)}


def test_a_killed_search_resumes_without_repeating_finished_trials(prepared):
    set_params(prepared, tune={"trials": 6, "strategy": "joint"})
    proc = subprocess.Popen([sys.executable, "-m", "drcl", "tune"], cwd=prepared,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = wait_for_finished(proc, prepared, "drcl.joint", 2)
    proc.kill()  # SIGKILL: the running trial is left as it was
    proc.wait()
    assert 2 <= len(done) < 6, "the search ended before it could be killed"
    finished = {t.number: t.value for t in study_trials(prepared, "drcl.joint")
                if t.state.is_finished()}

    ok(prepared, "tune")
    trials = study_trials(prepared, "drcl.joint")
    counted = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                optuna.trial.TrialState.PRUNED)]
    assert len(counted) == 6  # the budget, not the budget plus what ran before
    for number, value in finished.items():  # kept as they were, not run again
        assert trials[number].value == value
    assert len(trials) <= 6 + 1  # at most the one interrupted trial besides


def test_sigint_stops_the_search_in_one_line_and_it_goes_on_later(prepared):
    set_params(prepared, tune={"trials": 3, "strategy": "joint"})
    proc = subprocess.Popen([sys.executable, "-m", "drcl", "tune"], cwd=prepared,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_finished(proc, prepared, "drcl.joint", 1), "no trial finished"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("drcl: interrupted; finished trials are kept")
    assert not (prepared / "tune" / "best.yaml").exists()  # nothing half-done written
    ok(prepared, "tune")
    assert (prepared / "tune" / "best.yaml").is_file()


@pytest.mark.parametrize(("tune", "expected"), [
    ({"trials": 0}, "tune.trials: Input should be greater than or equal to 1"),
    ({"space": {"train.lr": {"low": 1e-2, "high": 1e-3}}},
     "tune.space.train.lr: empty or inverted range: low 0.01 >= high 0.001"),
    ({"space": {"train.width": {"low": 1, "high": 2}}}, "tune.space: train.width: unknown key"),
    ({"space": {}}, "tune.space: empty"),
    ({"space": {"train.lr": {"low": 0.0, "high": 1e-3, "log": True}}},
     "tune.space.train.lr: log: a log-scale range needs low > 0"),
])
def test_bad_search_settings_are_refused_in_one_line(project, tune, expected):
    set_params(project, tune=tune)
    done = in_process("tune")
    assert done.exit_code == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drcl: error: params.yaml: ")
    assert expected in lines[0]


def test_a_search_needs_the_prior_and_refuses_a_study_made_under_other_settings(project):
    set_params(project, train={"epochs": 3})
    assert in_process("prepare").exit_code == 0
    done = in_process("tune")
    assert done.exit_code == 1
    assert "no prior; run `dvc repro prior`" in done.stderr

    assert in_process("prior").exit_code == 0
    set_params(project, tune={"trials": 1})
    assert in_process("tune").exit_code == 0
    set_params(project, train={"alpha": 0.3})  # the study's figures no longer apply
    done = in_process("tune")
    assert done.exit_code == 1
    assert "tune.study: study 'drcl.image'" in done.stderr
    assert "name a new tune.study" in done.stderr
    set_params(project, tune={"study": "after-alpha"})
    assert in_process("tune").exit_code == 0

    set_params(project, tune={"storage": "nosuchdb://host/db"})
    done = in_process("tune")
    assert done.exit_code == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drcl: error: tune.storage: cannot open ")
