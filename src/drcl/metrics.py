"""Retrieval metrics of one direction: MAP@all, MAP@k and the precision-recall curve.

The database is ranked for each query by cosine similarity. Queries go in blocks whose
similarity matrix holds at most ``max_block_elements`` entries, so memory stays bounded however
large the sets are; one integer sort per block serves every metric. Equal scores keep database
index order, so the results do not depend on the block size or the device.

Relevance is a shared label (label dot product > 0), the same rule for single- and multi-label
data. On multi-label data, queries with nothing relevant within the cut-off are left out of the
mean, as the DRCL authors' evaluation does; on single-label data they score 0 and count.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from drcl.errors import DrclError

ArrayLike = np.ndarray | torch.Tensor
_INT32_MIN = -(2**31)


@dataclass(frozen=True)
class DirectionMetrics:
    """The scores of one direction; ``k`` is the cut-off used (clamped to the database size)."""

    map_all: float
    map_at_k: float
    k: int
    ranks: np.ndarray
    recall: np.ndarray
    precision: np.ndarray


@dataclass(frozen=True)
class _BlockStats:
    """Per-query results of one block: AP sums and hit counts at the cut-offs."""

    gain_all: torch.Tensor  # (b,) float64: sum of precision@r over relevant r
    gain_k: torch.Tensor  # (b,) float64: the same within the top k
    hits_all: torch.Tensor  # (b,) int64: relevant items in the whole database
    hits_k: torch.Tensor  # (b,) int64: relevant items within the top k
    hits_at_ranks: torch.Tensor  # (b, P) int64: relevant items within the top r, per PR rank


class _Workspace:
    """Block-sized buffers that every block one thread ranks reuses.

    Allocating them afresh per block fragments the C heap: peak memory then grows with the
    number of blocks instead of staying at a few blocks' worth.
    """

    def __init__(self, rows: int, n_database: int, device: torch.device) -> None:
        self.scores = torch.empty(rows, n_database, device=device)
        self.order = torch.empty(rows, n_database, dtype=torch.int32, device=device)
        self.relevant = torch.empty(rows, n_database, dtype=torch.bool, device=device)
        self.keys = torch.empty(rows, n_database, dtype=torch.int64, device=device)
        self.index = torch.arange(n_database, dtype=torch.int64, device=device) << 1


def _score_order(scores: torch.Tensor, work: _Workspace) -> torch.Tensor:
    """Map float32 scores to int32s that sort ascending in descending score order."""
    bits = scores.view(torch.int32)
    order = torch.bitwise_right_shift(bits, 31, out=work.order[:scores.shape[0]])
    # >= 0 scores: ~bits; < 0 scores: bits with the sign cleared
    return order.bitwise_not_().bitwise_or_(_INT32_MIN).bitwise_xor_(bits)


def _sort_keys(order: torch.Tensor, relevant: torch.Tensor, work: _Workspace) -> torch.Tensor:
    """One int64 key per item whose ascending order is the ranking, relevance in the lowest bit.

    The high 32 bits are the score order (_score_order); the low 32 hold the database index
    (ties keep index order) and then the relevance bit. Sorting these plain integers is several
    times faster than an argsort of the scores, and the relevance needs no gather afterwards.
    Built in ``work``'s buffers, in place.
    """
    keys = work.keys[:order.shape[0]]
    keys.copy_(order)
    return keys.bitwise_left_shift_(32).bitwise_or_(work.index).bitwise_or_(relevant)


_TRIM_EVERY = 16
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc): the per-block arrays of relevant items
    vary in size, and without this the heap's holes make peak memory grow with the blocks."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _sort_rows(keys: torch.Tensor) -> torch.Tensor:
    """Sort each row in place: numpy's vectorised integer sort on CPU, torch's on GPUs."""
    if keys.device.type != "cpu":
        return torch.sort(keys, dim=1).values
    keys.numpy().sort(axis=1)
    return keys


def _rank_block(query: torch.Tensor, query_labels: torch.Tensor, database: torch.Tensor,
                database_labels: torch.Tensor, k: int, ranks: torch.Tensor,
                work: _Workspace | None = None) -> _BlockStats:
    """Rank the database for a block of (row-normalised) queries and gather the statistics.

    Only the relevant items of each ranked list are visited: their positions give the hit
    counts, the precision at every hit and the hits within each cut-off.
    """
    b, n = query.shape[0], database.shape[0]
    work = work or _Workspace(b, n, query.device)
    scores = torch.matmul(query, database.T, out=work.scores[:b])
    scores += 0.0  # turns -0.0 into +0.0, so the two zeros tie
    order = _score_order(scores, work)
    shared = torch.matmul(query_labels, database_labels.T, out=scores)  # scores are used up
    relevant = torch.gt(shared, 0, out=work.relevant[:b])
    keys = _sort_rows(_sort_keys(order, relevant, work))
    flat = keys.view(-1).bitwise_and_(1).nonzero().squeeze(1)
    row = flat // n
    position = flat - row * n + 1  # 1-based rank of each relevant item
    hits_all = torch.bincount(row, minlength=b)
    first = hits_all.cumsum(0) - hits_all
    hit = torch.arange(1, row.numel() + 1, device=row.device) - first[row]
    precision = hit.double() / position.double()
    top = position <= k
    zeros = torch.zeros(b, dtype=torch.float64, device=row.device)
    bucket = torch.searchsorted(ranks, position)  # the first PR rank that includes the item
    per_bucket = torch.bincount(row * len(ranks) + bucket, minlength=b * len(ranks))
    return _BlockStats(gain_all=zeros.index_add(0, row, precision),
                       gain_k=zeros.index_add(0, row[top], precision[top]),
                       hits_all=hits_all, hits_k=torch.bincount(row[top], minlength=b),
                       hits_at_ranks=per_bucket.view(b, len(ranks)).cumsum(1))


def _pr_ranks(n_database: int, points: int) -> np.ndarray:
    """Up to ``points`` evenly spaced, unique integer ranks from 1 to ``n_database``.

    Spaced from the top down so that the last rank is always ``n_database``, even for points=1.
    """
    return np.unique(np.rint(np.linspace(n_database, 1, points)).astype(np.int64))


def _as_matrix(name: str, x: ArrayLike, device: torch.device) -> torch.Tensor:
    """A float32 2-D tensor on ``device``; anything else is the caller's mistake."""
    t = torch.as_tensor(x).detach().to(device=device, dtype=torch.float32)
    if t.ndim != 2:
        raise DrclError(f"{name} must be 2-D (rows, columns), got shape {tuple(t.shape)}")
    return t


def _check_shapes(query: torch.Tensor, query_labels: torch.Tensor, database: torch.Tensor,
                  database_labels: torch.Tensor, k: int, points: int) -> None:
    """Raise a one-line DrclError naming the first argument that does not fit."""
    if query.shape[0] == 0:
        raise DrclError("query is empty: there is nothing to evaluate")
    if database.shape[0] == 0:
        raise DrclError("database is empty: there is nothing to retrieve")
    if query.shape[1] != database.shape[1]:
        raise DrclError(f"database has width {database.shape[1]} but query has width "
                        f"{query.shape[1]}; embed both in one common space")
    for name, labels, emb in (("query_labels", query_labels, query),
                              ("database_labels", database_labels, database)):
        if labels.shape[0] != emb.shape[0]:
            raise DrclError(f"{name} has {labels.shape[0]} rows but its embeddings have "
                            f"{emb.shape[0]}")
    if query_labels.shape[1] != database_labels.shape[1]:
        raise DrclError(f"database_labels has {database_labels.shape[1]} classes but "
                        f"query_labels has {query_labels.shape[1]}")
    if database.shape[0] >= 2**31:
        raise DrclError(f"database has {database.shape[0]} rows; at most 2**31 - 1 are supported")
    if k < 1:
        raise DrclError(f"k must be at least 1, got {k}")
    if points < 1:
        raise DrclError(f"points must be at least 1, got {points}")


def _mean_ap(gain: torch.Tensor, hits: torch.Tensor, multi_label: bool) -> float:
    """Mean AP over queries; multi-label drops queries without a hit, single-label counts 0."""
    ap = gain / hits.clamp_min(1)
    if not multi_label:
        return float(ap.mean())
    scored = hits > 0
    return float(ap[scored].mean()) if bool(scored.any()) else 0.0


@torch.no_grad()
def evaluate_direction(query: ArrayLike, query_labels: ArrayLike, database: ArrayLike,
                       database_labels: ArrayLike, *, k: int = 50, multi_label: bool = False,
                       points: int = 100, query_chunk: int = 1024,
                       max_block_elements: int = 2**20,
                       device: torch.device | str | None = None) -> DirectionMetrics:
    """MAP@all, MAP@k and the PR curve of queries against a database, from one ranking.

    ``device`` defaults to the device of ``query`` (cpu for numpy input). A block holds
    max(1, min(query_chunk, max_block_elements // n_database)) queries.
    """
    if device is None:
        device = query.device if isinstance(query, torch.Tensor) else "cpu"
    device = torch.device(device)
    q = _as_matrix("query", query, device)
    q_labels = _as_matrix("query_labels", query_labels, device)
    db = _as_matrix("database", database, device)
    db_labels = _as_matrix("database_labels", database_labels, device)
    _check_shapes(q, q_labels, db, db_labels, k, points)

    n_database = db.shape[0]
    k = min(k, n_database)
    ranks = _pr_ranks(n_database, points)
    ranks_t = torch.as_tensor(ranks, device=device)
    q, db = F.normalize(q, dim=1), F.normalize(db, dim=1)
    block = max(1, min(query_chunk, max_block_elements // n_database))
    starts = range(0, q.shape[0], block)

    local = threading.local()

    def rank(s: int) -> _BlockStats:
        if not hasattr(local, "work"):
            local.work, local.count = _Workspace(block, n_database, device), 0
        local.count += 1
        if local.count % _TRIM_EVERY == 0:
            _return_freed_memory()
        return _rank_block(q[s:s + block], q_labels[s:s + block], db, db_labels, k, ranks_t,
                           local.work)

    # numpy's sort is single-threaded: on CPU two blocks go at once (two blocks of memory)
    if device.type == "cpu" and len(starts) > 1 and torch.get_num_threads() > 1:
        with ThreadPoolExecutor(2) as pool:
            stats = list(pool.map(rank, starts))
    else:
        stats = [rank(s) for s in starts]

    hits_all = torch.cat([s.hits_all for s in stats])
    hits_at_ranks = torch.cat([s.hits_at_ranks for s in stats]).double()
    precision = (hits_at_ranks / ranks_t).mean(dim=0)
    recall = (hits_at_ranks / hits_all.clamp_min(1)[:, None]).mean(dim=0)
    return DirectionMetrics(
        map_all=_mean_ap(torch.cat([s.gain_all for s in stats]), hits_all, multi_label),
        map_at_k=_mean_ap(torch.cat([s.gain_k for s in stats]),
                          torch.cat([s.hits_k for s in stats]), multi_label),
        k=k, ranks=ranks, recall=recall.cpu().numpy(), precision=precision.cpu().numpy())


def mean_average_precision(query: ArrayLike, query_labels: ArrayLike, database: ArrayLike,
                           database_labels: ArrayLike, *, k: int | None = None,
                           multi_label: bool = False, query_chunk: int = 1024,
                           max_block_elements: int = 2**20,
                           device: torch.device | str | None = None) -> float:
    """MAP at cut-off ``k``; k=None means @all. The ranking of evaluate_direction, MAP alone."""
    cutoff = len(database) if k is None else k
    return evaluate_direction(query, query_labels, database, database_labels, k=cutoff,
                              multi_label=multi_label, points=1, query_chunk=query_chunk,
                              max_block_elements=max_block_elements, device=device).map_at_k


def direction_report(embeddings: Mapping[str, ArrayLike], labels: Mapping[str, ArrayLike], *,
                     k: int, multi_label: bool, query_chunk: int = 1024,
                     device: torch.device | str | None = None,
                     directions: Iterable[tuple[str, str]] | None = None,
                     ) -> tuple[dict[str, dict[str, float]], dict[str, DirectionMetrics]]:
    """MAP@all and MAP@k per direction 'q->d' (every ordered pair by default), the mean first.

    The one table that evaluation and promotion both read, so their figures always agree.
    """
    if directions is None:
        directions = [(q, d) for q in embeddings for d in embeddings if q != d]
    results = {f"{q}->{d}": evaluate_direction(embeddings[q], labels[q], embeddings[d], labels[d],
                                               k=k, multi_label=multi_label,
                                               query_chunk=query_chunk, device=device)
               for q, d in directions}
    tables: dict[str, dict[str, float]] = {}
    for name, value in (("map_all", lambda r: r.map_all), (f"map_at_{k}", lambda r: r.map_at_k)):
        values = {direction: value(res) for direction, res in results.items()}
        mean = sum(values.values()) / len(values) if values else 0.0
        tables[name] = {"mean": mean, **values}
    return tables, results
