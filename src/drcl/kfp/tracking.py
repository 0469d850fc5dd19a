"""MLflow parent runs for Kubeflow runs.

drcl.tracking gives each stage a child run under one parent per pipeline run. Kubeflow tasks run
in separate pods and each sees only its stage's params, so they cannot agree on the parent by a
params hash as DVC stages do: they agree on it by the Kubeflow run id instead. The first task
that tracks creates the parent; the others find it by tag and name it in DRCL_PIPELINE_RUN_ID;
the pipeline's exit handler closes it with the run's final state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from drcl.config import Params
from drcl.tracking import KIND_TAG, PARENT_ENV, connect, experiment_id, mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

KFP_RUN_TAG = "drcl.kfp_run_id"
_FINAL_STATUS = {"SUCCEEDED": "FINISHED", "CANCELED": "KILLED", "CANCELLED": "KILLED"}


def join_pipeline_run(params: Params, kfp_run_id: str, *, root: Path = Path(".")) -> None:
    """Make this task's stage run a child of its Kubeflow run's parent run."""
    if not params.tracking.enabled:
        return
    client = connect(root)
    exp_id = experiment_id(client, params.tracking.experiment)
    with mlflow_errors(client, f"opening the parent run of Kubeflow run {kfp_run_id}"):
        os.environ[PARENT_ENV] = _parent(client, exp_id, kfp_run_id)


def end_pipeline_run(params: Params, kfp_run_id: str, state: str, *,
                     root: Path = Path(".")) -> None:
    """Close the Kubeflow run's parent run (if a task opened one) with the run's final state."""
    if not params.tracking.enabled:
        return
    client = connect(root)
    exp_id = experiment_id(client, params.tracking.experiment)
    with mlflow_errors(client, f"closing the parent run of Kubeflow run {kfp_run_id}"):
        for run_id in _parent_runs(client, exp_id, kfp_run_id):
            client.set_terminated(run_id, _FINAL_STATUS.get(state, "FAILED"))


def _parent_runs(client: MlflowClient, exp_id: str, kfp_run_id: str) -> list[str]:
    runs = client.search_runs([exp_id], filter_string=f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}'",
                              max_results=10)
    return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]


def _parent(client: MlflowClient, exp_id: str, kfp_run_id: str) -> str:
    found = _parent_runs(client, exp_id, kfp_run_id)
    if found:
        return found[0]
    mine = client.create_run(exp_id, run_name=f"kubeflow {kfp_run_id}", tags={
        KFP_RUN_TAG: kfp_run_id, KIND_TAG: "pipeline"}).info.run_id
    winner = _parent_runs(client, exp_id, kfp_run_id)[0]
    if winner != mine:  # two tasks created one at the same moment: the earliest wins
        client.delete_run(mine)
    return winner
