"""Declarative schedules: one YAML file per recurring run in infra/schedules/, kept in git and
applied by `drcl pipeline reconcile`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drcl.atomic import atomic_path
from drcl.errors import DrclError

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?-]+$")


class ScheduleSpec(BaseModel):
    """A recurring run of the DRCL pipeline with params.yaml's values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    cron: Annotated[str, Field(min_length=1)]
    enabled: bool = True
    max_concurrency: Annotated[int, Field(ge=1)] = 1
    catchup: bool = False


def check_cron(expression: str, *, where: str = "--cron") -> str:
    """KFP's cron has six fields, seconds first; a five-field crontab line is the usual slip."""
    fields = expression.split()
    if len(fields) == 5:
        raise DrclError(f"{where}: {expression!r} has 5 fields; Kubeflow's cron has 6, seconds "
                        f"first (e.g. '0 {expression}')")
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise DrclError(f"{where}: {expression!r} is not a 6-field cron expression "
                        "(seconds minutes hours day-of-month month day-of-week)")
    return " ".join(fields)


def load_schedules(folder: str | Path) -> list[ScheduleSpec]:
    """Every ``*.yaml`` in ``folder``, validated; names must be unique."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DrclError(f"{folder}: schedules folder not found")
    specs: dict[str, ScheduleSpec] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        spec = _load(path)
        check_cron(spec.cron, where=f"{path}: cron")
        if spec.name in specs:
            raise DrclError(f"{path}: name: {spec.name!r} is declared twice")
        specs[spec.name] = spec
    return list(specs.values())


def _load(path: Path) -> ScheduleSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DrclError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return ScheduleSpec.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "file"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise DrclError(f"{path}: {loc}: {msg}") from None


def with_new_schedule(folder: str | Path, spec: ScheduleSpec) -> list[ScheduleSpec]:
    """The folder's schedules and ``spec``; a name declared already is refused (a schedule
    changes by editing its file)."""
    folder = Path(folder)
    declared = load_schedules(folder)
    if spec.name in {s.name for s in declared} or (folder / f"{spec.name}.yaml").exists():
        raise DrclError(f"{folder}: schedule {spec.name!r} is declared already; edit its file "
                        "and run `drcl pipeline reconcile`")
    return [*declared, spec]


def write_schedule(folder: str | Path, spec: ScheduleSpec) -> Path:
    """Write ``spec`` as a schedule file in ``folder`` and list it in the folder's
    kustomization, so that `reconcile`, by hand or from the CronJob, keeps its recurring run."""
    folder = Path(folder)
    path = folder / f"{spec.name}.yaml"
    kustomization = folder / "kustomization.yaml"
    listed = _with_file(kustomization, path.name) if kustomization.is_file() else None
    with atomic_path(path) as tmp:
        tmp.write_text(
            "# A recurring run of the DRCL pipeline with params.yaml's values, applied by\n"
            "# `drcl pipeline reconcile` (written by `drcl pipeline schedule`).\n"
            + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    if listed is not None:
        with atomic_path(kustomization) as tmp:
            tmp.write_text(listed)
    return path


def _with_file(kustomization: Path, name: str) -> str:
    """The kustomization's text with ``name`` added to the drcl-schedules ConfigMap's files."""
    text = kustomization.read_text()
    lines = text.splitlines(keepends=True)
    entries = [i for i, line in enumerate(lines) if re.match(r"\s+- \S+\.yaml\s*$", line)]
    if not entries:
        raise DrclError(f"{kustomization}: no schedule file listed under configMapGenerator "
                        f"files; add {name} there by hand")
    last = lines[entries[-1]]
    lines.insert(entries[-1] + 1, last[:len(last) - len(last.lstrip())] + f"- {name}\n")
    return "".join(lines)
