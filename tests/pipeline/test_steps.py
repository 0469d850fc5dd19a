"""dvc.yaml, release/dvc.yaml, the CLI, the Kubeflow components and README.md's stage table
against the one declaration of each step (drcl.steps): the same params, the same function,
DVC deps that cover every module a step imports (drcl.code_closure, which also keys a Kubeflow
task), so a code change never leaves a stage wrongly up to date, and `precision` read from
resolved.yaml, so DVC keys a stage by the arithmetic it used."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

from drcl import components
from drcl.cli import app
from drcl.code_closure import module_file, modules_of
from drcl.config import parse_params
from drcl.resolved import RESOLVED_FILE
from drcl.steps import BY_NAME, STEPS, Step

ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
RELEASE = yaml.safe_load((ROOT / "release" / "dvc.yaml").read_text())["stages"]
STAGED = [s for s in STEPS if s.name in DVC or s.name in RELEASE]
RESOLVED_KEYS = {"precision"}
"""Keys a stage takes from resolved.yaml (what the machine makes of them), not params.yaml."""


def stage(step: Step) -> dict:
    found = DVC.get(step.name) or RELEASE[step.name]
    return found["do"] if "foreach" in found else found


def declared_params(entries: list) -> set[str]:
    """A DVC stage's params as `key` (params.yaml) or `file:key`."""
    out: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            out.add(entry)
        else:
            for file, keys in entry.items():
                out |= {f"{file}:{k}" for k in keys}
    return out


def code_files(module: str) -> set[Path]:
    return {module_file(m).resolve().relative_to(ROOT) for m in modules_of(module)}


def test_every_dvc_stage_is_a_declared_step():
    assert set(DVC) | set(RELEASE) == {s.name for s in STAGED}
    assert {s.name for s in STEPS} - {s.name for s in STAGED} == {"add-modality", "tune"}


@pytest.mark.parametrize("step", STAGED, ids=lambda s: s.name)
def test_dvc_stage_reads_the_declared_params(step):
    wanted = {(f"{RESOLVED_FILE}:{k}" if k in RESOLVED_KEYS and step.name != "resolve" else k)
              for k in step.params}
    assert declared_params(stage(step)["params"]) == wanted


@pytest.mark.parametrize("step", STAGED, ids=lambda s: s.name)
def test_dvc_stage_depends_on_every_module_it_runs(step):
    wdir = ROOT / (stage(step).get("wdir") or ".") if step.name in DVC else ROOT
    deps = [(wdir / d).resolve().relative_to(ROOT) for d in stage(step)["deps"]]
    missing = sorted(str(f) for f in code_files(step.module)
                     if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"stage {step.name} misses code deps {missing}"


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_the_command_is_the_steps(step):
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    assert step.name in names
    if step.name in DVC or step.name in RELEASE:
        assert stage(step)["cmd"].split()[:2] == ["drcl", step.name]
    function = getattr(importlib.import_module(step.module), step.function)
    assert callable(function)


@pytest.mark.parametrize("step", [s for s in STEPS if hasattr(components, s.name)
                                  and s.name != "resolve"], ids=lambda s: s.name)
def test_the_component_calls_the_step_through_its_keyed_task(step):
    """A component takes its view of the params (never the groups: a task is keyed by what it
    reads) and its keyed task calls the step's function."""
    from drcl.kfp import task_steps

    func = getattr(components, step.name)
    groups = {"seed", "device", "precision", "data", "model", "prior", "train", "evaluate",
              "extract", "registry", "promotion"}
    assert not groups & set(inspect.signature(func).parameters), step.name
    assert f"task_steps.{step.name}(" in inspect.getsource(func)
    keyed = inspect.getsource(getattr(task_steps, step.name))
    assert f"import {step.function}" in keyed or f"{step.function} as " in keyed


def test_the_resolve_task_resolves_as_the_resolve_stage_does():
    """Kubeflow's resolve also pins the data and plans the tasks; what `precision` means on
    its node comes from the resolve step's own function."""
    from drcl.kfp import plan

    assert "cpu_views(" in inspect.getsource(components.resolve)
    assert "resolve_runtime(" in inspect.getsource(plan.cpu_views)


def test_readme_stage_table_names_the_declared_functions():
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| `drcl ([a-z-]+)[^`]*` \| `([\w.]+)` \|", text, re.M)
    assert {name for name, _ in rows} == {s.name for s in STEPS}
    for name, dotted in rows:
        step = BY_NAME[name]
        assert dotted == f"{step.module}.{step.function}", name
        module, function = dotted.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), function))


def test_a_view_holds_the_steps_keys_only():
    params = parse_params({"precision": "auto", "evaluate": {"k": 7},
                           "data": {"modalities": ["a", "b"]},
                           "train": {"lr_per_modality": {"a": 0.01}, "epochs": 5},
                           "model": {"standardize_per_modality": {"b": False}}})
    evaluate = BY_NAME["evaluate"].view(params, precision="fp32")
    assert evaluate == {"device": "auto", "precision": "fp32",
                        "evaluate": {"k": 7, "query_chunk": 1024,
                                     "rerank": {"dba_k": [0], "qe_k": [0], "alpha": [3.0]}}}
    prior = BY_NAME["prior"].view(params)
    assert set(prior["train"]) == {"epochs", "batch_size", "lr", "lr_per_modality",
                                   "label_loss", "correction"}
    assert prior["precision"] == "auto"  # unresolved until a machine resolves it
    a, b = (BY_NAME["train"].view(params, modality=m) for m in ("a", "b"))
    assert a["data"] == {"modalities": ["a"]} and b["data"] == {"modalities": ["b"]}
    assert a["train"]["lr_per_modality"] == {"a": 0.01} and b["train"]["lr_per_modality"] == {}
    assert a["model"]["standardize_per_modality"] == {}
    assert b["model"]["standardize_per_modality"] == {"b": False}
    # a view is valid params on its own (every other key at its default)
    assert parse_params(a).train.lr_for("a") == 0.01


def test_a_key_changes_with_the_view_the_code_and_each_input():
    step = BY_NAME["train"]
    view = {"seed": 0}
    key = step.key(view, {"x": "1", "y": "2"}, code="c", modality="a")
    assert step.key(view, {"y": "2", "x": "1"}, code="c", modality="a") == key  # order-free
    for other in (step.key({"seed": 1}, {"x": "1", "y": "2"}, code="c", modality="a"),
                  step.key(view, {"x": "1", "y": "3"}, code="c", modality="a"),
                  step.key(view, {"x": "1", "y": "2"}, code="d", modality="a"),
                  step.key(view, {"x": "1", "y": "2"}, code="c", modality="b"),
                  BY_NAME["prior"].key(view, {"x": "1", "y": "2"}, code="c", modality="a")):
        assert other != key


def test_the_code_of_a_step_is_what_it_imports():
    train = modules_of("drcl.stages.train")
    assert {"drcl.train", "drcl.losses", "drcl.model", "drcl.stages"} <= train
    assert not {"drcl.promotion", "drcl.registry", "drcl.kfp", "drcl.search"} & train
    assert BY_NAME["train"].code() != BY_NAME["evaluate"].code()
    assert BY_NAME["train"].code() == BY_NAME["train"].code()


def test_the_command_line_modules_do_not_import_each_other():
    assert "drcl.cli" not in modules_of("drcl.kfp.cli")


def test_every_package_is_installed():
    """pyproject.toml lists the packages (components/ and pipelines/ install under drcl)."""
    import tomllib

    src = ROOT / "src"
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    assert found | {"drcl.components", "drcl.pipelines"} == listed
