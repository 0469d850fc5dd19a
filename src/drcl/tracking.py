"""MLflow tracking: one parent run per pipeline run, one child run per stage or modality.

DVC runs every stage as its own process, so a stage finds its parent run in the store rather than
in memory: the parent carries the tag `drcl.pipeline_key`, a hash of the git commit and the
validated params, and whichever stage of a pipeline run comes first creates it. Stages rerun with
the same commit and params join the same parent. `DRCL_PIPELINE_RUN_ID` names the parent
explicitly instead (Kubeflow, CI).

The store is `MLFLOW_TRACKING_URI` when set, else a sqlite file `mlflow.db` in the working folder
(artifacts in `mlruns/` beside it). Credentials, if the server needs any, come from MLflow's own
environment variables.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from drcl.config import Params
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.processes import identity, is_dead

if TYPE_CHECKING:
    from mlflow import MlflowClient

PARENT_ENV = "DRCL_PIPELINE_RUN_ID"
DEFAULT_STORE = "mlflow.db"
KEY_TAG = "drcl.pipeline_key"
KIND_TAG = "drcl.kind"
PROCESS_TAG = "drcl.process"
"""The process that runs (or ran) a run: a run left RUNNING by a dead process is ended."""
PARENT_TAG = "mlflow.parentRunId"
_BATCH = 500  # below MLflow's limits of 1000 metrics and 100 params per log_batch call
_PARAM_BATCH = 100


def tracking_uri(root: Path = Path(".")) -> str:
    """MLFLOW_TRACKING_URI, else the embedded sqlite store in `root` (no server needed)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / DEFAULT_STORE).resolve()}"


def _check_reachable(uri: str) -> None:
    """Fail in seconds with one line, rather than after MLflow's minutes of retries."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except urllib.error.HTTPError:
        return  # it answered: reachable (authentication is MLflow's business)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DrclError(f"MLflow at {uri} is unreachable ({reason}); start the server or fix "
                        "MLFLOW_TRACKING_URI") from None


def registry_uri(tracking: str) -> str:
    """MLFLOW_REGISTRY_URI, else the tracking store (which holds the registry too)."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking


def _check_exists(uri: str) -> None:
    """A reader of a sqlite store that is not there would get MLflow's new empty one, and
    report "no promotion yet" for a mistyped path."""
    for store in {uri, registry_uri(uri)}:
        if store.startswith("sqlite:///"):
            path = Path(store.removeprefix("sqlite:///").split("?", 1)[0])
            if not path.is_file():
                raise DrclError(f"MLFLOW_TRACKING_URI: no MLflow store at {path}; nothing was "
                                "tracked or registered there (check the path; the project's "
                                f"own store is ./{DEFAULT_STORE})")


def connect(root: Path = Path("."), *, existing: bool = False) -> MlflowClient:
    """A client for the tracking store and the registry, checked to be reachable (and, for
    commands that only read it, `existing`: to be there)."""
    uri = tracking_uri(root)
    _check_reachable(uri)
    if existing:
        _check_exists(uri)
    # keep the commands' output theirs: no download progress bars on stderr, and no run links
    # printed on stdout (where `drcl search --format json` writes its result)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=registry_uri(uri))


@contextmanager
def mlflow_errors(client: MlflowClient, what: str) -> Iterator[None]:
    """Turn MLflow's multi-line exceptions into the project's one-line error."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        first = (str(exc.message).strip().splitlines() or ["unknown error"])[0]
        raise DrclError(f"MLflow at {client.tracking_uri}: {what} failed ({first})") from None


def git_commit(root: Path) -> str:
    """The commit the code was run from, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def dvc_hash(root: Path, path: Path) -> str | None:
    """The hash dvc.lock records for an output (the DVC version of a data set), if any."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return None
    wanted = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            if out.get("path") == wanted and "md5" in out:
                return str(out["md5"])
    return None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys with string values, as MLflow params are."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def metric_key(name: str) -> str:
    """MLflow keys allow letters, digits and _-. /: ; directions 'a->b' become 'a_to_b'."""
    return re.sub(r"[^\w.\- /:]", "_", name.replace("->", "_to_"))


def pipeline_key(params: Params, commit: str) -> str:
    """Stages of one pipeline run agree on this without talking to each other."""
    return hashlib.sha256(f"{commit}\n{params.model_dump_json()}".encode()).hexdigest()


class StageRun:
    """What a stage logs to; the base class logs nothing (tracking switched off)."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Scalars; keys are made MLflow-safe."""

    def log_history(self, rows: Sequence[Mapping[str, float]], *, prefix: str = "",
                    step_key: str = "epoch") -> None:
        """Per-epoch records as metric series (one step per row)."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Facts about the run (the chosen modality, checksums)."""

    def log_artifacts(self, *paths: Path) -> None:
        """Files or folders, under their own names."""


class _MlflowStageRun(StageRun):
    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def _log(self, metrics: list[Any]) -> None:
        with mlflow_errors(self.client, "logging metrics"):
            for start in range(0, len(metrics), _BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[start:start + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        self._log([Metric(metric_key(k), float(v), now, step or 0) for k, v in metrics.items()])

    def log_history(self, rows: Sequence[Mapping[str, float]], *, prefix: str = "",
                    step_key: str = "epoch") -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        self._log([Metric(metric_key(f"{prefix}{k}"), float(v), now, int(row[step_key]))
                   for row in rows for k, v in row.items() if k != step_key])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with mlflow_errors(self.client, "tagging a run"):
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, *paths: Path) -> None:
        with mlflow_errors(self.client, "uploading artifacts"):
            for path in paths:
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), path.name)
                elif path.is_file():
                    self.client.log_artifact(self.run_id, str(path))


def _now_ms() -> int:
    return int(time.time() * 1000)


def log_params(client: MlflowClient, run_id: str, params: Params) -> None:
    """Every param, flattened, plus the resolved params.yaml as an artifact."""
    from mlflow.entities import Param

    flat = flatten(params.model_dump(mode="json"))
    items = [Param(k, v) for k, v in flat.items()]
    with mlflow_errors(client, "logging params"):
        for start in range(0, len(items), _PARAM_BATCH):
            client.log_batch(run_id, params=items[start:start + _PARAM_BATCH])
        client.log_text(run_id, yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False),
                        "params.yaml")


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use (another process may create it first)."""
    from mlflow.exceptions import MlflowException

    with mlflow_errors(client, f"opening experiment {name!r}"):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def _pipeline_runs(client: MlflowClient, exp_id: str, key: str) -> list[Any]:
    runs = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                              max_results=50)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def parent_run_id(client: MlflowClient, exp_id: str, params: Params, commit: str,
                  key: str | None = None) -> str:
    """The pipeline run's parent: named by DRCL_PIPELINE_RUN_ID, found by its key (given, or
    the git commit and params), or created."""
    from mlflow.exceptions import MlflowException

    explicit = os.environ.get(PARENT_ENV)
    if explicit:
        try:
            client.get_run(explicit)
        except MlflowException:
            raise DrclError(f"{PARENT_ENV}: no run {explicit!r} at {client.tracking_uri}") \
                from None
        return explicit
    key = key or pipeline_key(params, commit)
    found = _pipeline_runs(client, exp_id, key)
    if found:
        return found[0].info.run_id
    mine = client.create_run(exp_id, run_name=f"pipeline {commit[:8]} {key[:8]}", tags={
        KEY_TAG: key, KIND_TAG: "pipeline", "drcl.git_commit": commit, PROCESS_TAG: identity(),
        "mlflow.source.git.commit": commit}).info.run_id
    winner = _pipeline_runs(client, exp_id, key)[0].info.run_id
    if winner != mine:  # another stage created it at the same moment: the earliest wins
        client.delete_run(mine)
        return winner
    log_params(client, mine, params)
    return mine


@contextmanager
def stage_run(params: Params, stage: str, *, layout: Layout,
              dataset_sha256: str | None = None, data_source: dict | None = None,
              modality: str | None = None) -> Iterator[StageRun]:
    """A child run of the pipeline's parent for one stage (or one modality's stage).

    The parent is the run DRCL_PIPELINE_RUN_ID names (a Kubeflow task's, from
    drcl.kfp.tracking), else the one tagged with the hash of the git commit and params (a
    `dvc repro`'s stages). The store is
    checked before the stage's work starts, so a bad MLFLOW_TRACKING_URI fails fast. The run
    ends FINISHED, FAILED or KILLED with the stage; so does the parent, unless it belongs to a
    Kubeflow run (its exit handler closes it) or DRCL_PIPELINE_RUN_ID named it.
    """
    if not params.tracking.enabled:
        yield StageRun()
        return
    client = connect(layout.root)
    commit = git_commit(layout.root)
    exp_id = experiment_id(client, params.tracking.experiment)
    tags = {KIND_TAG: "stage", "drcl.stage": stage, "drcl.git_commit": commit,
            "mlflow.source.git.commit": commit, PROCESS_TAG: identity()}
    if modality is not None:
        tags["drcl.modality"] = modality
    if dataset_sha256 is not None:
        tags["drcl.dataset_sha256"] = dataset_sha256
    from drcl.data.versioned import data_tags

    source_tags = data_tags(data_source)
    tags |= source_tags
    dvc_md5 = dvc_hash(layout.root, layout.data)
    if dvc_md5 is not None:
        tags["drcl.dataset_dvc_md5"] = dvc_md5
    with mlflow_errors(client, f"starting the run of stage {stage}"):
        end_orphans(client, exp_id)
        parent = parent_run_id(client, exp_id, params, commit)
        name = stage if modality is None else f"{stage}@{modality}"
        run_id = client.create_run(exp_id, run_name=name,
                                   tags=tags | {PARENT_TAG: parent}).info.run_id
        for key, value in source_tags.items():  # the pipeline run records its data too
            client.set_tag(parent, key, value)
    log_params(client, run_id, params)
    # a parent named by DRCL_PIPELINE_RUN_ID belongs to whoever named it: leave its status alone
    ended = [run_id] if os.environ.get(PARENT_ENV) else [run_id, parent]
    try:
        yield _MlflowStageRun(client, run_id)
    except KeyboardInterrupt:
        _end(client, ended, "KILLED", quiet=True)
        raise
    except BaseException:
        _end(client, ended, "FAILED", quiet=True)
        raise
    _end(client, ended, "FINISHED", quiet=False)


def end_orphans(client: MlflowClient, exp_id: str) -> list[str]:
    """Mark KILLED the runs still RUNNING whose process (on this host) has died: a stage or
    pipeline run killed outright never ended its runs. Returns their ids."""
    running = client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'",
                                 max_results=200)
    orphans = [r.info.run_id for r in running
               if PROCESS_TAG in r.data.tags and is_dead(r.data.tags[PROCESS_TAG])]
    for run_id in orphans:
        client.set_terminated(run_id, "KILLED")
    return orphans


def _end(client: MlflowClient, run_ids: list[str], status: str, *, quiet: bool) -> None:
    """Mark runs ended; while a stage's own error propagates, a store error must not mask it."""
    try:
        with mlflow_errors(client, "ending a run"):
            for run_id in run_ids:
                client.set_terminated(run_id, status)
    except DrclError:
        if not quiet:
            raise
