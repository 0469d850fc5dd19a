"""What a Kubeflow run computes, and its MLflow parent run, named by that.

The pipeline's first task (`resolve`, never served from Kubeflow's cache) resolves the data
reference (a branch becomes a commit) and hashes drcl's version, the params that change results
and the data's identity into the run's key. When a completed run (its MLflow parent run
FINISHED) has that key, nothing has changed: the run trains nothing and says so. Otherwise every
tracked task joins the parent run tagged with the key; the key, not the Kubeflow run id, is the
tasks' input, so Kubeflow's cache can reuse them. The exit handler closes the parent with the
run's final state, finding it by the Kubeflow run id that `resolve` tagged it with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drcl.config import Params
from drcl.tracking import KEY_TAG, KIND_TAG, connect, experiment_id, mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

KFP_RUN_TAG = "drcl.kfp_run_id"
_FINAL_STATUS = {"SUCCEEDED": "FINISHED", "CANCELED": "KILLED", "CANCELLED": "KILLED"}
RESULT_GROUPS = ("seed", "precision", "data", "model", "prior", "train", "evaluate", "extract")
"""The params groups that change what a run computes (not tracking, registry or the gate)."""


@dataclass(frozen=True)
class Resolved:
    """The data as read (a revision pinned to its commit), the run's key, and whether a
    completed run already computed it (its parent run id then)."""

    data: dict[str, Any]
    key: str
    done_by: str | None
    source: dict[str, Any] | None

    @property
    def changed(self) -> bool:
        return self.done_by is None


def _code_version() -> str:
    """The package version and a hash of its Python sources (the library, the components and
    the pipeline): an edited checkout is other code even before its version changes."""
    import drcl

    try:
        number = version("drcl")
    except PackageNotFoundError:
        number = "unknown"
    folders = [Path(drcl.__file__).parent, *_subpackage_folders()]
    return f"{number}+{sources_digest(folders)[:16]}"


def sources_digest(folders: list[Path]) -> str:
    """sha256 over every .py file below the folders, by relative path and content."""
    digest = hashlib.sha256()
    for index, folder in enumerate(folders):
        for path in sorted(folder.rglob("*.py")):
            name = f"{index}/{path.relative_to(folder).as_posix()}"
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _subpackage_folders() -> list[Path]:
    """drcl.components and drcl.pipelines live beside src/ in a checkout. Found, not imported:
    a task runs inside kfp's executor, where importing the pipeline would re-enter kfp."""
    from importlib.util import find_spec

    found = (find_spec(name) for name in ("drcl.components", "drcl.pipelines"))
    return [Path(folder) for spec in found if spec is not None
            for folder in spec.submodule_search_locations or ()]


def resolve_run(params: Params, *, root: Path = Path(".")) -> Resolved:
    """Pin the data reference, key the run, and look for a completed run with that key."""
    data = params.data.model_dump(mode="json", exclude_none=True)
    source = None
    if params.data.dvc is not None:
        from drcl.data.versioned import resolve

        ref = resolve(params.data.dvc.repo, params.data.dvc.commit or params.data.dvc.rev,
                      params.data.path.as_posix())
        data["dvc"]["commit"] = ref.commit
        source = ref.as_dict()
    what = {"code": _code_version(), "data": data, "source": source,
            "params": {g: params.model_dump(mode="json")[g] for g in RESULT_GROUPS}}
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
    done_by = _completed(params, key, root) if params.tracking.enabled else None
    return Resolved(data=data, key=key, done_by=done_by, source=source)


def _completed(params: Params, key: str, root: Path) -> str | None:
    client = connect(root)
    exp_id = experiment_id(client, params.tracking.experiment)
    with mlflow_errors(client, "looking for a completed run with the same data and params"):
        found = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}' and "
                                   "attributes.status = 'FINISHED'", max_results=1)
    return found[0].info.run_id if found else None


def open_pipeline_run(params: Params, key: str, kfp_run_id: str, *,
                      source: dict[str, Any] | None = None, root: Path = Path(".")) -> str | None:
    """The parent run of this key (created if none), tagged with the Kubeflow run id."""
    if not params.tracking.enabled:
        return None
    client = connect(root)
    exp_id = experiment_id(client, params.tracking.experiment)
    with mlflow_errors(client, f"opening the parent run of Kubeflow run {kfp_run_id}"):
        parent = _parent(client, exp_id, key, kfp_run_id)
        client.set_tag(parent, KFP_RUN_TAG, kfp_run_id)
        if source:
            from drcl.data.versioned import data_tags

            for tag, value in data_tags(source).items():
                client.set_tag(parent, tag, value)
    return parent


def end_pipeline_run(params: Params, kfp_run_id: str, state: str, *,
                     root: Path = Path(".")) -> list[str]:
    """Close the parent run this Kubeflow run opened (none when it trained nothing) with the
    run's final state; returns the runs closed."""
    if not params.tracking.enabled:
        return []
    client = connect(root)
    exp_id = experiment_id(client, params.tracking.experiment)
    with mlflow_errors(client, f"closing the parent run of Kubeflow run {kfp_run_id}"):
        runs = client.search_runs([exp_id], filter_string=f"tags.`{KFP_RUN_TAG}` = "
                                  f"'{kfp_run_id}'", max_results=10)
        for run in runs:
            client.set_terminated(run.info.run_id, _FINAL_STATUS.get(state, "FAILED"))
    return [r.info.run_id for r in runs]


def _parent(client: MlflowClient, exp_id: str, key: str, kfp_run_id: str) -> str:
    def existing() -> list[Any]:
        runs = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                  max_results=10)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    found = existing()
    if found:
        return found[0].info.run_id
    mine = client.create_run(exp_id, run_name=f"kubeflow {kfp_run_id}", tags={
        KEY_TAG: key, KIND_TAG: "pipeline"}).info.run_id
    winner = existing()[0].info.run_id
    if winner != mine:  # created twice at the same moment: the earliest wins
        client.delete_run(mine)
    return winner
