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
from drcl.kfp.project import STAGE_GROUPS, compile_pipeline, pipeline_arguments
from tests.pipeline.conftest import ROOT

GOLDEN = Path(__file__).parent / "golden" / "drcl_pipeline.yaml"
STEPS = ("prepare", "prior", "train", "evaluate", "promote", "finish")


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


def test_every_step_is_a_component_in_the_one_image(compiled, project_params):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}" for s in STEPS}
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == project_params.kubeflow.image
        assert "pip install" not in " ".join(container["command"])  # nothing installed at run time


def test_training_fans_out_per_modality_on_gpu_nodes(compiled, project_params):
    spec, platform = compiled
    cluster = project_params.kubeflow
    (handler,) = (t for t in spec["root"]["dag"]["tasks"].values()
                  if t["componentRef"]["name"].startswith("comp-exit-handler"))
    tracked = dag(spec, handler["componentRef"]["name"])
    loop, loop_tasks = group(spec, tracked, "modalities")
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--prepare-Output"
    assert loop["iteratorPolicy"]["parallelismLimit"] == cluster.parallelism
    assert list(loop_tasks) == ["train"]
    accelerator = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"][
        "accelerator"]
    assert accelerator["resourceType"] == cluster.gpu.accelerator == "nvidia.com/gpu"
    assert accelerator["resourceCount"] == str(cluster.gpu.limit)
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["labels"] == cluster.node_selector
    assert train["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                     "effect": "NoSchedule"}]
    others = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-prepare", "exec-prior", "exec-evaluate", "exec-promote"):
        assert "nodeSelector" not in others[name] and "tolerations" not in others[name]
        assert "resources" not in spec["deploymentSpec"]["executors"][name]["container"]
    # the evaluation takes every modality's encoder
    evaluate = tracked["evaluate"]["inputs"]["artifacts"]["encoders"]
    assert evaluate["taskOutputArtifact"]["producerTask"] == "for-loop-2"


def test_promotion_always_runs_and_applies_the_one_gate(compiled):
    """No gate in the pipeline: drcl promote decides, and registers a failing set as a
    challenger, exactly as the command does."""
    spec, _ = compiled
    (handler,) = (t for t in spec["root"]["dag"]["tasks"].values()
                  if t["componentRef"]["name"].startswith("comp-exit-handler"))
    tracked = dag(spec, handler["componentRef"]["name"])
    assert "promote" in tracked and "triggerPolicy" not in tracked["promote"]
    assert tracked["promote"]["cachingOptions"] == {}  # never served from the cache
    assert not any(name.startswith("condition") for name in tracked)
    finish = spec["root"]["dag"]["tasks"]["finish"]
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


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
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["pipeline", "compile"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "build" / "drcl-pipeline.yaml").is_file()


def test_extraction_comes_first_only_for_extracted_data(tmp_path, project_params, compiled):
    spec, _ = compiled
    assert "exec-extract" not in spec["deploymentSpec"]["executors"]
    data = project_params.data.model_copy(update={"source": "extracted", "modalities": None})
    extract = project_params.extract.model_copy(update={"manifest": Path("items.csv")})
    params = project_params.model_copy(update={"data": data, "extract": extract})
    out = tmp_path / "extracted.yaml"
    compile_pipeline(params, out)
    spec, _ = yaml.safe_load_all(out.read_text())
    tracked = next(c["dag"]["tasks"] for name, c in spec["components"].items()
                   if name.startswith("comp-exit-handler"))
    assert tracked["extract"]["inputs"]["parameters"]["extract"]["componentInputParameter"] \
        == "pipelinechannel--extract"
    features = tracked["prepare"]["inputs"]["artifacts"]["extracted"]["taskOutputArtifact"]
    assert features == {"outputArtifactKey": "features", "producerTask": "extract"}
    assert spec["root"]["inputDefinitions"]["parameters"]["extract"]["defaultValue"][
        "manifest"] == "items.csv"
