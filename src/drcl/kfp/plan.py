"""What each Kubeflow task is asked to compute: its step's view of the params and its code.

The pipeline takes params.yaml's groups as run arguments; `resolve` turns them into one view
per task (drcl.steps: exactly the keys the step reads, a training task's per-modality overrides
narrowed to its own modality) and the digest of the step's code in the image that runs it. A
task's inputs are then its view, its code and content hashes, so Kubeflow's cache key holds
what the task reads and nothing else.

`precision: auto` means what the node a task runs on makes of it: `resolve` settles it for the
tasks on CPU nodes, and `probe`, placed on a GPU node like the training tasks, for the tasks
that run there, before any of them is keyed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drcl.config import Params, parse_params
from drcl.steps import BY_NAME

CPU_STEPS = ("prepare", "evaluate", "promote")
GPU_STEPS = ("extract", "prior", "train", "tune")


def view(params: Params, step: str, *, precision: str | None = None,
         modality: str | None = None) -> dict[str, Any]:
    """One task's view and code: {"params": ..., "code": ...}."""
    found = BY_NAME[step]
    return {"params": found.view(params, precision=precision, modality=modality),
            "code": found.code()}


def cpu_views(params: Params, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The views of the tasks on CPU nodes, precision resolved here; prepare's data group is
    `data` (a DVC revision pinned to its commit)."""
    from drcl.resolved import resolve_runtime

    precision = resolve_runtime(params)["precision"]
    views = {step: view(params, step, precision=precision) for step in CPU_STEPS}
    views["prepare"]["params"]["data"] = dict(data)
    return views


def gpu_views(params: Params) -> dict[str, Any]:
    """The views of the tasks on GPU nodes, `precision` as given (the probe resolves it)."""
    modalities = params.data.modalities or []
    return {"extract": view(params, "extract"), "prior": view(params, "prior"),
            "train": {m: view(params, "train", modality=m) for m in modalities},
            "tune": view(params, "tune")}


def resolve_here(views: Mapping[str, Any]) -> dict[str, Any]:
    """`views` with each `precision` replaced by what it means on this machine."""
    from drcl.runtime import resolve_device, resolved_precision

    def one(task: Mapping[str, Any]) -> dict[str, Any]:
        p = dict(task["params"])
        if "precision" in p:
            p["precision"] = resolved_precision(
                p["precision"], resolve_device(p.get("device", "auto")))
        return {**task, "params": p}

    return {"extract": one(views["extract"]), "prior": one(views["prior"]),
            "train": {m: one(v) for m, v in views["train"].items()},
            "tune": one(views["tune"])}


def params_of(task: Mapping[str, Any], **more: Any) -> Params:
    """A task's view as validated Params (every key it does not read at its default), plus
    `more` groups that key nothing (tracking)."""
    return parse_params({**task["params"], **more}, source="pipeline arguments")
