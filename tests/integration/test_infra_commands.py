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

from tests.integration.project import run, write_features, write_params
from tests.services import HOST, free_ports, running

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
K8S_VERSION = "1.30.0"
RENDERED = ("overlays/kubeflow-profile", "overlays/plain-namespace", "serving")


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
            env[entry["name"]] = secret_values[(ref["name"], ref["key"])]
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
