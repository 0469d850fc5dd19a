"""The compiled pipeline YAML: structure, platform settings, no secrets, defaults, golden file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drcl.cli import app
from drcl.config import parse_params
from drcl.errors import DrclError
from drcl.kfp.project import (
    STAGE_GROUPS,
    check_cluster_data,
    compile_pipeline,
    pipeline_arguments,
)
from tests.pipeline.conftest import ROOT

GOLDEN = Path(__file__).parent / "golden" / "drcl_pipeline.yaml"
STEPS = ("resolve", "probe", "prepare", "prior", "train", "evaluate", "promote", "summary",
         "finish")
GPU_TASKS = ("exec-probe", "exec-prior", "exec-train")
"""prior and train train; probe asks a GPU node what `precision: auto` means there."""


def normalized(text: str) -> str:
    """The YAML without what changes between identical compiles: kfp's header comment lists
    dict defaults in a random key order, and the SDK version changes with kfp upgrades."""
    lines = [line for line in text.splitlines()
             if not line.startswith("#") and not line.startswith("sdkVersion:")]
    return "\n".join(lines).strip() + "\n"


def dag(spec: dict, component: str) -> dict:
    return spec["components"][component]["dag"]["tasks"]


def group(spec: dict, tasks: dict, name: str) -> tuple[dict, dict]:
    """A control-flow group's task (found by display name) and its DAG's tasks."""
    task = next(t for t in tasks.values() if t["taskInfo"]["name"] == name)
    return task, dag(spec, task["componentRef"]["name"])


def all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the pipeline, by name, whatever group it sits in."""
    found = {}
    todo = [spec["root"]["dag"]["tasks"]]
    while todo:
        for name, task in todo.pop().items():
            ref = task["componentRef"]["name"]
            if "dag" in spec["components"][ref]:
                todo.append(dag(spec, ref))
            else:
                found[name] = task
    return found


def test_every_step_is_a_component_in_the_one_image(compiled, project_params):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}" for s in STEPS}
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == project_params.kubeflow.image
        assert "pip install" not in " ".join(container["command"])  # nothing installed at run time


def handler(spec: dict) -> dict:
    """The exit handler's DAG."""
    (found,) = (t for t in spec["root"]["dag"]["tasks"].values()
                if t["componentRef"]["name"].startswith("comp-exit-handler"))
    return dag(spec, found["componentRef"]["name"])


def test_training_fans_out_per_modality_on_gpu_nodes(compiled, project_params):
    spec, platform = compiled
    cluster = project_params.kubeflow
    loop, loop_tasks = group(spec, handler(spec), "modalities")
    # one item per modality from prepare: its view of the params and its own splits' hashes
    assert loop["parameterIterator"]["items"]["inputParameter"] == \
        "pipelinechannel--prepare-fanout"
    assert loop["iteratorPolicy"]["parallelismLimit"] == cluster.parallelism
    assert list(loop_tasks) == ["train"]
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors = spec["deploymentSpec"]["executors"]
    for name in GPU_TASKS:
        accelerator = executors[name]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == cluster.gpu.accelerator == "nvidia.com/gpu"
        assert accelerator["resourceCount"] == str(cluster.gpu.limit)
        assert kube[name]["nodeSelector"]["labels"] == cluster.node_selector
        assert kube[name]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                              "effect": "NoSchedule"}]
    for name in set(executors) - set(GPU_TASKS):
        assert "nodeSelector" not in kube[name] and "tolerations" not in kube[name]
        assert "accelerator" not in executors[name]["container"]["resources"]
    evaluate = handler(spec)["evaluate"]["inputs"]["parameters"]["encoders"]
    assert evaluate["taskOutputParameter"]["producerTask"].startswith("for-loop-")


def test_every_task_has_requests_and_limits_sized_from_params(compiled, project_params):
    spec, _ = compiled
    wanted = project_params.kubeflow.resources
    kinds = {"exec-prior": wanted.gpu_task, "exec-train": wanted.gpu_task,
             "exec-evaluate": wanted.evaluate, "exec-promote": wanted.promote}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        kind = kinds.get(name, wanted.task)
        got = executor["container"]["resources"]
        assert (got["resourceCpuRequest"], got["resourceCpuLimit"]) == (kind.cpu, kind.cpu_limit)
        assert (got["resourceMemoryRequest"], got["resourceMemoryLimit"]) == \
            (kind.memory, kind.memory_limit)


def test_data_travels_by_reference(compiled):
    """No task takes an artifact of data or models: each takes content hashes and fetches the
    splits it reads; a training task gets its own modality's splits and the prior's hash."""
    spec, _ = compiled
    tasks = all_tasks(spec)
    takes_artifacts = {name: set(t["inputs"]["artifacts"]) for name, t in tasks.items()
                       if t.get("inputs", {}).get("artifacts")}
    assert takes_artifacts == {"summary": {"outcome"}}  # promotion's record, a few kB
    train = tasks["train"]["inputs"]["parameters"]
    assert set(train) == {"item", "class_prior", "store", "tracking"}
    assert set(tasks["prior"]["inputs"]["parameters"]) == {"task", "dataset", "store",
                                                           "tracking"}


def test_no_task_takes_a_run_wide_key(compiled, platform_executors):
    """Tasks are keyed by their own view, code and inputs. The run's id reaches them from the
    pod's label as an environment variable, which is not part of Kubeflow's cache key; only the
    uncached tasks that account for the run take it as an input."""
    spec, _ = compiled
    for name, task in all_tasks(spec).items():
        params = task.get("inputs", {}).get("parameters", {})
        assert "run_key" not in params, name
        takes_run_id = any("pipeline_job_uuid" in str(v) for v in params.values())
        assert takes_run_id == (name in ("summary", "finish")), name
    for name, executor in platform_executors.items():
        assert {"name": "KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"} in \
            executor["fieldPathAsEnv"], name


@pytest.fixture
def platform_executors(compiled) -> dict:
    return compiled[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_what_kubeflow_may_serve_from_its_cache(compiled):
    """The keyed tasks are cached; what reads a moving branch or changes the registry is not."""
    spec, _ = compiled
    tasks = all_tasks(spec)
    cached = {name for name, t in tasks.items()
              if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"prepare", "prior", "train", "evaluate"}
    finish = spec["root"]["dag"]["tasks"]["finish"]
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


def test_promotion_always_runs_and_applies_the_one_gate(compiled):
    """No gate in the pipeline: drcl promote decides, and registers a failing set as a
    challenger, exactly as the command does."""
    spec, _ = compiled
    work = handler(spec)
    assert "promote" in work and "triggerPolicy" not in work["promote"]
    assert not any(name.startswith("condition") for name in work)


def test_credentials_come_from_secrets_and_never_appear(tmp_path, monkeypatch, project_params):
    sentinel = "s3cr3t-value-that-must-not-leak"
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, sentinel)
    out = tmp_path / "p.yaml"
    compile_pipeline(project_params, out)
    text = out.read_text()
    assert sentinel not in text
    spec, platform = yaml.safe_load_all(text)
    for executor in spec["deploymentSpec"]["executors"].values():
        for env in executor["container"].get("env", []):
            assert not re.search("SECRET|PASSWORD|TOKEN|ACCESS_KEY", env["name"])
    wanted = {(s.name, k) for s in project_params.kubeflow.secrets for k in s.keys}
    for executor in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        refs = {(ref["secretName"], item["secretKey"]) for ref in executor["secretAsEnv"]
                for item in ref["keyToEnv"]}
        assert refs == wanted
    assert ("drcl-s3", "AWS_SECRET_ACCESS_KEY") in wanted


def test_parameters_default_to_params_yaml(compiled, project_params):
    spec, _ = compiled
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert set(declared) == set(STAGE_GROUPS)
    defaults = {name: p["defaultValue"] for name, p in declared.items()}
    # kfp stores numbers as floats; validated, they are the project's params again
    assert parse_params(defaults).model_dump(include=set(STAGE_GROUPS)) == \
        project_params.model_dump(include=set(STAGE_GROUPS))
    assert pipeline_arguments(project_params)["train"]["epochs"] == \
        declared["train"]["defaultValue"]["epochs"]


def test_compiled_yaml_matches_the_golden_file(compiled_file):
    got = normalized(compiled_file.read_text())
    if os.environ.get("DRCL_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), (
        "the compiled pipeline changed: review the difference, then regenerate with "
        "DRCL_UPDATE_GOLDEN=1 pytest tests/pipeline/test_compile.py")


def test_compile_command_writes_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out" / "drcl.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{out}: ") and "compiled in" in result.stdout
    assert normalized(out.read_text()) == GOLDEN.read_text()


@pytest.mark.parametrize(("edit", "message"), [
    ({"kubeflow": {"gpu": {"limit": 0}}}, "kubeflow.gpu.limit: Input should be greater than"),
    ({"kubeflow": {"env": {"AWS_SECRET_ACCESS_KEY": "x"}}},
     "kubeflow.env: AWS_SECRET_ACCESS_KEY looks like a credential"),
    ({"kubeflow": {"env": {"DB_PASSWD": "x"}}}, "kubeflow.env: DB_PASSWD looks like a credential"),
    ({"kubeflow": {"env": {"MLFLOW_TRACKING_URI": "http://admin:pw@mlflow:5000"}}},
     "kubeflow.env: MLFLOW_TRACKING_URI: the URL carries a user name and password"),
    ({"kubeflow": {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}},
     "kubeflow.tolerations.0.effect"),
    ({"kubeflow": {"secrets": [{"name": "s3", "keys": ["not a name"]}]}},
     "kubeflow.secrets.0.keys.0"),
    ({"kubeflow": {"image": "has space"}}, "kubeflow.image"),
    ({"kubeflow": {"gpus": 1}}, "kubeflow.gpus: unknown key"),
])
def test_bad_cluster_params_are_one_line_and_write_nothing(tmp_path, monkeypatch, edit, message):
    monkeypatch.chdir(ROOT)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(edit))
    out = tmp_path / "drcl.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "-p", str(params), "-o", str(out)])
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [params]


def test_the_pipeline_compiles_wherever_drcl_is_installed(tmp_path, monkeypatch):
    """components/ and pipelines/ install as drcl.components and drcl.pipelines: no path
    tricks, and the image runs the very same code."""
    (tmp_path / "params.yaml").write_text("seed: 1\ndata: {modalities: [fou, kar]}\n"
                                         "kubeflow: {store: s3://bucket/drcl-store}\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["pipeline", "compile"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "build" / "drcl-pipeline.yaml").is_file()


def test_extraction_comes_first_only_for_extracted_data(tmp_path, project_params, compiled):
    spec, _ = compiled
    assert "exec-extract" not in spec["deploymentSpec"]["executors"]
    data = project_params.data.model_copy(update={"source": "extracted",
                                                  "modalities": ["image", "text"]})
    extract = project_params.extract.model_copy(update={"manifest": Path("/data/items.csv")})
    params = project_params.model_copy(update={"data": data, "extract": extract})
    out = tmp_path / "extracted.yaml"
    compile_pipeline(params, out)
    spec, platform = yaml.safe_load_all(out.read_text())
    tasks = all_tasks(spec)
    assert tasks["extract"]["inputs"]["parameters"]["task"]["taskOutputParameter"] == {
        "outputParameterKey": "extract", "producerTask": "probe"}
    assert tasks["extract"]["cachingOptions"] == {}  # raw files Kubeflow cannot see
    features = tasks["prepare"]["inputs"]["parameters"]["extracted"]["taskOutputParameter"]
    assert features == {"outputParameterKey": "features", "producerTask": "extract"}
    # extraction embeds images and texts: on a GPU node
    container = spec["deploymentSpec"]["executors"]["exec-extract"]["container"]
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-extract"][
        "nodeSelector"]["labels"] == project_params.kubeflow.node_selector
    assert spec["root"]["inputDefinitions"]["parameters"]["extract"]["defaultValue"][
        "manifest"] == "/data/items.csv"


def test_data_in_the_image_is_read_on_every_run(tmp_path, project_params):
    """A file at an absolute path in the image or a volume: Kubeflow cannot see it change, so
    prepare starts every run and keys itself by the file's content."""
    params = parse_params({**project_params.model_dump(mode="json"), "data": {
        "source": "npz", "path": "/data/scene.npz", "modalities": ["view0", "view1"]}})
    compile_pipeline(params, tmp_path / "p.yaml")
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert all_tasks(spec)["prepare"]["cachingOptions"] == {}


def test_a_store_is_required(tmp_path, project_params):
    cluster = project_params.kubeflow.model_copy(update={"store": None, "pipeline_root": None})
    with pytest.raises(DrclError, match="^kubeflow.store: tasks hand each other their outputs"):
        compile_pipeline(project_params.model_copy(update={"kubeflow": cluster}),
                         tmp_path / "p.yaml")
    cluster = cluster.model_copy(update={"pipeline_root": "s3://b/kfp"})
    compile_pipeline(project_params.model_copy(update={"kubeflow": cluster}), tmp_path / "p.yaml")
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert all_tasks(spec)["prior"]["inputs"]["parameters"]["store"]["runtimeValue"][
        "constant"] == "s3://b/kfp/drcl-store"


@pytest.mark.parametrize(("data", "extract", "message"), [
    ({"source": "npz", "path": "data/scene.npz", "modalities": ["a"]}, {},
     "data.path: 'data/scene.npz' is a file on this machine, which a cluster's tasks cannot read"),
    ({"source": "extracted", "modalities": ["a"]}, {"manifest": "raw/items.csv"},
     "extract.manifest: 'raw/items.csv' is a file on this machine"),
    ({"source": "npz", "path": "data/scene.npz", "dvc": {"repo": "https://git.example.com/d"}},
     {}, "data.modalities: the pipeline trains"),
    *[({"source": "npz", "path": "data/scene.npz", "modalities": ["a"], "dvc": {"repo": repo}},
       {}, f"data.dvc.repo: '{repo}' is a repository on this machine, which a cluster's tasks "
           "cannot clone")
      for repo in ("file:///srv/scenes", "/srv/scenes.git", "../scenes", "scenes")],
])
def test_data_a_cluster_cannot_read_fails_at_compile_time(tmp_path, project_params, data,
                                                          extract, message):
    params = parse_params({**project_params.model_dump(mode="json"), "data": data,
                           "extract": {**project_params.extract.model_dump(mode="json"),
                                       **extract}})
    with pytest.raises(DrclError, match=message):
        compile_pipeline(params, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("repo", ["ssh://git.example.com/ml/scenes.git",
                                  "git@git.example.com:ml/scenes.git",
                                  "git://git.example.com/ml/scenes.git"])
def test_a_repository_a_cluster_can_clone_compiles(tmp_path, project_params, repo):
    params = parse_params({**project_params.model_dump(mode="json"), "data": {
        "source": "npz", "path": "data/scene.npz", "modalities": ["view0", "view1"],
        "dvc": {"repo": repo, "rev": "main"}}})
    check_cluster_data(params)


def test_data_named_through_dvc_compiles(tmp_path, project_params):
    params = parse_params({**project_params.model_dump(mode="json"), "data": {
        "source": "npz", "path": "data/scene.npz", "modalities": ["view0", "view1"],
        "dvc": {"repo": "https://git.example.com/ml/scenes.git", "rev": "main"}}})
    compile_pipeline(params, tmp_path / "p.yaml")
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    default = spec["root"]["inputDefinitions"]["parameters"]["data"]["defaultValue"]
    assert default["dvc"] == {"repo": "https://git.example.com/ml/scenes.git", "rev": "main"}
