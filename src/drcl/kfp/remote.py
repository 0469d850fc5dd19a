"""Talking to a Kubeflow Pipelines endpoint: upload a pipeline version, create runs and recurring
runs, and reconcile the declarative schedules in infra/schedules/ with the recurring runs.

Every request goes through a client object with kfp.Client's methods, so tests hand in a fake.
Errors from the endpoint become one DrclError line: unreachable, or refused with its HTTP status.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drcl.config import Params
from drcl.errors import DrclError
from drcl.kfp.project import compile_pipeline, pipeline_arguments
from drcl.kfp.schedules import ScheduleSpec, check_cron

MANAGED = "drcl-schedule:"
"""Description prefix of the recurring runs that `reconcile` owns (and may disable)."""
ENABLED = "ENABLED"


@dataclass(frozen=True)
class Endpoint:
    """A connected client and what the runs need to know about where they go."""

    client: Any
    host: str
    namespace: str | None
    experiment: str
    pipeline: str


@dataclass(frozen=True)
class PipelineVersion:
    pipeline_id: str
    version_id: str
    name: str


@dataclass(frozen=True)
class Action:
    """One step of a reconcile plan: create a schedule, disable a recurring run, or keep one."""

    kind: str
    schedule: str
    run_id: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.schedule}" + (f" ({self.run_id})" if self.run_id else "")


def make_client(host: str, namespace: str | None) -> Any:
    """kfp.Client for ``host``; in a cluster it reads its service-account token by itself."""
    import kfp

    with warnings.catch_warnings():  # kfp warns on every client that it needs KFP >= 2.0
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow")


def connect(params: Params, host: str | None = None, *, tuning: bool = False) -> Endpoint:
    """The endpoint from ``--host`` or params.yaml's kubeflow.host (with `tuning`, for the
    tuning pipeline, uploaded as `<kubeflow.pipeline>-tune`)."""
    cluster = params.kubeflow
    host = host or cluster.host
    if not host:
        raise DrclError("kubeflow.host: no Kubeflow Pipelines endpoint; set it in params.yaml "
                        "or pass --host")
    if not host.startswith(("http://", "https://")):
        raise DrclError(f"--host: {host!r} is not an http(s) URL")
    return Endpoint(client=make_client(host, cluster.namespace), host=host,
                    namespace=cluster.namespace, experiment=cluster.experiment,
                    pipeline=f"{cluster.pipeline}-tune" if tuning else cluster.pipeline)


@contextmanager
def endpoint_errors(endpoint: Endpoint, what: str) -> Iterator[None]:
    """Turn the client's exceptions into one line naming the endpoint and the request."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        raise DrclError(f"Kubeflow Pipelines at {endpoint.host} refused {what}: HTTP "
                        f"{exc.status} {exc.reason}{_detail(exc.body)}") from None
    except (HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DrclError(f"Kubeflow Pipelines at {endpoint.host} is unreachable ({what}: "
                        f"{str(reason).splitlines()[0]}); check --host or kubeflow.host") from None


def _detail(body: object) -> str:
    """The server's own error message, when its body carries one."""
    try:
        message = json.loads(body).get("error_message") or json.loads(body).get("message")
    except (TypeError, ValueError, AttributeError):
        return ""
    return f" ({str(message).splitlines()[0]})" if message else ""


def upload_version(endpoint: Endpoint, params: Params, *, upload: bool = True,
                   tuning: bool = False) -> PipelineVersion:
    """Compile the pipeline and upload it as a version named by its content hash.

    An unchanged pipeline maps to the version already there, so repeated submits and
    reconciles do not pile up identical versions. With `upload` false nothing is written to the
    server: the version's ids are those it already has, or empty.
    """
    client = endpoint.client
    with tempfile.TemporaryDirectory(prefix="drcl-pipeline-") as tmp:
        package = Path(tmp) / f"{endpoint.pipeline}.yaml"
        compile_pipeline(params, package, tuning=tuning)
        name = f"{endpoint.pipeline}-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"
        with endpoint_errors(endpoint, f"looking up pipeline {endpoint.pipeline!r}"):
            pipeline_id = client.get_pipeline_id(endpoint.pipeline)
        if not upload:
            existing = _version_named(endpoint, pipeline_id, name) if pipeline_id else None
            return PipelineVersion(pipeline_id or "", existing or "", name)
        if pipeline_id is None:
            with endpoint_errors(endpoint, f"uploading pipeline {endpoint.pipeline!r}"):
                pipeline_id = client.upload_pipeline(
                    str(package), pipeline_name=endpoint.pipeline,
                    description="DRCL cross-modal retrieval", namespace=endpoint.namespace,
                ).pipeline_id
        existing = _version_named(endpoint, pipeline_id, name)
        if existing is not None:
            return PipelineVersion(pipeline_id, existing, name)
        with endpoint_errors(endpoint, f"uploading pipeline version {name!r}"):
            version = client.upload_pipeline_version(str(package), pipeline_version_name=name,
                                                     pipeline_id=pipeline_id)
    return PipelineVersion(pipeline_id, version.pipeline_version_id, name)


def _version_named(endpoint: Endpoint, pipeline_id: str, name: str) -> str | None:
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                      "stringValue": name}]})
    with endpoint_errors(endpoint, f"listing versions of pipeline {endpoint.pipeline!r}"):
        found = endpoint.client.list_pipeline_versions(pipeline_id, page_size=10, filter=flt)
    for version in found.pipeline_versions or []:
        if version.display_name == name:
            return version.pipeline_version_id
    return None


def _experiment_id(endpoint: Endpoint) -> str:
    with endpoint_errors(endpoint, f"opening experiment {endpoint.experiment!r}"):
        return endpoint.client.create_experiment(endpoint.experiment,
                                                 namespace=endpoint.namespace).experiment_id


def _existing_experiment_id(endpoint: Endpoint) -> str | None:
    """The experiment's id if it exists; creates nothing."""
    try:
        with endpoint_errors(endpoint, f"looking up experiment {endpoint.experiment!r}"):
            found = endpoint.client.get_experiment(experiment_name=endpoint.experiment,
                                                   namespace=endpoint.namespace)
    except ValueError:  # kfp.Client raises ValueError when no experiment has the name
        return None
    return found.experiment_id


def submit(endpoint: Endpoint, params: Params, *, run_name: str, tuning: bool = False) -> str:
    """Upload the pipeline (if new) and start one run with params.yaml's values; its run id.
    With `tuning`, the tuning pipeline (to an endpoint `connect` made for it)."""
    version = upload_version(endpoint, params, tuning=tuning)
    experiment_id = _experiment_id(endpoint)
    with endpoint_errors(endpoint, f"creating run {run_name!r}"):
        run = endpoint.client.run_pipeline(
            experiment_id=experiment_id, job_name=run_name, pipeline_id=version.pipeline_id,
            version_id=version.version_id, params=pipeline_arguments(params, tuning=tuning))
    return run.run_id


def schedule(endpoint: Endpoint, params: Params, spec: ScheduleSpec) -> str:
    """Upload the pipeline (if new) and create one recurring run; its id."""
    version = upload_version(endpoint, params)
    return _create_recurring(endpoint, _experiment_id(endpoint), version, params, spec)


def _create_recurring(endpoint: Endpoint, experiment_id: str, version: PipelineVersion,
                      params: Params, spec: ScheduleSpec) -> str:
    arguments = pipeline_arguments(params)
    with endpoint_errors(endpoint, f"creating recurring run {spec.name!r}"):
        run = endpoint.client.create_recurring_run(
            experiment_id=experiment_id, job_name=spec.name,
            description=_description(spec, version, arguments),
            cron_expression=check_cron(spec.cron), max_concurrency=spec.max_concurrency,
            no_catchup=not spec.catchup, params=arguments, pipeline_id=version.pipeline_id,
            version_id=version.version_id, enabled=True)
    return run.recurring_run_id


def _description(spec: ScheduleSpec, version: PipelineVersion, arguments: dict) -> str:
    """Marks the run as ours and fingerprints what it runs: a changed spec, pipeline or params
    gives a new fingerprint, hence a new recurring run (KFP cannot update one in place)."""
    what = json.dumps({"spec": spec.model_dump(mode="json"), "pipeline": version.name,
                       "arguments": arguments}, sort_keys=True)
    return f"{MANAGED} {spec.name} {hashlib.sha256(what.encode()).hexdigest()[:16]}"


def _managed_runs(endpoint: Endpoint, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = ""
    while True:
        with endpoint_errors(endpoint, "listing recurring runs"):
            page = endpoint.client.list_recurring_runs(page_token=token, page_size=100,
                                                       experiment_id=experiment_id)
        runs += [r for r in page.recurring_runs or []
                 if (r.description or "").startswith(MANAGED)]
        token = page.next_page_token or ""
        if not token:
            return runs


def reconcile(endpoint: Endpoint, params: Params, specs: list[ScheduleSpec], *,
              dry_run: bool = False) -> list[Action]:
    """Make the enabled recurring runs match ``specs``; return the plan (applied unless dry_run).

    A spec whose fingerprint (the schedule, the pipeline's content hash and the arguments)
    matches an enabled run keeps it; otherwise a new run is created, and only then are the old
    ones disabled. Runs of schedules no longer declared are disabled. A dry run only reads.
    """
    version = upload_version(endpoint, params, upload=not dry_run)
    experiment_id = _existing_experiment_id(endpoint) if dry_run else _experiment_id(endpoint)
    arguments = pipeline_arguments(params)
    enabled = [] if experiment_id is None else [
        r for r in _managed_runs(endpoint, experiment_id) if str(r.status) == ENABLED]
    plan: list[Action] = []
    for spec in specs:
        wanted = _description(spec, version, arguments)
        current = [r for r in enabled if _schedule_name(r) == spec.name]
        keep = next((r for r in current if r.description == wanted and spec.enabled), None)
        if keep is not None:
            plan.append(Action("keep", spec.name, keep.recurring_run_id))
        elif spec.enabled:
            plan.append(Action("create", spec.name))
        plan += [Action("disable", spec.name, r.recurring_run_id) for r in current if r is not keep]
    declared = {spec.name for spec in specs}
    plan += [Action("disable", _schedule_name(r), r.recurring_run_id) for r in enabled
             if _schedule_name(r) not in declared]
    if dry_run:
        return plan
    by_name = {spec.name: spec for spec in specs}
    applied = [Action("create", a.schedule, _create_recurring(endpoint, experiment_id, version,
                                                              params, by_name[a.schedule]))
               for a in plan if a.kind == "create"]
    for action in plan:
        if action.kind == "disable":
            with endpoint_errors(endpoint, f"disabling recurring run {action.run_id}"):
                endpoint.client.disable_recurring_run(action.run_id)
    return applied + [a for a in plan if a.kind != "create"]


def _schedule_name(run: Any) -> str:
    """The schedule a managed run belongs to: the word after the marker in its description."""
    words = (run.description or "").split()
    return words[1] if len(words) > 1 else ""
