"""infra/'s manifests rendered by a real kustomize and their container commands started here.

`kubectl kustomize` renders both overlays and the serving kustomization; every rendered core
object is checked against the Kubernetes OpenAPI schema of a pinned version. Then the MLflow
server's container is started from the rendered Deployment exactly as written (command, args,
the environment Kubernetes would give it, with Secrets filled in by the test), in the locked
environment: SQLite stands in for PostgreSQL, SeaweedFS for S3, and 127.0.0.1 and a free port
for the pod's address. A pipeline stage logs to it with the credentials the tasks get; a
request without them is refused.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.integration.project import copy_pipeline, run, write_features, write_params
from tests.services import HOST, free_ports, running

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
K8S_VERSION = "1.30.0"
RENDERED = ("overlays/kubeflow-profile", "overlays/plain-namespace", "serving", "tune")


def render(kustomization: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its `kubectl kustomize` renders infra/k8s)")
    done = subprocess.run([kubectl, "kustomize", str(K8S / kustomization)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{kustomization}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.mark.parametrize("kustomization", RENDERED)
def test_rendered_objects_follow_the_kubernetes_schemas(kustomization):
    docs = render(kustomization)
    core = [d for d in docs if not d["apiVersion"].startswith("serving.kserve.io/")]
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert core


def test_every_kustomization_deploys_into_the_namespace_params_yaml_names():
    wanted = yaml.safe_load((ROOT / "params.yaml").read_text())["kubeflow"]["namespace"]
    for kustomization in RENDERED:
        spaces = {d["metadata"].get("namespace") for d in render(kustomization)
                  if d["kind"] != "Namespace"}
        assert spaces == {wanted}, (kustomization, spaces)


def container_env(doc: dict, config_maps: dict[str, dict], secret_values: dict[tuple, str],
                  ) -> dict[str, str]:
    """The environment Kubernetes gives the first container of `doc`: envFrom ConfigMaps,
    then `env` in order, `$(NAME)` expanded from what came before."""
    pod = doc["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]),
                                        entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            key = (ref["name"], ref["key"])
            if key in secret_values or not ref.get("optional"):
                env[entry["name"]] = secret_values[key]
    return env


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_the_mlflow_server_starts_as_its_manifest_says(tmp_path, s3_server, empty_mlflow_store):
    import boto3

    docs = render("overlays/plain-namespace")
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs
                   if d["kind"] == "ConfigMap"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["metadata"]["name"] == "mlflow"]
    s3 = s3_server.env()
    admin, password = "drcl-admin", secrets.token_urlsafe(12)
    secret_values = {("drcl-mlflow-db", "username"): "mlflow",
                     ("drcl-mlflow-db", "password"): secrets.token_urlsafe(12),
                     ("drcl-mlflow", "MLFLOW_TRACKING_USERNAME"): admin,
                     ("drcl-mlflow", "MLFLOW_TRACKING_PASSWORD"): password,
                     ("drcl-mlflow", "MLFLOW_FLASK_SERVER_SECRET_KEY"): secrets.token_hex(16),
                     ("drcl-s3", "AWS_ACCESS_KEY_ID"): s3["AWS_ACCESS_KEY_ID"],
                     ("drcl-s3", "AWS_SECRET_ACCESS_KEY"): s3["AWS_SECRET_ACCESS_KEY"]}
    env = container_env(deployment, config_maps, secret_values)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    # what differs from the pod: the database, the S3 endpoint, the address, a file's path
    db = tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_store, db)
    (port,) = free_ports(1)
    bucket = env["MLFLOW_ARTIFACTS_DESTINATION"].removeprefix("s3://").split("/")[0]
    boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
    env |= {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{db}", "MLFLOW_HOST": HOST,
            "MLFLOW_PORT": str(port), "MLFLOW_S3_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"],
            "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path), "AWS_DEFAULT_REGION": "us-east-1"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = container.get("command", []) + container.get("args", [])
    url = f"http://{HOST}:{port}"
    with running(command, health=url + "/health", cwd=tmp_path, env=env,
                 log=tmp_path / "server.log", timeout=120):
        search = url + "/api/2.0/mlflow/experiments/search?max_results=1"
        assert get(search) == 401  # no credentials: refused
        assert get(search, basic(admin, "wrong")) == 401
        assert get(search, basic(admin, password)) == 200
        # a pipeline stage, with what the tasks get: the URI, the account, nothing else
        project = tmp_path / "project"
        project.mkdir()
        write_features(project / "features.npz")
        write_params(project, data={"source": "npz", "path": "features.npz",
                                    "modalities": ["image", "text"]},
                     tracking={"enabled": True})
        task_env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": admin,
                    "MLFLOW_TRACKING_PASSWORD": password, **s3}
        for stage in (["drcl", "prepare"], ["drcl", "prior"]):
            done = run(stage, project, task_env)
            assert done.returncode == 0, done.stderr
        refused = run(["drcl", "prior"], project, {**task_env,
                                                   "MLFLOW_TRACKING_PASSWORD": "wrong"})
        assert refused.returncode != 0
        assert refused.stderr.count("\n") == 1, refused.stderr
        from mlflow import MlflowClient

        os.environ.update({"MLFLOW_TRACKING_USERNAME": admin,
                           "MLFLOW_TRACKING_PASSWORD": password})
        try:
            client = MlflowClient(tracking_uri=url)
            experiment = client.get_experiment_by_name("drcl")
            runs = client.search_runs([experiment.experiment_id])
            assert {r.data.tags.get("drcl.stage") for r in runs} >= {"prior"}
            artifacts = [a.path for r in runs for a in client.list_artifacts(r.info.run_id)]
            assert artifacts  # proxied to the bucket on S3
        finally:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(name, None)
    stored = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"]
                          ).list_objects_v2(Bucket=bucket)
    assert stored.get("KeyCount", 0) > 0


@pytest.mark.slow
def test_the_serving_runtime_serves_a_champion_as_its_manifest_says(projects, tmp_path,
                                                                   mlflow_store, monkeypatch):
    """KServe's storage initializer puts the model in /mnt/models; here the champion set is
    downloaded to a folder that takes its place, and the runtime's container command runs."""
    import mlflow
    import numpy as np
    from typer.testing import CliRunner

    from drcl.cli import app

    project = projects.copy(tmp_path / "project")
    monkeypatch.chdir(project)
    promoted = CliRunner().invoke(app, ["promote"])
    assert promoted.exit_code == 0, promoted.output
    models = Path(mlflow.artifacts.download_artifacts("models:/drcl-set@champion",
                                                      dst_path=str(tmp_path / "mnt-models")))
    docs = render("serving")
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs
                   if d["kind"] == "ConfigMap"}
    (runtime,) = [d for d in docs if d["kind"] == "ServingRuntime"]
    spec = {"spec": {"template": {"spec": {"containers": runtime["spec"]["containers"]}}}}
    env = container_env(spec, config_maps, {("drcl-s3", "AWS_ACCESS_KEY_ID"): "unused",
                                            ("drcl-s3", "AWS_SECRET_ACCESS_KEY"): "unused"})
    (port,) = free_ports(1)
    assert env["DRCL_SERVE_HOST"] == "0.0.0.0" and env["DRCL_SERVE_PORT"] == "8080"
    env |= {"DRCL_SERVE_HOST": HOST, "DRCL_SERVE_PORT": str(port), "HOME": str(tmp_path),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    (container,) = runtime["spec"]["containers"]
    command = [str(models) if part == "/mnt/models" else part
               for part in container["command"] + container["args"]]
    assert str(models) in command
    url = f"http://{HOST}:{port}"
    with np.load(project / "data/prepared/image.npz") as npz:
        query = npz["test.features"][0].tolist()
    with running(command, health=url + "/ping", cwd=tmp_path, env=env,
                 log=tmp_path / "serve.log", timeout=180):
        request = urllib.request.Request(
            url + "/invocations", headers={"Content-Type": "application/json"},
            data=json.dumps({"inputs": [{"modality": "image", "features": query,
                                         "id": "q"}]}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            (answer,) = json.loads(response.read())["predictions"]
    assert answer["query"] == "q" and len(answer["embedding"]) == 16
    # the deployment's log says which arithmetic it computes in
    logged = (tmp_path / "serve.log").read_text()
    assert re.search(r"drcl: serving drcl-encoder-image v1, .* on cpu in (fp32|bf16|tf32) "
                     r"\(model config precision", logged), logged[-2000:]


@pytest.mark.slow
def test_the_tuning_job_runs_its_workers_as_its_manifest_says(tmp_path, s3_server,
                                                              empty_mlflow_store):
    """Two workers of the Job at once, each its container command as written (clone the
    project, pull its DVC outputs up to the prior from S3, `drcl tune`), on one study: the
    budget is spent once, by both; then `drcl tune` in the user's clone writes the result."""
    import csv
    import time

    s3 = s3_server.env()
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    study, store = tmp_path / "study.db", tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_store, store)
    for cmd, cwd in ((["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path),
                     (["git", "clone", "-q", str(origin), str(work)], tmp_path),
                     (["dvc", "init", "-q"], work)):
        assert run(cmd, cwd).returncode == 0
    copy_pipeline(work)
    write_features(work / "features.npz")
    write_params(work, data={"source": "npz", "path": "features.npz",
                             "modalities": ["image", "text"]},
                 tracking={"enabled": True},
                 tune={"trials": 3, "storage": f"sqlite:///{study}"})
    for cmd in (["drcl", "storage", "check", "--bucket", "drcl-tune", "--create"],
                ["dvc", "remote", "add", "-d", "store", "s3://drcl-tune/dvc"],
                ["dvc", "repro", "prior"], ["dvc", "push", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=u", "-c", "user.email=u@e", "commit", "-qm", "prior"],
                ["git", "push", "-q", "origin", "HEAD:main"]):
        done = run(cmd, work, {**s3, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
        assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-2000:])

    docs = render("tune")
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs
                   if d["kind"] == "ConfigMap"}
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["spec"]["parallelism"] >= 2
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = container_env(job, config_maps, {
        ("drcl-mlflow-db", "password"): "unused", ("drcl-s3", "AWS_ACCESS_KEY_ID"):
            s3["AWS_ACCESS_KEY_ID"], ("drcl-s3", "AWS_SECRET_ACCESS_KEY"):
            s3["AWS_SECRET_ACCESS_KEY"], ("drcl-mlflow", "MLFLOW_TRACKING_USERNAME"): "unused",
        ("drcl-mlflow", "MLFLOW_TRACKING_PASSWORD"): "unused"})
    assert env["GIT_ASKPASS"] == "drcl-git-askpass" and "DRCL_GIT_PASSWORD" not in env
    # what differs from a pod: the repository, the tracking store, S3's endpoint, the paths
    env |= {"DRCL_TUNE_REPO": f"file://{origin}", "DRCL_TUNE_REV": "main",
            "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "DVC_NO_ANALYTICS": "1",
            "AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"], "AWS_DEFAULT_REGION": "us-east-1",
            "OMP_NUM_THREADS": "1", "HOME": str(tmp_path),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert container["workingDir"] == "/work"
    workers = []
    for i in range(2):
        folder = tmp_path / f"pod{i}"
        folder.mkdir()
        log = (folder / "log").open("wb")
        workers.append((subprocess.Popen(container["command"] + container["args"], cwd=folder,
                                         env=env, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(0.5)
    for proc, log in workers:
        assert proc.wait(timeout=600) == 0, Path(log.name).read_text()[-3000:]
        log.close()

    done = run(["drcl", "tune"], work, {**s3, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((work / "tune" / "trials.csv").open()))
    for modality in ("image", "text"):
        finished = [r for r in rows if r["study"] == f"drcl.{modality}"
                    and r["state"] in ("COMPLETE", "PRUNED")]
        assert 3 <= len(finished) <= 4, rows  # the budget, once (a worker may start one more)
    assert len({r["worker"] for r in rows}) == 2, rows  # both workers ran trials
    assert (work / "tune" / "best.yaml").is_file()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("drcl")
    parents = client.search_runs([experiment.experiment_id],
                                 filter_string="tags.`drcl.tune.study` = 'drcl'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
