"""A stand-in for kfp.Client: records every request and keeps the state a KFP server would."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml


@dataclass
class Request:
    method: str
    args: dict[str, Any]


@dataclass
class FakeClient:
    """Pipelines, versions, experiments, runs and recurring runs, in memory."""

    host: str = ""
    namespace: str | None = None
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, str] = field(default_factory=dict)  # name -> id
    versions: dict[str, list[SimpleNamespace]] = field(default_factory=dict)  # pipeline id -> ..
    experiments: dict[str, str] = field(default_factory=dict)  # name -> id
    runs: list[SimpleNamespace] = field(default_factory=list)
    recurring: list[SimpleNamespace] = field(default_factory=list)
    uploaded: list[dict] = field(default_factory=list)  # pipeline specs of the packages
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _record(self, method: str, **args: Any) -> str:
        self.requests.append(Request(method, args))
        return f"{method}-{next(self._ids)}"

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [r.args for r in self.requests if r.method == method]

    def get_pipeline_id(self, name: str) -> str | None:
        self._record("get_pipeline_id", name=name)
        return self.pipelines.get(name)

    def upload_pipeline(self, pipeline_package_path: str, pipeline_name: str,
                        description: str | None = None,
                        namespace: str | None = None) -> SimpleNamespace:
        pid = self._record("upload_pipeline", pipeline_name=pipeline_name, namespace=namespace)
        self.uploaded.append(next(yaml.safe_load_all(Path(pipeline_package_path).read_text())))
        self.pipelines[pipeline_name] = pid
        self.versions[pid] = []
        return SimpleNamespace(pipeline_id=pid, display_name=pipeline_name)

    def list_pipeline_versions(self, pipeline_id: str, page_token: str = "", page_size: int = 10,
                               sort_by: str = "", filter: str | None = None) -> SimpleNamespace:
        self._record("list_pipeline_versions", pipeline_id=pipeline_id, filter=filter)
        return SimpleNamespace(pipeline_versions=list(self.versions[pipeline_id]) or None,
                               next_page_token="")

    def upload_pipeline_version(self, pipeline_package_path: str, pipeline_version_name: str,
                                pipeline_id: str | None = None,
                                **_: Any) -> SimpleNamespace:
        vid = self._record("upload_pipeline_version", name=pipeline_version_name,
                           pipeline_id=pipeline_id)
        self.uploaded.append(next(yaml.safe_load_all(Path(pipeline_package_path).read_text())))
        version = SimpleNamespace(pipeline_version_id=vid, display_name=pipeline_version_name)
        self.versions[pipeline_id].append(version)
        return version

    def create_experiment(self, name: str, description: str | None = None,
                          namespace: str | None = None) -> SimpleNamespace:
        """Get-or-create, as kfp.Client.create_experiment does."""
        self._record("create_experiment", name=name, namespace=namespace)
        eid = self.experiments.setdefault(name, f"exp-{name}")
        return SimpleNamespace(experiment_id=eid, display_name=name)

    def get_experiment(self, experiment_name: str,
                       namespace: str | None = None) -> SimpleNamespace:
        """As kfp.Client.get_experiment: ValueError when there is none."""
        self._record("get_experiment", name=experiment_name, namespace=namespace)
        if experiment_name not in self.experiments:
            raise ValueError(f"No experiment is found with name {experiment_name}.")
        return SimpleNamespace(experiment_id=self.experiments[experiment_name],
                               display_name=experiment_name)

    def run_pipeline(self, experiment_id: str, job_name: str, **kwargs: Any) -> SimpleNamespace:
        rid = self._record("run_pipeline", experiment_id=experiment_id, job_name=job_name,
                           **kwargs)
        run = SimpleNamespace(run_id=rid, display_name=job_name, **kwargs)
        self.runs.append(run)
        return run

    def create_recurring_run(self, experiment_id: str, job_name: str,
                             **kwargs: Any) -> SimpleNamespace:
        rid = self._record("create_recurring_run", experiment_id=experiment_id,
                           job_name=job_name, **kwargs)
        run = SimpleNamespace(recurring_run_id=rid, display_name=job_name,
                              experiment_id=experiment_id,
                              description=kwargs.get("description"),
                              status="ENABLED" if kwargs.get("enabled", True) else "DISABLED")
        self.recurring.append(run)
        return run

    def list_recurring_runs(self, page_token: str = "", page_size: int = 10,
                            experiment_id: str | None = None, **_: Any) -> SimpleNamespace:
        """Pages of two, to exercise the caller's paging."""
        self._record("list_recurring_runs", page_token=page_token, experiment_id=experiment_id)
        mine = [r for r in self.recurring if r.experiment_id == experiment_id]
        start = int(page_token or 0)
        more = start + 2 < len(mine)
        return SimpleNamespace(recurring_runs=mine[start:start + 2] or None,
                               next_page_token=str(start + 2) if more else "")

    def disable_recurring_run(self, recurring_run_id: str) -> dict:
        self._record("disable_recurring_run", recurring_run_id=recurring_run_id)
        for run in self.recurring:
            if run.recurring_run_id == recurring_run_id:
                run.status = "DISABLED"
        return {}

    def enabled(self) -> list[SimpleNamespace]:
        return [r for r in self.recurring if r.status == "ENABLED"]
