"""dvc.yaml, the CLI and the Kubeflow components against the one declaration of each step
(drcl.steps): the same params, the same function, and DVC deps that cover every module a step
imports, so a code change never leaves a stage wrongly up to date."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

from drcl import components
from drcl.cli import app
from drcl.steps import STEPS, Step

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
TRACKING = "tracking"  # logging only: it changes no result, so DVC does not track it


def _file(module: str) -> Path | None:
    path = SRC.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(file: Path, package: str) -> set[str]:
    """drcl modules imported anywhere in a file, function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("drcl")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base.startswith("drcl"):
                found |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return {m for m in found if _file(m) is not None}


def code_of(module: str) -> set[Path]:
    """Every source file a module runs: its imports, theirs, and their packages' __init__."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        file = _file(name)
        package = name if file.name == "__init__.py" else name.rsplit(".", 1)[0]
        todo += _imports(file, package)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    return {_file(m).relative_to(ROOT) for m in seen}


def stage(step: Step) -> dict:
    found = DVC[step.name]
    return found["do"] if "foreach" in found else found


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_dvc_stage_reads_the_declared_params(step):
    assert sorted(stage(step)["params"]) == sorted(step.params)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_dvc_stage_depends_on_every_module_it_runs(step):
    deps = [Path(d) for d in stage(step)["deps"]]
    missing = sorted(str(f) for f in code_of(step.module)
                     if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"dvc.yaml: stage {step.name} misses code deps {missing}"


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_the_command_the_stage_runs_is_the_steps(step):
    cmd = stage(step)["cmd"]
    assert cmd.split()[:2] == ["drcl", step.name]
    assert step.name in {c.name or c.callback.__name__ for c in app.registered_commands}


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_the_component_takes_the_declared_groups_and_calls_the_step(step):
    func = getattr(components, step.name)
    groups = {p for p in inspect.signature(func).parameters
              if p in {"seed", "device", "precision", "data", "model", "prior", "train", "evaluate",
                       "extract", "tracking", "registry", "promotion"}}
    assert groups - {TRACKING} == set(step.groups), step.name
    source = inspect.getsource(func)
    assert f"from {step.module} import {step.function}" in source


def test_the_command_line_modules_do_not_import_each_other():
    kfp_cli = SRC / "drcl" / "kfp" / "cli.py"
    assert "drcl.cli" not in _imports(kfp_cli, "drcl.kfp")


def test_every_package_is_installed():
    """pyproject.toml lists the packages (components/ and pipelines/ install under drcl)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(SRC).parts) for p in SRC.rglob("__init__.py")}
    assert found | {"drcl.components", "drcl.pipelines"} == listed
