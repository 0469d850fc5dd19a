"""The whole method through the `drcl` CLI on a small unpaired three-modality data set."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from drcl.cli import app
from drcl.model import read_metadata
from drcl.runtime import resolved_precision
from tests.integration.project import write_params

MODALITIES = ["image", "text", "audio"]
CPU = torch.device("cpu")


def drcl(*args: str):
    return CliRunner().invoke(app, list(args))


def run_pipeline() -> None:
    for step in (["prepare"], ["prior"], *(["train", "--modality", m] for m in MODALITIES),
                 ["evaluate"]):
        result = drcl(*step)
        assert result.exit_code == 0, (step, result.output)


def test_every_stage_writes_its_outputs(project):
    run_pipeline()
    assert (project / "data/prepared/manifest.json").is_file()
    prior = json.loads((project / "metrics/prior.json").read_text())
    assert prior["method"] == "spl" and prior["chosen"] in MODALITIES
    assert set(prior["scores"]) == set(MODALITIES)
    for m in MODALITIES:
        # model.standardize: auto: the choice and its evidence, in the metrics and the encoder
        chosen = json.loads((project / f"metrics/train/{m}.json").read_text())["standardize"]
        assert chosen["how"] == "auto" and isinstance(chosen["standardize"], bool)
        assert {"raw_score", "standardized_score", "gain", "stderr"} <= set(chosen)
        assert prior["standardize"][m] == chosen  # SPL made the same choice
        meta = read_metadata(project / f"models/encoders/{m}.safetensors")
        assert json.loads(meta["standardize"]) == chosen
        assert (project / f"models/encoders/{m}.safetensors").is_file()
        assert (project / f"plots/train/{m}.csv").read_text().startswith("epoch,q,train_loss")
        assert (project / f"plots/images/train_{m}.png").stat().st_size > 1000
        assert (project / f"plots/prior/{m}.csv").is_file()
    report = json.loads((project / "metrics/eval.json").read_text())
    directions = {f"{q}->{d}" for q in MODALITIES for d in MODALITIES if q != d}
    for table in ("map_all", "map_at_50"):
        assert set(report[table]) == directions | {"mean"}
        values = [report[table][d] for d in directions]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert report[table]["mean"] == pytest.approx(sum(values) / len(values))
    # features carry the class, so retrieval is far better than chance (0.25)
    assert report["map_all"]["mean"] > 0.5
    assert len(list((project / "plots/pr").glob("*_to_*.csv"))) == 6
    assert (project / "plots/images/pr_curves.png").is_file()
    assert (project / "plots/images/prior_scores.png").stat().st_size > 1000  # SPL's curves


def test_a_prior_without_spl_leaves_an_empty_plot_not_an_empty_folder(project):
    path = project / "params.yaml"
    path.write_text(path.read_text().replace("method: spl", "method: orthogonal"))
    for step in (["prepare"], ["prior"]):
        result = drcl(*step)
        assert result.exit_code == 0, (step, result.output)
    assert [p.name for p in (project / "plots/prior").iterdir()] == ["orthogonal.csv"]
    assert (project / "plots/prior/orthogonal.csv").read_text() == "epoch,loss,score\n"
    assert (project / "plots/images/prior_scores.png").is_file()


def test_same_params_give_the_same_map(project):
    run_pipeline()
    first = (project / "metrics/eval.json").read_text()
    run_pipeline()
    assert (project / "metrics/eval.json").read_text() == first


def test_orthogonal_prior_baseline(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    write_params(project, data=params["data"], prior={"method": "orthogonal"})
    run_pipeline()
    prior = json.loads((project / "metrics/prior.json").read_text())
    precision = yaml.safe_load((project / "params.yaml").read_text())["precision"]
    assert prior == {"method": "orthogonal", "chosen": None, "scores": {}, "best_epoch": {},
                     "standardize": {}, "precision": resolved_precision(precision, CPU)}


def test_bf16_runs_every_stage_and_says_so(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    write_params(project, data=params["data"], precision="bf16")
    run_pipeline()
    assert json.loads((project / "metrics/prior.json").read_text())["precision"] == "bf16"
    for m in MODALITIES:
        assert json.loads((project / f"metrics/train/{m}.json").read_text())["precision"] == "bf16"
        assert read_metadata(project / f"models/encoders/{m}.safetensors")["precision"] == "bf16"
    assert json.loads((project / "metrics/eval.json").read_text())["map_all"]["mean"] > 0.5


def test_help_for_every_command():
    for command in ("prepare", "prior", "train", "evaluate"):
        result = drcl(command, "--help")
        assert result.exit_code == 0 and "--params" in result.output


@pytest.mark.parametrize(("setup", "args", "message"), [
    (lambda p: (p / "params.yaml").write_text("train: {lr: -1}\n"), ["prepare"],
     "params.yaml: train.lr: Input should be greater than 0"),
    (lambda p: (p / "params.yaml").write_text("trian: {}\n"), ["prepare"],
     "params.yaml: trian: unknown key"),
    (lambda p: None, ["prior"], "data/prepared/manifest.json: no data set manifest"),
    (lambda p: None, ["train", "--modality", "image"], "image.npz: no such modality file"),
    (lambda p: (p / "features.npz").unlink(), ["prepare"], "features.npz"),
])
def test_bad_input_is_one_line_and_non_zero(project, setup, args, message):
    setup(project)
    result = drcl(*args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("drcl: error: ")


def test_unknown_modality_and_missing_prior(project):
    assert drcl("prepare").exit_code == 0
    result = drcl("train", "--modality", "video")
    assert result.exit_code == 1 and "video.npz" in result.stderr
    result = drcl("train", "--modality", "image")
    assert result.exit_code == 1 and "prior not found" in result.stderr


def test_failed_stage_leaves_previous_outputs(project, monkeypatch):
    run_pipeline()
    encoder = project / "models/encoders/image.safetensors"
    before = encoder.read_bytes()

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("drcl.train.rsc_loss", die)
    params = yaml.safe_load((project / "params.yaml").read_text())
    write_params(project, data=params["data"], train={"lr": 5e-3})
    result = drcl("train", "--modality", "image")
    assert result.exit_code == 130
    assert encoder.read_bytes() == before
    assert not [p for p in encoder.parent.iterdir() if p.name.startswith(".")]


def test_metrics_fit_a_terminal(project):
    assert "not there yet" in drcl("metrics").stderr
    run_pipeline()
    result = drcl("metrics")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("prior: spl, chosen ")
    assert any(line.strip().startswith("image: inputs ") for line in lines)
    assert "test, mean over 6 directions: MAP@all 0." in result.stdout
    assert max(len(line) for line in lines) <= 80


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty.yaml: empty params file; expected a mapping of params groups"),
    (b"# nothing but a comment\n", "empty.yaml: empty params file"),
    (b"- a list\n", "empty.yaml: expected a mapping of params groups, got a list"),
    (b"seed: 1\nnote: caf\xe9\n", "empty.yaml: not UTF-8 text (byte 17)"),
])
def test_an_empty_or_undecodable_params_file_is_refused(tmp_path, content, message):
    """As `dvc repro` refuses it: no run on the defaults the user did not write."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "empty.yaml").write_bytes(content)
    done = subprocess.run([str(Path(sys.executable).parent / "drcl"), "prior", "-p",
                           "empty.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1
    assert done.stderr == f"drcl: error: {message}" + done.stderr.split(message, 1)[1]
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_mistyped_store_is_refused_not_created(tmp_path):
    """`drcl history` on a sqlite path that does not exist: one line, and no new empty store
    that would answer "no promotion yet"."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    write_params(tmp_path)
    typo = tmp_path / "mlfow.db"
    done = subprocess.run([str(Path(sys.executable).parent / "drcl"), "history"], cwd=tmp_path,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{typo}"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"MLFLOW_TRACKING_URI: no MLflow store at {typo}" in done.stderr
    assert not typo.exists()


DYING_WHILE_LANDING = """
import os
import drcl.atomic as atomic
from drcl.cli import app

real, moves = atomic._replace, [0]

def dying(new, target):
    real(new, target)
    if os.path.exists(atomic.JOURNAL):  # landing: the outputs are moving into place
        moves[0] += 1
        if moves[0] == 2:
            os._exit(9)

atomic._replace = dying
app(["train", "--modality", "image"])
"""


def test_a_training_killed_while_its_outputs_land_is_finished_by_the_next_command(project):
    """`drcl train` killed (os._exit) after two of its four outputs moved into place; the next
    command finishes the set before it reads anything."""
    import subprocess
    import sys

    run_pipeline()
    outputs = [project / p for p in ("models/encoders/image.safetensors",
                                     "metrics/train/image.json", "plots/train/image.csv",
                                     "plots/images/train_image.png")]
    before = [p.read_bytes() for p in outputs]
    params = yaml.safe_load((project / "params.yaml").read_text())
    write_params(project, data=params["data"], train={"lr": 5e-3})
    child = subprocess.run([sys.executable, "-c", DYING_WHILE_LANDING], cwd=project,
                           capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == 9, child.stderr[-2000:]
    mixed = [p.read_bytes() != b for p, b in zip(outputs, before, strict=True)]
    assert any(mixed) and not all(mixed)  # new metrics beside old weights, or the reverse
    result = drcl("evaluate")
    assert result.exit_code == 0, result.output
    assert all(p.read_bytes() != b for p, b in zip(outputs, before, strict=True))
    assert not (project / ".drcl-landing.json").exists()
