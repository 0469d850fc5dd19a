"""Every pipeline step, declared once.

A step is one library function. The `drcl` command, the DVC stage and the Kubeflow component of
the same name call it with validated Params and explicit inputs and outputs, read the params
keys listed here, and their results depend on the code of the step's module and everything it
imports. tests/pipeline/test_steps.py holds dvc.yaml (params and code deps), the CLI and the
components to these declarations, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """`module`.`function` is the step; `params` the params.yaml keys it reads."""

    name: str
    module: str
    function: str
    params: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """The top-level params groups behind `params` (what a component takes)."""
        return tuple(dict.fromkeys(key.split(".")[0] for key in self.params))


STEPS: tuple[Step, ...] = (
    Step("extract", "drcl.extract.step", "extract_dataset",
         ("seed", "device", "precision", "data.split", "extract")),
    Step("prepare", "drcl.data.prepare", "prepare_dataset", ("seed", "data")),
    Step("prior", "drcl.stages.prior", "fit_prior",
         # the preprocessing probe trains on the RSC schedule: train.lr too; SPL uses the
         # label loss, and keeps posteriors for the cross-modal correction cost
         ("seed", "device", "precision", "model", "prior", "train.epochs", "train.batch_size",
          "train.lr", "train.lr_per_modality", "train.label_loss", "train.correction")),
    Step("train", "drcl.stages.train", "train_modality",
         ("seed", "device", "precision", "data.modalities", "model", "train")),
    Step("evaluate", "drcl.stages.evaluate", "evaluate_encoders",
         ("device", "precision", "evaluate")),
)
BY_NAME = {step.name: step for step in STEPS}
