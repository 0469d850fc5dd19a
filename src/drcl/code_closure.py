"""The code a step runs: its module and every drcl module it imports, transitively.

A step's result depends on this code and nothing else of drcl, so a Kubeflow task's key hashes
exactly these files (as dvc.yaml lists them as a stage's deps, checked by the tests): an edit
elsewhere in the package leaves the step's earlier results valid. Imports are read from the
sources (function-level imports included), never executed.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from importlib.util import find_spec
from pathlib import Path

_TOP = "drcl"
_BESIDE = ("drcl.components", "drcl.pipelines")
"""Packages installed from folders beside src/ (pyproject's package-dir)."""


@cache
def _root(package: str) -> Path | None:
    """The folder a drcl package's modules live in, found without importing it."""
    spec = find_spec(package)  # for drcl.components: imports the parent `drcl` only
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(module: str) -> Path | None:
    """The source file of a drcl module (a package's __init__.py), or None when none exists."""
    parts = module.split(".")
    if parts[0] != _TOP:
        return None
    base = next((b for b in _BESIDE if module == b or module.startswith(b + ".")), _TOP)
    root = _root(base)
    if root is None:
        return None
    path = root.joinpath(*parts[len(base.split(".")):])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(file: Path, package: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(_TOP)}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base.startswith(_TOP):
                found |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return {m for m in found if module_file(m) is not None}


def modules_of(*modules: str) -> set[str]:
    """The modules given, every drcl module they import, theirs, and their packages."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        file = module_file(name)
        if file is None:
            raise ValueError(f"{name}: not a drcl module")
        seen.add(name)
        package = name if file.name == "__init__.py" else name.rsplit(".", 1)[0]
        todo += _imports(file, package)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    return seen


@cache
def code_digest(*modules: str) -> str:
    """sha256 over the sources of `modules_of(modules)`, by module name and content: the same
    code gives the same digest wherever drcl is installed."""
    digest = hashlib.sha256()
    for name in sorted(modules_of(*modules)):
        digest.update(name.encode() + b"\0" + module_file(name).read_bytes() + b"\0")
    return digest.hexdigest()
