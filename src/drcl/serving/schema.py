"""The request and response of a served set, defined once.

MLflow derives the model's signature from these types (`DrclModel.predict`'s type hints), the
scoring server validates requests against them, and `drcl search --format json` writes its
matches with the same `Match`. A request is a list of `Query`; `params` (`Params`) say what to
do: without a `database`, each query comes back embedded; with one, with its `top_k` matches.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
