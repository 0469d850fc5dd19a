"""A Kubeflow run in MLflow: one parent run per Kubeflow run, a child run per task that ran.

The pipeline's first task (`resolve`, never served from Kubeflow's cache) pins the data
reference (a branch becomes a commit) and opens the parent run, tagged with the Kubeflow run's
id and the data it read. A task that runs finds that parent by the same id (an environment
variable, never a task input: an input would defeat Kubeflow's cache) and logs its child run
under it; a task reused from an earlier run logs nothing new, and the run's summary tags the
parent with where each task's outputs came from. The exit handler closes the parent with the
run's final state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from drcl.config import Params
from drcl.tracking import KIND_TAG, PARENT_ENV, connect, experiment_id, mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

KFP_RUN_TAG = "drcl.kfp_run_id"
_FINAL_STATUS = {"SUCCEEDED": "FINISHED", "CANCELED": "KILLED", "CANCELLED": "KILLED"}


def pin_data(params: Params) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The data group with a DVC revision pinned to the commit it names now, and what was read
    (repo, rev, path, commit, DVC content hash); no reference: the group as it is, None."""
    data = params.data.model_dump(mode="json", exclude_none=True)
    if params.data.dvc is None:
        return data, None
    from drcl.data.versioned import resolve

    ref = resolve(params.data.dvc.repo, params.data.dvc.commit or params.data.dvc.rev,
                  params.data.path.as_posix())
    data["dvc"]["commit"] = ref.commit
    return data, ref.as_dict()


def open_pipeline_run(params: Params, kfp_run_id: str, *,
                      source: Mapping[str, Any] | None = None) -> str | None:
    """The parent run of this Kubeflow run (created if none), tagged with the data it read."""
    if not params.tracking.enabled:
        return None
    client = connect()
    exp_id = experiment_id(client, params.tracking.experiment)
    with mlflow_errors(client, f"opening the parent run of Kubeflow run {kfp_run_id}"):
        parent = _parent(client, exp_id, kfp_run_id)
        if source:
            from drcl.data.versioned import data_tags

            for tag, value in data_tags(dict(source)).items():
                client.set_tag(parent, tag, value)
    return parent


def join_pipeline_run(params: Params, kfp_run_id: str) -> str | None:
    """Make this task's stage runs children of its Kubeflow run's parent run."""
    parent = open_pipeline_run(params, kfp_run_id)
    if parent is not None:
        os.environ[PARENT_ENV] = parent
    return parent


def tag_lineage(params: Params, kfp_run_id: str, lines: Mapping[str, str]) -> None:
    """Tag the parent run with what each task did: ran, or reused from which run."""
    parent = open_pipeline_run(params, kfp_run_id)
    if parent is None:
        return
    from mlflow.entities import RunTag

    from drcl.tracking import metric_key

    client = connect()
    with mlflow_errors(client, "tagging the pipeline run with its tasks"):
        client.log_batch(parent, tags=[RunTag(metric_key(f"drcl.task.{task.replace('@', '.')}"),
                                              line[:500])
                                       for task, line in lines.items()])


def end_pipeline_run(params: Params, kfp_run_id: str, state: str) -> list[str]:
    """Close the parent run of this Kubeflow run with the run's final state; returns the runs
    closed."""
    if not params.tracking.enabled:
        return []
    client = connect()
    exp_id = experiment_id(client, params.tracking.experiment)
    with mlflow_errors(client, f"closing the parent run of Kubeflow run {kfp_run_id}"):
        runs = _runs(client, exp_id, kfp_run_id)
        for run in runs:
            client.set_terminated(run.info.run_id, _FINAL_STATUS.get(state, "FAILED"))
    return [r.info.run_id for r in runs]


def _runs(client: MlflowClient, exp_id: str, kfp_run_id: str) -> Sequence[Any]:
    runs = client.search_runs([exp_id], filter_string=f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}'",
                              max_results=10)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def _parent(client: MlflowClient, exp_id: str, kfp_run_id: str) -> str:
    found = _runs(client, exp_id, kfp_run_id)
    if found:
        return found[0].info.run_id
    mine = client.create_run(exp_id, run_name=f"kubeflow {kfp_run_id}", tags={
        KFP_RUN_TAG: kfp_run_id, KIND_TAG: "pipeline"}).info.run_id
    winner = _runs(client, exp_id, kfp_run_id)[0].info.run_id
    if winner != mine:  # tasks opened it at the same moment: the earliest wins
        client.delete_run(mine)
    return winner
