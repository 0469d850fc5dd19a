"""Where each stage reads and writes, relative to the project root (what dvc.yaml declares)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    @property
    def data(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def prior(self) -> Path:
        return self.root / "models" / "prior.safetensors"

    @property
    def prior_metrics(self) -> Path:
        return self.root / "metrics" / "prior.json"

    @property
    def prior_plots(self) -> Path:
        return self.root / "plots" / "prior"

    def encoder(self, modality: str) -> Path:
        return self.root / "models" / "encoders" / f"{modality}.safetensors"

    def train_metrics(self, modality: str) -> Path:
        return self.root / "metrics" / "train" / f"{modality}.json"

    def train_history(self, modality: str) -> Path:
        return self.root / "plots" / "train" / f"{modality}.csv"

    def train_curve(self, modality: str) -> Path:
        return self.root / "plots" / "images" / f"train_{modality}.png"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "metrics" / "eval.json"

    @property
    def pr_curves(self) -> Path:
        return self.root / "plots" / "pr"

    @property
    def pr_image(self) -> Path:
        return self.root / "plots" / "images" / "pr_curves.png"
