"""`dvc repro` of the project's own dvc.yaml in a fresh git repository, on a slice of the
default data set (three of its six modalities, small widths, few epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.integration.project import copy_pipeline, run, write_params

pytestmark = pytest.mark.slow

SLICE = ["fou", "kar", "mor"]
BF16_MACHINE = Path(__file__).parent / "bf16_machine"
"""On PYTHONPATH: processes see a CPU with native bf16, where `precision: auto` means bf16."""


@pytest.fixture
def repo(tmp_path, uci_cache):
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(cmd, tmp_path).returncode == 0
    copy_pipeline(tmp_path)
    write_params(tmp_path, data={"source": "uci_mfeat", "modalities": SLICE},
                 precision="auto")
    return tmp_path


def test_repro_runs_every_stage_is_a_no_op_then_retrains_one_changed_modality_alone(
        repo, uci_cache):
    env = {"DRCL_CACHE_DIR": str(uci_cache)}
    first = run(["dvc", "repro"], repo, env)
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ("prepare", "prior", *(f"train@{m}" for m in SLICE), "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    report = json.loads((repo / "metrics/eval.json").read_text())
    assert len(report["map_all"]) == 1 + len(SLICE) * (len(SLICE) - 1)
    assert report["map_all"]["mean"] > 0.3  # ten classes: chance is about 0.1

    second = run(["dvc", "repro"], repo, env)
    assert second.returncode == 0
    # the first steps read what DVC does not see (the machine, files), so they always run;
    # their outputs come out byte-identical, so nothing after them does
    assert ran(second) == {"resolve", "extract", "prepare"}, second.stdout
    here = yaml.safe_load((repo / "resolved.yaml").read_text())["precision"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["train@kar"]["params"]["resolved.yaml"] == {"precision": here}  # not `auto`

    # the same workspace on a machine where `auto` means other arithmetic: what computes reruns
    if here != "bf16":
        other = run(["dvc", "repro"], repo, env | {"PYTHONPATH": str(BF16_MACHINE)})
        assert other.returncode == 0, other.stdout + other.stderr
        assert ran(other) >= {"prior", "evaluate", *(f"train@{m}" for m in SLICE)}
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        assert lock["train@kar"]["params"]["resolved.yaml"] == {"precision": "bf16"}
        assert json.loads((repo / "metrics/train/kar.json").read_text())["precision"] == "bf16"

    metrics = run(["dvc", "metrics", "show", "--json"], repo, env)
    assert metrics.returncode == 0 and "map_all" in metrics.stdout

    # replace one modality's prepared file by hand (as a new feature version would), then ask
    # DVC what is stale: only that modality's training and the evaluation
    assert run(["dvc", "unprotect", "data/prepared"], repo, env).returncode == 0
    path = repo / "data/prepared/kar.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["train.features"] = arrays["train.features"] * 2
    np.savez(path, **arrays)
    status = run(["dvc", "status", "--json"], repo, env)
    stale = set(json.loads(status.stdout))
    assert {"train@kar", "prepare"} <= stale
    assert "train@fou" not in stale and "train@mor" not in stale
    third = run(["dvc", "repro", "train@kar", "train@fou", "train@mor", "--single-item"],
                repo, env)
    assert third.returncode == 0, third.stderr
    assert "Running stage 'train@kar'" in third.stdout
    assert "Running stage 'train@fou'" not in third.stdout


def ran(result) -> set[str]:
    return {line.split("'")[1] for line in result.stdout.splitlines()
            if line.startswith("Running stage")}


def test_an_edited_feature_file_is_noticed(tmp_path):
    """Your own npz file is outside DVC's view: editing it in place still reruns what it feeds."""
    from tests.integration.project import write_features

    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(cmd, tmp_path).returncode == 0
    copy_pipeline(tmp_path)
    write_features(tmp_path / "features.npz")
    write_params(tmp_path, data={"source": "npz", "path": "features.npz",
                                 "modalities": ["image", "text"]})
    assert run(["dvc", "repro", "prepare"], tmp_path).returncode == 0
    before = (tmp_path / "data/prepared/manifest.json").read_text()
    write_features(tmp_path / "features.npz", seed=1)
    status = run(["dvc", "status", "prepare", "--json"], tmp_path)
    assert "prepare" in json.loads(status.stdout)
    assert run(["dvc", "repro", "prepare"], tmp_path).returncode == 0
    assert (tmp_path / "data/prepared/manifest.json").read_text() != before


def outputs(repo) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes()
            for folder in ("metrics", "plots", "models", "data/prepared")
            for p in sorted((repo / folder).rglob("*")) if p.is_file()}


def test_a_refused_or_failed_run_keeps_the_last_good_outputs(tmp_path):
    from tests.integration.project import write_features

    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(cmd, tmp_path).returncode == 0
    copy_pipeline(tmp_path)
    write_features(tmp_path / "features.npz")
    write_params(tmp_path, data={"source": "npz", "path": "features.npz",
                                 "modalities": ["image", "text"]})
    assert run(["git", "add", "-A"], tmp_path).returncode == 0
    assert run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "p"],
               tmp_path).returncode == 0
    good = run(["dvc", "repro"], tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    before = outputs(tmp_path)
    assert "metrics/eval.json" in before and "models/encoders/text.safetensors" in before
    # refused: a bad value is caught by the first stage, before any output is touched
    refused = run(["dvc", "exp", "run", "-S", "train.lr=-1"], tmp_path)
    assert refused.returncode != 0
    assert "train.lr: Input should be greater than 0" in refused.stderr + refused.stdout
    assert outputs(tmp_path) == before
    assert run(["git", "checkout", "params.yaml"], tmp_path).returncode == 0  # the -S stays
    # failed: the feature file is gone; prepare fails and its last output stays
    failed = run(["dvc", "exp", "run", "-S", "data.path=moved.npz"], tmp_path)
    assert failed.returncode != 0
    assert "moved.npz: npz file not found" in failed.stderr + failed.stdout
    assert outputs(tmp_path) == before

    # `dvc exp run` starts from the last commit (README, "The pipeline"): an experiment applied
    # and not committed gives way to the commit's outputs, also when the next one fails, and
    # `dvc exp apply` brings it back
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    for cmd in (["git", "checkout", "params.yaml"], ["git", "add", "-A"],
                [*git, "commit", "-qm", "a run to keep"]):
        assert run(cmd, tmp_path).returncode == 0
    committed = outputs(tmp_path)
    three = run(["dvc", "exp", "run", "-n", "three", "-S", "data.modalities=[image,text,audio]"],
                tmp_path)
    assert three.returncode == 0, three.stdout + three.stderr
    assert run(["dvc", "exp", "apply", "three"], tmp_path).returncode == 0
    applied = outputs(tmp_path)
    assert "models/encoders/audio.safetensors" in applied
    assert run(["git", "checkout", "params.yaml"], tmp_path).returncode == 0
    failed = run(["dvc", "exp", "run", "-S", "data.path=moved.npz"], tmp_path)
    assert failed.returncode != 0
    def weights(found: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in found.items() if k.endswith(".safetensors")}

    assert weights(outputs(tmp_path)) == weights(committed)
    assert run(["dvc", "exp", "apply", "three"], tmp_path).returncode == 0
    assert outputs(tmp_path)["models/encoders/audio.safetensors"] == \
        applied["models/encoders/audio.safetensors"]
