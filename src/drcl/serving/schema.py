"""The request and response of a served set, defined once.

MLflow derives the model's signature from these types (`DrclModel.predict`'s type hints), the
scoring server validates requests against them, and `drcl search --format json` writes its
matches with the same `Match`. A request is a list of `Query`; `params` (`Params`) say what to
do: without a `database`, each query comes back embedded; with one, with its `top_k` matches.
A deployment whose model config names `shards` searches a database by asking those deployments
(each holding one shard of it) and merging their answers (`drcl.serving.shards`); the two
params `expand` and `neighbours` and a query's `embedding` are the words of that exchange.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from drcl.config import one_line
from drcl.errors import DrclError


class Query(BaseModel):
    """One item: its features (the width the modality's encoder takes), a raw text when the
    modality's extractor is MiniLM, or its embedding in the set's common space (made by this
    set's encoder; a shard router sends queries so). `id` names it in the answer (default: its
    position)."""

    model_config = ConfigDict(extra="forbid")

    modality: str
    features: list[float] | None = None
    text: str | None = None
    embedding: list[float] | None = None
    id: str | None = None


class Match(BaseModel):
    """A database item found for a query, best first (rank 1)."""

    rank: int
    id: str
    score: float
    vector: list[float] | None = None  # the item's stored vector (params `neighbours`)

    @model_serializer(mode="wrap")
    def _shown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without(handler(self), "vector")


class Answer(BaseModel):
    """What came back for one query: its embedding, or its matches when a database was named."""

    query: str
    modality: str
    embedding: list[float] | None = None
    matches: list[Match] | None = None
    rerank: dict[str, float] | None = None  # the index's re-ranking setting (`neighbours`)
    built_by: str | None = None  # the sha256 of the weights that built the index (`neighbours`)

    @model_serializer(mode="wrap")
    def _shown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without(handler(self), "rerank", "built_by")


def _without(dumped: dict[str, Any], *keys: str) -> dict[str, Any]:
    """An answer as before the shard exchange: its words only where they were asked for."""
    for key in keys:
        if dumped.get(key) is None:
            dumped.pop(key, None)
    return dumped


# the request's params and their defaults; an empty `database` means: embed only. `expand`
# false skips the index's query expansion; `neighbours` true answers with the matches that
# expansion would use (the index's `qe_k`), their vectors, the index's setting and the checksum
# of the weights that built it instead
DEFAULT_PARAMS: dict[str, str | int | bool] = {"database": "", "top_k": 10, "expand": True,
                                               "neighbours": False}


class ServingConfig(BaseModel):
    """How a loaded model runs: the model config saved with a version, overridden by
    `model_config=` of `mlflow.pyfunc.load_model` or by the environment variable
    MLFLOW_PYFUNC_INFERENCE_CONFIG of `mlflow models serve` and `drcl serve`.

    `indexes` (index paths or URIs) and `index_root` (a folder or URI prefix) fix which indexes
    a request may name; with neither, index files under the server's working directory.
    `shards` (the base URLs of deployments of this same model, each serving one shard of every
    database under the same name) makes this deployment a router: it embeds the queries, asks
    every shard and merges by score, and holds no index itself."""

    model_config = ConfigDict(extra="forbid")

    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")] = "auto"
    precision: Literal["fp32", "tf32", "bf16", "auto"] = "auto"
    indexes: str | list[str] = Field(default_factory=list)
    index_root: str = ""
    max_index_mb: Annotated[float, Field(gt=0)] = 4096
    max_top_k: Annotated[int, Field(ge=1)] = 1000
    shards: list[Annotated[str, Field(pattern=r"^https?://")]] = Field(default_factory=list)
    shard_timeout_s: Annotated[float, Field(gt=0)] = 30

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
