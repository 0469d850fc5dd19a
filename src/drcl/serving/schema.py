"""The request and response of a served set, defined once.

MLflow derives the model's signature from these types (`DrclModel.predict`'s type hints), the
scoring server validates requests against them, and `drcl search --format json` writes its
matches with the same `Match`. A request is a list of `Query`; `params` (`Params`) say what to
do: without a `database`, each query comes back embedded; with one, with its `top_k` matches.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drcl.config import one_line
from drcl.errors import DrclError


class Query(BaseModel):
    """One item: its features (the width the modality's encoder takes), or a raw text when the
    modality's extractor is MiniLM. `id` names it in the answer (default: its position)."""

    model_config = ConfigDict(extra="forbid")

    modality: str
    features: list[float] | None = None
    text: str | None = None
    id: str | None = None


class Match(BaseModel):
    """A database item found for a query, best first (rank 1)."""

    rank: int
    id: str
    score: float


class Answer(BaseModel):
    """What came back for one query: its embedding, or its matches when a database was named."""

    query: str
    modality: str
    embedding: list[float] | None = None
    matches: list[Match] | None = None


# the request's params and their defaults; an empty `database` means: embed only
DEFAULT_PARAMS: dict[str, str | int] = {"database": "", "top_k": 10}


class ServingConfig(BaseModel):
    """How a loaded model runs: the model config saved with a version, overridden by
    `model_config=` of `mlflow.pyfunc.load_model` or by the environment variable
    MLFLOW_PYFUNC_INFERENCE_CONFIG of `mlflow models serve` and `drcl serve`.

    `indexes` (index paths or URIs) and `index_root` (a folder or URI prefix) fix which indexes
    a request may name; with neither, index files under the server's working directory."""

    model_config = ConfigDict(extra="forbid")

    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")] = "auto"
    precision: Literal["fp32", "tf32", "bf16", "auto"] = "auto"
    indexes: str | list[str] = Field(default_factory=list)
    index_root: str = ""
    max_index_mb: Annotated[float, Field(gt=0)] = 4096
    max_top_k: Annotated[int, Field(ge=1)] = 1000

    def allowed_indexes(self) -> list[str]:
        return [self.indexes] if isinstance(self.indexes, str) else list(self.indexes)


def serving_config(raw: Any, *, source: str) -> ServingConfig:
    """Validate a model config; a bad one is one line naming `source` and the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DrclError(f"{source}: expected a JSON object of settings "
                        f"({', '.join(ServingConfig.model_fields)}), got {type(raw).__name__}")
    try:
        return ServingConfig.model_validate(raw)
    except ValidationError as exc:
        raise DrclError(one_line(source, exc)) from None
