"""The single schema of params.yaml: every entry point loads this validated object.

Unknown keys, wrong types and out-of-range values are rejected with a message naming the key.
Checks that need the data (modality names, number of classes) run when the data set's manifest is
passed as validation context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from drcl.errors import DrclError

PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitRatios(_Strict):
    """Stratified split fractions for sources that come without their own split."""

    train: Annotated[float, Field(gt=0, lt=1)] = 0.6
    val: Annotated[float, Field(gt=0, lt=1)] = 0.2
    test: Annotated[float, Field(gt=0, lt=1)] = 0.2

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitRatios:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError("train + val + test must sum to 1")
        return self


class DataParams(_Strict):
    """Where the features come from (stage `prepare`).

    `modalities` picks which of the source's modalities to use (all when null); dvc.yaml's
    per-modality training stages are generated from this list.
    """

    source: Literal["uci_mfeat", "npz"] = "uci_mfeat"
    path: Path | None = None
    modalities: list[str] | None = None
    split: SplitRatios = SplitRatios()

    @model_validator(mode="after")
    def _path_when_needed(self) -> DataParams:
        if self.source == "npz" and self.path is None:
            raise ValueError("data.path is required when data.source is 'npz'")
        if self.modalities is not None and len(set(self.modalities)) != len(self.modalities):
            raise ValueError("data.modalities: each modality may appear once")
        return self


class ModelParams(_Strict):
    """Encoder shape, shared by every modality (only the input width differs)."""

    hidden_dim: Annotated[int, Field(ge=1)] = 1024
    common_dim: Annotated[int, Field(ge=1)] = 512
    standardize: bool = True


class PriorParams(_Strict):
    """Stage 1: how the class prior W is obtained."""

    method: Literal["spl", "orthogonal"] = "spl"
    spl_snapshot: Literal["best", "last"] = "best"
    lr: PositiveFloat = 5e-4


class MixupParams(_Strict):
    """Feature augmentation: a fixed mixing weight g, or g drawn from Beta(a, a) per batch."""

    kind: Literal["fixed", "beta"] = "fixed"
    g: Annotated[float, Field(ge=0, le=1)] = 0.9
    beta_a: PositiveFloat = 2.0


class TrainParams(_Strict):
    """Stage 2: RSC training of each modality's encoder (epochs and batch also drive SPL)."""

    epochs: Annotated[int, Field(ge=1)] = 60
    batch_size: Annotated[int, Field(ge=1)] = 256
    lr: PositiveFloat = 3e-4
    lr_per_modality: dict[str, PositiveFloat] = Field(default_factory=dict)
    alpha: Annotated[float, Field(ge=0)] = 0.1
    beta: Annotated[float, Field(ge=0)] = 0.1
    mixup: MixupParams = MixupParams()
    use_fa: bool = True
    use_mrr: bool = True
    mse_reduction: Literal["mean", "sum"] = "mean"

    def lr_for(self, modality: str) -> float:
        return self.lr_per_modality.get(modality, self.lr)


class EvaluateParams(_Strict):
    """Retrieval evaluation on the test split."""

    k: Annotated[int, Field(ge=1)] = 50
    query_chunk: Annotated[int, Field(ge=1)] = 1024


class Params(_Strict):
    """Everything in params.yaml."""

    seed: Annotated[int, Field(ge=0)] = 0
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")] = "auto"
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    prior: PriorParams = PriorParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    @model_validator(mode="after")
    def _fits_the_data(self, info: ValidationInfo) -> Params:
        ctx = info.context or {}
        modalities = ctx.get("modalities") or self.data.modalities
        if modalities is not None:
            for name in self.train.lr_per_modality:
                if name not in modalities:
                    raise ValueError(
                        f"train.lr_per_modality: unknown modality {name!r} "
                        f"(the data set has {', '.join(modalities)})"
                    )
        num_classes = ctx.get("num_classes")
        if num_classes is not None and self.model.common_dim < num_classes:
            raise ValueError(
                f"model.common_dim: {self.model.common_dim} is smaller than the number of "
                f"classes ({num_classes}); the prior W needs common_dim >= classes"
            )
        return self


def _one_line(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def parse_params(raw: object, *, source: str = "params.yaml",
                 modalities: list[str] | None = None,
                 num_classes: int | None = None) -> Params:
    """Validate a mapping; raise DrclError naming the offending key."""
    context = {"modalities": modalities, "num_classes": num_classes}
    try:
        return Params.model_validate(raw if raw is not None else {}, context=context)
    except ValidationError as exc:
        raise DrclError(_one_line(source, exc)) from None


def load_params(path: str | Path = "params.yaml", **context: object) -> Params:
    """Read and validate params.yaml (see parse_params for the data-dependent checks)."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DrclError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(raw, source=str(path), **context)  # type: ignore[arg-type]
