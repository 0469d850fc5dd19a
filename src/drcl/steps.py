"""Every pipeline step, declared once.

A step is one library function. The `drcl` command, the DVC stage and the Kubeflow component of
the same name call it with validated Params and explicit inputs and outputs, read the params
keys listed here, and their results depend on the code of the step's module and everything it
imports. tests/pipeline/test_steps.py holds dvc.yaml (params and code deps), release/dvc.yaml,
the CLI, the components and README.md's stage table to these declarations, so none can drift.

A step's *view* of the params is the values of exactly its keys (with `precision` resolved to
the arithmetic a machine uses, and a per-modality step's per-modality overrides narrowed to its
own modality). A step's key is its view, the digest of its code and the content hashes of its
inputs: the identity DVC gives a stage, and the one a Kubeflow task is cached and reused by.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drcl.config import Params

_PER_MODALITY = {"data.modalities", "train.lr_per_modality", "train.per_modality",
                 "model.standardize_per_modality"}
"""Keys whose value a per-modality step narrows to its own modality."""


@dataclass(frozen=True)
class Step:
    """`module`.`function` is the step; `params` the params.yaml keys it reads; a
    `per_modality` step runs once per modality (one DVC stage and one task each)."""

    name: str
    module: str
    function: str
    params: tuple[str, ...]
    per_modality: bool = False

    @property
    def groups(self) -> tuple[str, ...]:
        """The top-level params groups behind `params`."""
        return tuple(dict.fromkeys(key.split(".")[0] for key in self.params))

    def view(self, params: Params, *, precision: str | None = None,
             modality: str | None = None) -> dict[str, Any]:
        """The values of this step's keys (nulls left out: they are the defaults); `precision`
        replaces the `precision` setting by what it resolved to where the step runs."""
        dumped = params.model_dump(mode="json", exclude_none=True)
        out: dict[str, Any] = {}
        for key in self.params:
            found, value = _get(dumped, key)
            if found:
                _put(out, key, value)
        if precision is not None and "precision" in self.params:
            out["precision"] = precision
        if modality is not None:
            for key in sorted(_PER_MODALITY):
                found, value = _get(out, key)
                if not found:
                    continue
                narrowed = [modality] if isinstance(value, list) else \
                    {m: v for m, v in value.items() if m == modality}
                _put(out, key, narrowed)
        return out

    def code(self) -> str:
        """The digest of the code this step runs (drcl.code_closure)."""
        from drcl.code_closure import code_digest

        return code_digest(self.module)

    def key(self, view: Mapping[str, Any], inputs: Mapping[str, str], *, code: str,
            modality: str | None = None, member: int | None = None) -> str:
        """A task's identity: its view, its code and its inputs' content hashes (and, for one
        member of a seed ensemble trained alone, which member)."""
        what = {"step": self.name, "modality": modality, "params": view, "code": code,
                "inputs": dict(sorted(inputs.items()))}
        if member is not None:
            what["member"] = member
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _get(tree: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _put(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


STEPS: tuple[Step, ...] = (
    # checks all of params.yaml and writes what `device` and `precision` resolve to here
    Step("resolve", "drcl.resolved", "resolve_runtime", ("device", "precision")),
    Step("extract", "drcl.extract.step", "extract_dataset",
         ("seed", "device", "precision", "data.split", "extract")),
    Step("prepare", "drcl.data.prepare", "prepare_dataset", ("seed", "data")),
    Step("prior", "drcl.stages.prior", "fit_prior",
         # the preprocessing probe trains on the RSC schedule: train.lr too; SPL uses the
         # label loss, and keeps posteriors for the cross-modal correction cost
         ("seed", "device", "precision", "model", "prior", "train.epochs", "train.batch_size",
          "train.lr", "train.lr_per_modality", "train.label_loss", "train.correction")),
    Step("train", "drcl.stages.train", "train_modality",
         ("seed", "device", "precision", "data.modalities", "model", "train"),
         per_modality=True),
    Step("evaluate", "drcl.stages.evaluate", "evaluate_encoders",
         ("device", "precision", "evaluate")),
    # the registry's side of the workflow: release/dvc.yaml's stage and `drcl add-modality`
    Step("promote", "drcl.promotion", "promote",
         ("device", "precision", "evaluate", "tracking", "registry", "promotion")),
    Step("add-modality", "drcl.promotion", "add_modality",
         ("seed", "device", "precision", "data.modalities", "model", "train", "evaluate",
          "tracking", "registry", "promotion"), per_modality=True),
    # no stage either: a validation search that leaves a params profile (tune/best.yaml)
    Step("tune", "drcl.tune", "tune",
         ("seed", "device", "precision", "data.modalities", "model", "train", "evaluate.k",
          "evaluate.query_chunk", "tune")),
)
BY_NAME = {step.name: step for step in STEPS}
