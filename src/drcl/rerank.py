"""Re-ranking at search time: database-side augmentation (DBA) and alpha query expansion (aQE).

Both replace an embedding by a weighted mean of itself and its nearest database items, the
weights the cosine similarities raised to `alpha` (negative ones count as zero), then
normalised: DBA moves every database item towards its own neighbours (once, when an index is
built), aQE moves a query towards its first matches (at search time) and ranks again. Items of
one class in the common space pull together, so both sharpen class-level retrieval; with too
many neighbours they blur it. `k` counts the neighbours besides the item itself; 0 is off.

The settings are chosen on the validation split (`choose`), never on test, and travel with the
encoders they were chosen for.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from drcl.nearest import top_k

if TYPE_CHECKING:
    from drcl.config import Params

TAG = "drcl.rerank"  # a set's chosen setting (JSON), read by `drcl index`


@dataclass(frozen=True)
class Rerank:
    """One re-ranking setting; the default changes nothing."""

    dba_k: int = 0
    qe_k: int = 0
    alpha: float = 3.0

    @property
    def off(self) -> bool:
        return self.dba_k == 0 and self.qe_k == 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, object] | None) -> Rerank:
        """A recorded setting (an index's or a set's); none recorded is off."""
        raw = dict(raw or {})
        return cls(dba_k=int(float(str(raw.get("dba_k", 0)))),
                   qe_k=int(float(str(raw.get("qe_k", 0)))),
                   alpha=float(str(raw.get("alpha", 3.0))))

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Rerank:
        """A registered set's setting (tag `drcl.rerank`; sets promoted before it: off)."""
        return cls.from_dict(json.loads(tags[TAG]) if tags.get(TAG) else None)

    def describe(self) -> str:
        if self.off:
            return "off"
        parts = [f"DBA k={self.dba_k}" if self.dba_k else "", f"aQE k={self.qe_k}"
                 if self.qe_k else ""]
        return " + ".join(p for p in parts if p) + f" (alpha {self.alpha:g})"


def expand_with(items: torch.Tensor, scores: torch.Tensor, vectors: torch.Tensor,
                alpha: float) -> torch.Tensor:
    """normalise(item + sum_j max(s_j, 0)^alpha * vectors_j) for each row, given each row's
    neighbours' scores (n, k) and vectors (n, k, d)."""
    weights = scores.clamp(min=0).pow(alpha)
    return F.normalize(items + (weights.unsqueeze(-1) * vectors).sum(dim=1), dim=1)


def _weighted_mean(items: torch.Tensor, scores: torch.Tensor, neighbours: torch.Tensor,
                   database: torch.Tensor, alpha: float) -> torch.Tensor:
    return expand_with(items, scores, database[neighbours], alpha)


@torch.no_grad()
def augment_database(database: torch.Tensor, *, k: int, alpha: float,
                     max_block_elements: int = 2**24) -> torch.Tensor:
    """DBA: each database item as the weighted mean of itself and its k nearest other items.
    Neighbours are found in blocks (never the N x N similarity matrix)."""
    if k <= 0 or database.shape[0] < 2:
        return database
    database = F.normalize(database.float(), dim=1)
    k = min(k, database.shape[0] - 1)
    scores, found = top_k(database, database, k=k + 1, max_block_elements=max_block_elements,
                          desc="database-side augmentation")
    # drop each item itself (its own best match, unless an exact duplicate came first)
    own = found == torch.arange(database.shape[0]).unsqueeze(1)
    keep = ~own
    keep[:, -1] &= own.any(dim=1)  # no self among the k+1: drop the last, keep k
    scores = scores[keep].view(-1, k)
    found = found[keep].view(-1, k)
    return _weighted_mean(database, scores, found, database, alpha)


@torch.no_grad()
def expand_queries(queries: torch.Tensor, database: torch.Tensor, *, k: int, alpha: float,
                   max_block_elements: int = 2**24) -> torch.Tensor:
    """aQE: each query as the weighted mean of itself and its k best database matches."""
    if k <= 0 or database.shape[0] == 0:
        return queries
    queries = F.normalize(queries.float(), dim=1)
    scores, found = top_k(queries, database, k=min(k, database.shape[0]),
                          max_block_elements=max_block_elements)
    return _weighted_mean(queries, scores, found, database.float(), alpha)


def apply(queries: torch.Tensor, database: torch.Tensor,
          setting: Rerank) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and database as re-ranking sees them: the database augmented, then the queries
    expanded against it."""
    database = augment_database(database, k=setting.dba_k, alpha=setting.alpha)
    return expand_queries(queries, database, k=setting.qe_k, alpha=setting.alpha), database


def ranked(queries: torch.Tensor, database: torch.Tensor, setting: Rerank, *, k: int,
           device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top k of a database (already augmented, as an index holds it) for each query,
    expanded first; the scores are the expanded queries' cosines."""
    queries = expand_queries(queries, database, k=setting.qe_k, alpha=setting.alpha)
    return top_k(queries, database, k=k, device=device)


def candidates(dba_k: Sequence[int], qe_k: Sequence[int],
               alpha: Sequence[float]) -> list[Rerank]:
    """Every combination, off first; alpha varies only where something is on."""
    out = [Rerank(alpha=alpha[0])]
    for d, q, a in itertools.product(dba_k, qe_k, alpha):
        setting = Rerank(d, q, a)
        if not setting.off and setting not in out:
            out.append(setting)
    return out


def reranked_report(embeddings: Mapping[str, torch.Tensor | np.ndarray],
                    labels: Mapping[str, np.ndarray], setting: Rerank, *, k: int,
                    multi_label: bool, query_chunk: int = 1024,
                    device: torch.device | str | None = None,
                    ) -> dict[str, dict[str, float]]:
    """The direction report (MAP@all and MAP@k per direction) with `setting` applied: each
    modality's items augmented as a database once, each direction's queries expanded."""
    from drcl.metrics import evaluate_direction

    as_tensor = {m: torch.as_tensor(np.asarray(e, dtype=np.float32)) for m, e in
                 embeddings.items()}
    augmented = {m: augment_database(e, k=setting.dba_k, alpha=setting.alpha)
                 for m, e in as_tensor.items()}
    results = {}
    for q, d in ((q, d) for q in as_tensor for d in as_tensor if q != d):
        queries = expand_queries(as_tensor[q], augmented[d], k=setting.qe_k, alpha=setting.alpha)
        results[f"{q}->{d}"] = evaluate_direction(queries, labels[q], augmented[d], labels[d],
                                                  k=k, multi_label=multi_label,
                                                  query_chunk=query_chunk, device=device)
    tables: dict[str, dict[str, float]] = {}
    for name, value in (("map_all", lambda r: r.map_all), (f"map_at_{k}", lambda r: r.map_at_k)):
        values = {direction: value(res) for direction, res in results.items()}
        tables[name] = {"mean": sum(values.values()) / len(values), **values}
    return tables


def choose(embeddings: Mapping[str, torch.Tensor | np.ndarray], labels: Mapping[str, np.ndarray],
           settings: Sequence[Rerank], *, multi_label: bool, query_chunk: int = 1024,
           device: torch.device | str | None = None) -> tuple[Rerank, list[dict]]:
    """The setting with the best mean MAP@all over every direction on these (validation)
    items, and each setting's figure. A setting must beat the earlier ones strictly, so off
    (listed first) stays unless re-ranking helps."""
    best, best_map, table = settings[0], -1.0, []
    for setting in settings:
        report = reranked_report(embeddings, labels, setting, k=1, multi_label=multi_label,
                                 query_chunk=query_chunk, device=device)
        value = report["map_all"]["mean"]
        table.append({**setting.as_dict(), "map_all": value})
        if value > best_map:
            best, best_map = setting, value
    return best, table


def choose_for(params: Params, embeddings: Mapping[str, torch.Tensor | np.ndarray],
               labels: Mapping[str, np.ndarray], *, multi_label: bool,
               device: torch.device | str | None = None) -> tuple[Rerank, list[dict]]:
    """`choose` among the candidates of `evaluate.rerank` (validation items only)."""
    grid = params.evaluate.rerank
    return choose(embeddings, labels, candidates(grid.dba_k, grid.qe_k, grid.alpha),
                  multi_label=multi_label, query_chunk=params.evaluate.query_chunk,
                  device=device)
