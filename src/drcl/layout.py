"""Where each stage reads and writes, relative to the project root (what dvc.yaml declares)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drcl.data.dataset import ModalityData


@dataclass(frozen=True)
class Layout:
    """`root` holds the data set; `outputs` (default: `root`) the models, metrics and plots, so
    a candidate can be trained beside the workspace without touching its pipeline outputs."""

    root: Path = Path(".")
    outputs: Path | None = None

    @property
    def out(self) -> Path:
        return self.outputs if self.outputs is not None else self.root

    verify_data: bool = True
    """Check each modality file against the data set's manifest when it is read (a Kubeflow
    task's files are checked by content hash when they are fetched instead)."""

    @property
    def data(self) -> Path:
        return self.root / "data" / "prepared"

    def modality(self, name: str, splits: tuple[str, ...]) -> ModalityData:
        """One modality's `splits` of the prepared data set (the others come back empty)."""
        from drcl.data.dataset import load_modality

        return load_modality(self.data, name, verify=self.verify_data, splits=splits)

    @property
    def prior(self) -> Path:
        return self.out / "models" / "prior.safetensors"

    @property
    def posteriors(self) -> Path:
        """Each modality's SPL posteriors on its training items (train.correction.cost)."""
        return self.prior.with_name("posteriors.npz")

    @property
    def prior_metrics(self) -> Path:
        return self.out / "metrics" / "prior.json"

    @property
    def prior_plots(self) -> Path:
        return self.out / "plots" / "prior"

    @property
    def prior_image(self) -> Path:
        return self.out / "plots" / "images" / "prior_scores.png"

    def encoder(self, modality: str) -> Path:
        return self.out / "models" / "encoders" / f"{modality}.safetensors"

    def train_metrics(self, modality: str) -> Path:
        return self.out / "metrics" / "train" / f"{modality}.json"

    def train_history(self, modality: str) -> Path:
        return self.out / "plots" / "train" / f"{modality}.csv"

    def train_curve(self, modality: str) -> Path:
        return self.out / "plots" / "images" / f"train_{modality}.png"

    @property
    def eval_metrics(self) -> Path:
        return self.out / "metrics" / "eval.json"

    @property
    def pr_curves(self) -> Path:
        return self.out / "plots" / "pr"

    @property
    def pr_image(self) -> Path:
        return self.out / "plots" / "images" / "pr_curves.png"
