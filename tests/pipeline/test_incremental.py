"""`drcl pipeline run --local` decides what to rerun as `dvc repro` does, run after run.

One data repository (git with a local bare origin, DVC with a folder remote) holds a two-view
data set; the prior does not change (`prior.method: orthogonal`), so each scenario isolates
one change. Each run is the command a user types; what it trained is read from its summary,
the store's records and the MLflow registry:
- nothing changed: nothing runs but the run's own bookkeeping;
- a commit to the data repository that changes no data trains nothing;
- a new revision that changes one view's features trains that view alone;
- a change of evaluate.* reruns evaluation (and promotion) only;
- a change of train.lr_per_modality for one view trains that view alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.pipeline.conftest import ROOT

pytestmark = pytest.mark.slow

VIEWS = ("view0", "view1")
GIT = ["git", "-c", "user.name=data", "-c", "user.email=data@example.com"]


def scenes(path: Path, *, view1_seed: int = 0) -> None:
    """Two paired views of a four-class data set; `view1_seed` changes view1's features only."""
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(["beach", "city", "forest", "snow"])}
    for view, dim, seed in (("view0", 10, 0), ("view1", 7, 100 + view1_seed)):
        rng = np.random.default_rng(seed)
        centers = rng.normal(size=(4, dim)) * 3
        for split, n in (("train", 64), ("val", 24), ("test", 24)):
            labels = np.arange(n) % 4
            arrays[f"{view}.{split}.features"] = centers[labels] + rng.normal(size=(n, dim))
            arrays[f"{view}.{split}.labels"] = labels
            arrays[f"{view}.{split}.ids"] = np.asarray([f"s-{split}-{i}" for i in range(n)])
    np.savez(path, **arrays)


class DataRepo:
    """The user's data repository: `publish` commits (and pushes) a new revision."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.origin, self.work, self.env = root / "origin.git", root / "work", env
        self.sh(["git", "init", "-q", "--bare", "-b", "main", str(self.origin)], root)
        self.sh(["git", "clone", "-q", str(self.origin), str(self.work)], root)
        self.sh(["dvc", "init", "-q"])
        self.sh(["dvc", "remote", "add", "-d", "local", str(root / "dvc-remote")])
        (self.work / "data").mkdir()

    def sh(self, cmd: list[str], cwd: Path | None = None) -> str:
        done = subprocess.run(cmd, cwd=cwd or self.work, env=self.env, capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
        return done.stdout

    def publish(self, message: str, *, view1_seed: int | None = None) -> str:
        if view1_seed is not None:
            scenes(self.work / "data" / "scenes.npz", view1_seed=view1_seed)
            self.sh(["dvc", "add", "-q", "data/scenes.npz"])
            self.sh(["dvc", "push", "-q"])
        else:
            with (self.work / "README.md").open("a") as fh:
                fh.write(f"{message}\n")
        self.sh(["git", "add", "-A"])
        self.sh([*GIT, "commit", "-qm", message])
        self.sh(["git", "push", "-q", "origin", "HEAD:main"])
        return self.sh(["git", "rev-parse", "HEAD"]).strip()


@pytest.fixture
def setting(tmp_path):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name in ("MLFLOW_REGISTRY_URI", "DRCL_PIPELINE_RUN_ID", "KFP_RUN_ID"):
        env.pop(name, None)
    (tmp_path / "data").mkdir()
    return tmp_path, env, DataRepo(tmp_path / "data", env)


def params_file(folder: Path, repo: DataRepo, **changes: dict) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    fast = {"device": "cpu", "precision": "fp32",
            "data": {"source": "npz", "path": "data/scenes.npz", "modalities": list(VIEWS),
                     "dvc": {"repo": f"file://{repo.origin}", "rev": "main"}},
            "model": {"hidden_dim": 16, "common_dim": 8},
            "prior": {"method": "orthogonal"},
            "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3},
            "promotion": {"min_mean_map": 0.0, "min_direction_map": 0.0, "min_gain": -1.0}}
    for group, values in (fast | changes).items():
        params[group] = {**params[group], **values} if isinstance(values, dict) else values
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run(folder: Path, env: dict[str, str]) -> dict[str, str]:
    """`drcl pipeline run --local` as typed; each task's status from the summary it prints."""
    done = subprocess.run(["drcl", "pipeline", "run", "--local", "--pipeline-root", "runs"],
                          cwd=folder, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    tasks = {line.split()[0]: line.split(None, 1)[1] for line in lines
             if line.split()[:1] and line.split()[0] in
             ("prepare", "prior", "evaluate", *(f"train@{v}" for v in VIEWS))}
    tasks["promotion"] = next(line for line in lines if line.startswith("promotion: "))
    tasks["last"] = lines[-2]
    return tasks


def trained(tasks: dict[str, str]) -> list[str]:
    return sorted(t for t, status in tasks.items() if t.startswith("train@") and status == "ran")


def test_runs_retrain_only_what_changed(setting):
    from mlflow import MlflowClient

    folder, env, repo = setting
    first = repo.publish("scenes", view1_seed=0)
    params_file(folder, repo)

    tasks = run(folder, env)
    assert trained(tasks) == ["train@view0", "train@view1"]
    assert tasks["promotion"].startswith("promotion: champion: drcl-set v1")

    # nothing changed: Kubeflow's cache serves every keyed task
    tasks = run(folder, env)
    assert trained(tasks) == [] and tasks["last"].startswith("nothing changed")
    assert all(tasks[t].endswith("(Kubeflow's cache)") for t in ("prior", "evaluate"))
    assert tasks["promotion"] == "promotion: unchanged: drcl-set v1 is already the champion"

    # a commit that changes no data: prepare reads the new commit, finds its content stored
    # under the same DVC hash, and nothing after it runs
    readme = repo.publish("a note on the data")
    tasks = run(folder, env)
    assert tasks["prepare"].endswith("(same key in the store)")
    assert trained(tasks) == [] and tasks["evaluate"].startswith("reused")

    # a new revision that changes view1's features only
    changed = repo.publish("view1 re-extracted", view1_seed=1)
    tasks = run(folder, env)
    assert tasks["prepare"] == "ran" and tasks["prior"] == "ran"  # orthogonal: the same W
    assert trained(tasks) == ["train@view1"]
    assert tasks["train@view0"].startswith("reused from run local-")
    assert tasks["evaluate"] == "ran"
    assert tasks["promotion"].startswith("promotion: champion: drcl-set v2")

    # the lineage of the set a partly reused run registered
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    v2 = client.get_model_version("drcl-set", "2")
    assert v2.tags["drcl.data_commit"] == changed
    members = yaml.safe_load(v2.tags["drcl.members"])
    view0 = client.get_model_version("drcl-encoder-view0", members["view0"]["version"])
    view1 = client.get_model_version("drcl-encoder-view1", members["view1"]["version"])
    assert (str(view0.version), str(view1.version)) == ("1", "2")  # view0: same weights
    assert view0.tags["drcl.data_commit"] == first  # trained on the first revision's bytes
    assert view1.tags["drcl.data_commit"] == changed
    assert view1.tags["drcl.data_dvc_md5"] == v2.tags["drcl.data_dvc_md5"]
    for encoder in (view0, view1):
        assert len(encoder.tags["drcl.data_sha256"]) == 64 and encoder.tags["drcl.train_key"]
        assert encoder.tags["drcl.trained_in_kfp_run"].startswith("local-")
    assert readme != changed

    # evaluate.* reruns evaluation and promotion only
    params_file(folder, repo, evaluate={"k": 5})
    tasks = run(folder, env)
    assert tasks["evaluate"] == "ran" and trained(tasks) == []
    assert tasks["prior"].startswith("reused") and tasks["prepare"].startswith("reused")

    # one view's learning rate trains that view alone
    params_file(folder, repo, evaluate={"k": 5}, train={
        "epochs": 2, "batch_size": 32, "lr": 3e-3, "lr_per_modality": {"view0": 1e-2}})
    tasks = run(folder, env)
    assert trained(tasks) == ["train@view0"]
    assert tasks["train@view1"].startswith("reused")
