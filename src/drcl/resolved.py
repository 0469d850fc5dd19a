"""What the settings mean on this machine, resolved before anything is keyed by them.

`precision: auto` is bf16 on one machine and float32 on another, so a result keyed by the word
`auto` could stand for arithmetic it was not made with. The `resolve` step (the first DVC stage,
and the first Kubeflow tasks) checks all of params.yaml and writes the arithmetic actually used
to `resolved.yaml`; the stages that compute take `precision` from there, so dvc.lock records
`bf16`, `tf32` or `fp32`, and a machine that resolves `auto` differently reruns them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from drcl.atomic import write_text
from drcl.config import Params

RESOLVED_FILE = "resolved.yaml"
_HEADER = ("# Written by `drcl resolve` (the first stage of dvc.yaml): what params.yaml's device\n"
           "# and precision settings resolve to on the machine that ran the pipeline. The\n"
           "# stages that compute read `precision` from here, so DVC keys them by the arithmetic\n"
           "# actually used. Do not edit: it is rewritten on every `dvc repro`.\n")


def resolve_runtime(params: Params) -> dict[str, str]:
    """The device `device` names here, and the arithmetic `precision` gives on it."""
    from drcl.runtime import resolve_device, resolved_precision

    device = resolve_device(params.device)
    return {"device": str(device), "precision": resolved_precision(params.precision, device)}


def write_resolved(params: Params, root: Path = Path(".")) -> dict[str, str]:
    """Resolve and write `resolved.yaml` (atomically; unchanged bytes when nothing changed)."""
    resolved = resolve_runtime(params)
    write_text(root / RESOLVED_FILE, _HEADER + yaml.safe_dump(resolved, sort_keys=True))
    return resolved
