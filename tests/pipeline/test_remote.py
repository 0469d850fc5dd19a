"""submit, schedule and reconcile against a fake Kubeflow client: the requests it receives, and
one-line errors when an endpoint is unreachable or refuses (real sockets on 127.0.0.1)."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kfp_server_api.exceptions import ApiException
from typer.testing import CliRunner

from drcl.cli import app
from drcl.kfp.project import pipeline_arguments
from drcl.kfp.remote import MANAGED, connect, reconcile
from drcl.kfp.schedules import ScheduleSpec, load_schedules
from tests.pipeline.conftest import ROOT

HOST = "http://kfp.example.test"


def drcl(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def at_root(monkeypatch) -> Path:
    monkeypatch.chdir(ROOT)
    return ROOT


def test_submit_uploads_a_version_and_creates_a_run(at_root, fake_client, project_params):
    result = drcl("pipeline", "submit", "--host", HOST, "--run-name", "nightly-check")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "run 'nightly-check' created: run_pipeline-6"
    assert fake_client.host == HOST and fake_client.namespace == "drcl"
    assert [r.method for r in fake_client.requests] == [
        "get_pipeline_id", "upload_pipeline", "list_pipeline_versions",
        "upload_pipeline_version", "create_experiment", "run_pipeline"]
    (version,) = fake_client.calls("upload_pipeline_version")
    assert re.fullmatch(r"drcl-[0-9a-f]{12}", version["name"])
    (run,) = fake_client.calls("run_pipeline")
    assert run["experiment_id"] == "exp-drcl" and run["job_name"] == "nightly-check"
    assert run["pipeline_id"] == version["pipeline_id"]
    assert run["version_id"] == fake_client.versions[version["pipeline_id"]][0].pipeline_version_id
    assert run["params"] == pipeline_arguments(project_params)
    assert fake_client.calls("create_experiment") == [{"name": "drcl", "namespace": "drcl"}]
    # what was uploaded is the compiled pipeline, with the training fan-out in it
    assert "exec-train" in fake_client.uploaded[-1]["deploymentSpec"]["executors"]


def test_an_unchanged_pipeline_reuses_its_version_a_changed_one_adds_one(
        at_root, fake_client, project_params, tmp_path):
    assert drcl("pipeline", "submit", "--host", HOST).exit_code == 0
    assert drcl("pipeline", "submit", "--host", HOST).exit_code == 0
    assert len(fake_client.calls("upload_pipeline_version")) == 1
    assert len(fake_client.calls("upload_pipeline")) == 1
    first, second = fake_client.calls("run_pipeline")
    assert first["version_id"] == second["version_id"]
    changed = project_params.model_dump(mode="json", exclude_none=True)
    changed["train"]["epochs"] = 7
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(changed))
    assert drcl("pipeline", "submit", "--host", HOST, "-p", str(params)).exit_code == 0
    assert len(fake_client.calls("upload_pipeline_version")) == 2
    assert fake_client.calls("run_pipeline")[-1]["params"]["train"]["epochs"] == 7


@pytest.fixture
def schedules(tmp_path) -> Path:
    """A copy of the project's schedule folder (nightly.yaml and its kustomization)."""
    folder = tmp_path / "schedules"
    shutil.copytree(ROOT / "infra" / "schedules", folder)
    return folder


def test_schedule_declares_the_file_and_creates_a_recurring_run(at_root, fake_client,
                                                                project_params, schedules):
    result = drcl("pipeline", "schedule", "--cron", "0 30 2 * * *", "--name", "drcl-weekly",
                  "--schedules", str(schedules), "--host", HOST)
    assert result.exit_code == 0, result.output
    assert f"declared 'drcl-weekly' (0 30 2 * * *) in {schedules / 'drcl-weekly.yaml'}" \
        in result.stdout
    assert {s.name: s.cron for s in load_schedules(schedules)} == {
        "drcl-nightly": "0 0 2 * * *", "drcl-weekly": "0 30 2 * * *"}
    listed = yaml.safe_load((schedules / "kustomization.yaml").read_text())
    assert listed["configMapGenerator"][0]["files"] == ["nightly.yaml", "drcl-weekly.yaml"]
    weekly = next(r for r in fake_client.calls("create_recurring_run")
                  if r["job_name"] == "drcl-weekly")
    (version,) = fake_client.calls("upload_pipeline_version")
    assert weekly["cron_expression"] == "0 30 2 * * *" and weekly["experiment_id"] == "exp-drcl"
    assert weekly["max_concurrency"] == 1 and weekly["no_catchup"] is True
    assert weekly["enabled"] is True
    assert weekly["version_id"] == \
        fake_client.versions[version["pipeline_id"]][0].pipeline_version_id
    assert weekly["params"] == pipeline_arguments(project_params)
    assert weekly["description"].startswith(f"{MANAGED} drcl-weekly ")
    # the reconciler (the CronJob's command) then keeps it: one model, not two
    again = drcl("pipeline", "reconcile", "--schedules", str(schedules), "--host", HOST)
    assert again.exit_code == 0, again.output
    assert "disable" not in again.stdout and "keep drcl-weekly" in again.stdout
    assert sorted(r.display_name for r in fake_client.enabled()) == ["drcl-nightly",
                                                                     "drcl-weekly"]


def test_a_schedule_name_declared_already_is_refused(at_root, fake_client, schedules):
    first = drcl("pipeline", "reconcile", "--schedules", str(schedules), "--host", HOST)
    assert first.exit_code == 0, first.output
    for _ in range(2):
        refused = drcl("pipeline", "schedule", "--cron", "0 0 5 * * *", "--name", "drcl-nightly",
                       "--schedules", str(schedules), "--host", HOST)
        assert refused.exit_code == 1
        assert refused.stderr == (f"drcl: error: {schedules}: schedule 'drcl-nightly' is "
                                  "declared already; edit its file and run `drcl pipeline "
                                  "reconcile`\n")
    assert [r.display_name for r in fake_client.enabled()] == ["drcl-nightly"]
    assert len(fake_client.calls("create_recurring_run")) == 1
    assert sorted(p.name for p in schedules.iterdir()) == ["kustomization.yaml", "nightly.yaml"]


@pytest.mark.parametrize(("args", "message"), [
    (["--cron", "30 2 * * *"], "--cron: '30 2 * * *' has 5 fields; Kubeflow's cron has 6, "
                               "seconds first (e.g. '0 30 2 * * *')"),
    (["--cron", "0 0 3 * * * *"], "is not a 6-field cron expression"),
    (["--cron", "0 0 3 * * ;rm"], "is not a 6-field cron expression"),
    (["--cron", "0 0 3 * * *", "--name", "Nightly Run"], "--name: 'Nightly Run' must be"),
])
def test_bad_schedule_input_sends_nothing(at_root, fake_client, schedules, args, message):
    result = drcl("pipeline", "schedule", *args, "--schedules", str(schedules), "--host", HOST)
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert fake_client.requests == []


def test_no_endpoint_configured(at_root, fake_client):
    for command in (["submit"], ["schedule", "--cron", "0 0 3 * * *"], ["reconcile"]):
        result = drcl("pipeline", *command)
        assert result.exit_code == 1
        assert result.stderr == ("drcl: error: kubeflow.host: no Kubeflow Pipelines endpoint; "
                                 "set it in params.yaml or pass --host\n")
    result = drcl("pipeline", "submit", "--host", "kfp.example.test")
    assert result.stderr == "drcl: error: --host: 'kfp.example.test' is not an http(s) URL\n"
    assert fake_client.requests == []


def test_a_refusal_is_one_line_with_the_status(at_root, fake_client, monkeypatch):
    def refuse(*args, **kwargs):
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(fake_client, "run_pipeline", refuse)
    result = drcl("pipeline", "submit", "--host", HOST, "--run-name", "r1")
    assert result.exit_code == 1
    assert result.stderr == (f"drcl: error: Kubeflow Pipelines at {HOST} refused creating run "
                             "'r1': HTTP 403 Forbidden\n")


def test_run_without_local_points_to_submit(at_root):
    result = drcl("pipeline", "run")
    assert result.exit_code == 1
    assert "--local: `drcl pipeline run` only runs on this machine" in result.stderr


# real endpoints on 127.0.0.1, talked to by the real kfp.Client


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """An HTTP server that answers every request 403 with a KFP-style JSON error."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = json.dumps({"error_message": "user cannot access namespace drcl\nmore",
                               "code": 7}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_real_client_refused(at_root, refusing_server):
    result = drcl("pipeline", "submit", "--host", refusing_server)
    assert result.exit_code == 1
    assert result.stderr == (f"drcl: error: Kubeflow Pipelines at {refusing_server} refused "
                             "looking up pipeline 'drcl': HTTP 403 Forbidden (user cannot "
                             "access namespace drcl)\n")


def test_real_client_unreachable(at_root, schedules):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    result = drcl("pipeline", "schedule", "--cron", "0 0 3 * * *", "--host", host,
                  "--schedules", str(schedules))
    assert result.exit_code == 1
    assert not (schedules / "drcl-scheduled.yaml").exists()  # declared only once applied
    line = result.stderr
    assert line.startswith(f"drcl: error: Kubeflow Pipelines at {host} is unreachable "
                           "(looking up pipeline 'drcl': ")
    assert line.endswith("; check --host or kubeflow.host\n") and line.count("\n") == 1


# reconcile: the declarative schedules


def specs(*items: tuple[str, str], enabled: bool = True) -> list[ScheduleSpec]:
    return [ScheduleSpec(name=n, cron=c, enabled=enabled) for n, c in items]


def plan_of(actions) -> list[tuple[str, str]]:
    return sorted((a.kind, a.schedule) for a in actions)


def test_reconcile_creates_keeps_replaces_and_disables(at_root, fake_client, project_params):
    endpoint = connect(project_params, HOST)
    nightly, weekly = ("nightly", "0 0 2 * * *"), ("weekly", "0 0 4 * * 0")
    hourly = ("hourly", "0 0 * * * *")

    first = reconcile(endpoint, project_params, specs(nightly, weekly, hourly))
    assert plan_of(first) == [("create", "hourly"), ("create", "nightly"), ("create", "weekly")]
    assert all(a.run_id for a in first)
    crons = {r["job_name"]: r["cron_expression"] for r in fake_client.calls("create_recurring_run")}
    assert crons == {"nightly": "0 0 2 * * *", "weekly": "0 0 4 * * 0", "hourly": "0 0 * * * *"}

    again = reconcile(endpoint, project_params, specs(nightly, weekly, hourly))
    assert plan_of(again) == [("keep", "hourly"), ("keep", "nightly"), ("keep", "weekly")]
    assert len(fake_client.calls("create_recurring_run")) == 3
    assert len(fake_client.calls("list_recurring_runs")) == 3  # 1 + 2 pages of two: paged

    old_nightly = next(r for r in fake_client.enabled() if r.display_name == "nightly")
    before = len(fake_client.requests)
    changed = reconcile(endpoint, project_params, specs(("nightly", "0 0 3 * * *"), weekly))
    assert plan_of(changed) == [("create", "nightly"), ("disable", "hourly"),
                                ("disable", "nightly"), ("keep", "weekly")]
    assert old_nightly.status == "DISABLED"
    # created before the old one was disabled: never a moment without a schedule
    methods = [r.method for r in fake_client.requests[before:]]
    assert methods.index("create_recurring_run") < methods.index("disable_recurring_run")
    assert sorted(r.display_name for r in fake_client.enabled()) == ["nightly", "weekly"]

    off = reconcile(endpoint, project_params, specs(weekly) + specs(nightly, enabled=False))
    assert plan_of(off) == [("disable", "nightly"), ("keep", "weekly")]
    assert [r.display_name for r in fake_client.enabled()] == ["weekly"]


def test_reconcile_recreates_when_the_pipeline_changes(at_root, fake_client, project_params):
    endpoint = connect(project_params, HOST)
    reconcile(endpoint, project_params, specs(("nightly", "0 0 2 * * *")))
    changed = project_params.model_copy(update={"seed": 5})
    plan = reconcile(endpoint, changed, specs(("nightly", "0 0 2 * * *")))
    assert plan_of(plan) == [("create", "nightly"), ("disable", "nightly")]
    latest = fake_client.calls("create_recurring_run")[-1]
    assert latest["params"]["seed"] == 5


def test_reconcile_leaves_runs_it_does_not_own(at_root, fake_client, project_params):
    endpoint = connect(project_params, HOST)
    fake_client.create_recurring_run("exp-drcl", "hand-made", description="made in the UI",
                                     enabled=True)
    plan = reconcile(endpoint, project_params, [])
    assert plan == []
    assert [r.display_name for r in fake_client.enabled()] == ["hand-made"]


def test_reconcile_command_and_dry_run(at_root, fake_client, tmp_path):
    folder = tmp_path / "schedules"
    folder.mkdir()
    (folder / "nightly.yaml").write_text("name: drcl-nightly\ncron: '0 0 2 * * *'\n")
    result = drcl("pipeline", "reconcile", "--schedules", str(folder), "--host", HOST,
                  "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "would create drcl-nightly"
    writes = {"upload_pipeline", "upload_pipeline_version", "create_experiment",
              "create_recurring_run", "disable_recurring_run", "run_pipeline"}
    assert not [r.method for r in fake_client.requests if r.method in writes]  # only reads
    result = drcl("pipeline", "reconcile", "--schedules", str(folder), "--host", HOST)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("create drcl-nightly (create_recurring_run-")
    (req,) = fake_client.calls("create_recurring_run")
    assert req["max_concurrency"] == 1 and req["no_catchup"] is True


def test_reconcile_applies_the_projects_schedules(at_root, fake_client):
    result = drcl("pipeline", "reconcile", "--host", HOST)
    assert result.exit_code == 0, result.output
    created = fake_client.calls("create_recurring_run")
    assert created and all(r["max_concurrency"] == 1 and r["no_catchup"] for r in created)
