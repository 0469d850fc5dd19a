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
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from drcl.errors import DrclError

ArrayLike = np.ndarray | torch.Tensor


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
        self.spare = torch.empty(rows, n_database, dtype=torch.int32, device=device)
        # int32 0/1 rather than bool: comparisons write it as fast, and it joins the keys faster
        self.relevant = torch.empty(rows, n_database, dtype=torch.int32, device=device)
        self.flags = np.empty(rows * n_database, dtype=np.bool_) if device.type == "cpu" else None
        # set once a block finds most of its rows tied: ties are then the rule at this size,
        # and ranking with the index in the key at once beats ranking most rows twice
        self.wide = False


def _sort_keys(scores: torch.Tensor, relevant: torch.Tensor, spare: torch.Tensor) -> torch.Tensor:
    """One int32 key per item, ascending in score order, with the relevance in the lowest bit.

    Cosines of unit vectors lie well inside (-2, 2), where a float32's bit pattern needs 31
    bits: positive x maps to 2 * bits(x), negative x to -2 * (bits(|x|) + 1), and the relevance
    fills the free bit. Equal scores therefore differ only in that bit. Sorting plain 32-bit
    integers is several times faster than an argsort of the scores, and the relevance needs no
    gather afterwards. Built in place over ``scores`` (which must hold no -0.0), ``spare`` is
    scratch.
    """
    bits = scores.view(torch.int32)
    flip = torch.bitwise_right_shift(bits, 31, out=spare)  # 0, or -1 for negative scores
    flip.bitwise_and_(-2).bitwise_or_(relevant)
    return bits.bitwise_left_shift_(1).bitwise_xor_(flip)


def _index_tiebreak(keys: torch.Tensor) -> torch.Tensor:
    """int64 keys that also order equal scores: database index descending, before relevance.

    Read from the end, as every ranking here is, that is the index order ascending.
    """
    n = keys.shape[1]
    reverse_index = torch.arange(n - 1, -1, -1, dtype=torch.int64, device=keys.device) << 1
    wide = keys.to(torch.int64)
    relevance = wide & 1
    wide.bitwise_right_shift_(1).bitwise_left_shift_(32)
    return wide.bitwise_or_(reverse_index).bitwise_or_(relevance)


_TRIM_EVERY = 16
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc): the per-block arrays of relevant items
    vary in size, and without this the heap's holes make peak memory grow with the blocks."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _sort_rows(keys: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending in place: numpy's vectorised integer sort on CPU, torch's on GPUs."""
    if keys.device.type != "cpu":
        return torch.sort(keys, dim=1).values
    keys.numpy().sort(axis=1)
    return keys


def _positions(flat: torch.Tensor, rows: int, relevant: int, n: int) -> torch.Tensor:
    """Each row's ascending positions (0 = worst) of its relevant items, from flat positions.

    Rows are sorted ascending, so the rank (1 = best) of position p is n - p, and the best
    relevant item is the row's last; keeping positions saves a flip of every row.
    """
    offsets = torch.arange(rows, device=flat.device) * n
    return flat.view(rows, relevant) - offsets[:, None]


def _relevant_positions(keys: torch.Tensor, flags: np.ndarray | None) -> torch.Tensor:
    """Flat positions of the relevant items (the lowest key bit) of sorted rows, in order.

    On CPU numpy reads the bit from each key's lowest byte into ``flags`` (a bool buffer of at
    least keys.numel()); its nonzero is several times faster than torch's.
    """
    if flags is None or keys.device.type != "cpu" or sys.byteorder != "little":
        return (keys.view(-1) & 1).nonzero().squeeze(1)
    lowest = keys.numpy().reshape(-1).view(np.uint8)[::keys.element_size()]
    bits = flags[:keys.numel()]
    np.bitwise_and(lowest, 1, out=bits.view(np.uint8))
    return torch.from_numpy(np.flatnonzero(bits))


def _tied(keys: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Per relevant item: does an irrelevant item have exactly its score?

    The 32-bit keys cannot order such a tie by database index (the irrelevant item sorts
    first), so its row must be ranked again; the tie shows as a predecessor one below. A row's
    first item is compared with the previous row's last: a rare false alarm that costs one
    exact re-ranking, never a wrong rank.
    """
    if keys.device.type == "cpu":  # numpy's take gathers about twice as fast
        flat_keys, positions = keys.numpy().reshape(-1), flat.numpy()
        before = np.take(flat_keys, np.maximum(positions - 1, 0))
        return torch.from_numpy(before == np.take(flat_keys, positions) - 1)
    flat_keys = keys.view(-1)
    return flat_keys[(flat - 1).clamp_min(0)] == flat_keys[flat] - 1


def _relevance(query_labels: torch.Tensor, database_labels: torch.Tensor,
               out: torch.Tensor | None = None,
               scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Which database items share a label with each query: class ids compare in one pass,
    multi-hot rows by their dot product (``scratch`` holds it)."""
    if query_labels.ndim == 1:
        return torch.eq(query_labels[:, None], database_labels[None, :], out=out)
    return torch.gt(torch.matmul(query_labels, database_labels.T, out=scratch), 0, out=out)


def _class_ids(query_labels: torch.Tensor,
               database_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ids when every label row is one-hot (relevance is then id equality), else as is."""
    def one_hot(labels: torch.Tensor) -> bool:
        return bool(((labels == 0) | (labels == 1)).all()) and bool((labels.sum(1) == 1).all())

    if one_hot(query_labels) and one_hot(database_labels):
        return query_labels.argmax(1), database_labels.argmax(1)
    return query_labels, database_labels


def _segment_stats(positions: torch.Tensor, n: int, k: int,
                   pr_ranks: torch.Tensor) -> _BlockStats:
    """Statistics of rows that have the same number of relevant items, from their positions.

    The j-th best relevant item sits in column R - j, so precision there is (R - col) / rank.
    Items within the top r are those at positions >= n - r, counted by a binary search.
    """
    rows, relevant = positions.shape
    hit = torch.arange(relevant, 0, -1, device=positions.device, dtype=torch.float64)
    precision = hit / (n - positions)
    gain_all = precision.sum(1)
    if k >= n:
        gain_k, hits_k = gain_all, torch.full((rows,), relevant, device=positions.device)
    else:  # the top k holds at most k relevant items: the rows' last k columns
        tail = positions[:, -k:] >= n - k
        gain_k, hits_k = (precision[:, -k:] * tail).sum(1), tail.sum(1)
    below = torch.searchsorted(positions, (n - pr_ranks).expand(rows, -1).contiguous())
    return _BlockStats(
        gain_all=gain_all, gain_k=gain_k,
        hits_all=torch.full((rows,), relevant, dtype=torch.int64, device=positions.device),
        hits_k=hits_k, hits_at_ranks=relevant - below)


def _rank_block(query: torch.Tensor, query_labels: torch.Tensor, database: torch.Tensor,
                database_labels: torch.Tensor, k: int, ranks: torch.Tensor,
                work: _Workspace | None = None) -> _BlockStats:
    """Rank the database for a block of (row-normalised) queries and gather the statistics.

    Only the relevant items of each ranked list are visited: their ranks give the hit counts,
    the precision at every hit and the hits within each cut-off. The block's rows are put in
    order of their number of relevant items, so each run of rows with the same number is a
    dense matrix of ranks. Rows where a relevant and an irrelevant item tie exactly are
    ranked again with the database index in the key.
    """
    b, n = query.shape[0], database.shape[0]
    work = work or _Workspace(b, n, query.device)
    relevant = _relevance(query_labels, database_labels, work.relevant[:b], work.scores[:b])
    if query_labels.ndim == 1:  # class ids: a query's relevant items are its class's
        counts = torch.bincount(database_labels, minlength=int(query_labels.max()) + 1)[
            query_labels]
    else:
        counts = torch.count_nonzero(relevant, dim=1)
    if bool((counts[1:] < counts[:-1]).any()):
        order = torch.argsort(counts, stable=True)
        query, query_labels, counts = query[order], query_labels[order], counts[order]
        relevant = _relevance(query_labels, database_labels, work.relevant[:b], work.scores[:b])
    scores = torch.matmul(query, database.T, out=work.scores[:b])
    scores += 0.0  # turns -0.0 into +0.0, so the two zeros tie
    keys = _sort_keys(scores, relevant, work.spare[:b])
    keys = _sort_rows(_index_tiebreak(keys) if work.wide else keys)
    flat = _relevant_positions(keys, work.flags)
    tied = torch.zeros_like(flat, dtype=torch.bool) if work.wide else _tied(keys, flat)
    tied_rows = 0
    parts, row0, start = [], 0, 0
    for count, rows in zip(*(t.tolist() for t in torch.unique_consecutive(
            counts, return_counts=True)), strict=True):
        end = start + rows * count
        positions = _positions(flat[start:end] - row0 * n, rows, count, n)
        again = tied[start:end].view(rows, count).any(1).nonzero().squeeze(1)
        tied_rows += again.numel()
        if again.numel():
            rows_again = row0 + again
            rescored = (query[rows_again] @ database.T) + 0.0
            rekeys = _sort_rows(_index_tiebreak(_sort_keys(
                rescored, relevant[rows_again], torch.empty_like(rescored, dtype=torch.int32))))
            positions[again] = _positions(_relevant_positions(rekeys, work.flags),
                                          again.numel(), count, n)
        parts.append(_segment_stats(positions, n, k, ranks))
        row0, start = row0 + rows, end
    work.wide = work.wide or tied_rows > b // 2
    return _BlockStats(*(torch.cat([getattr(p, f.name) for p in parts])
                         for f in fields(_BlockStats)))


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
    if not bool(torch.isfinite(t).all()):
        raise DrclError(f"{name} holds NaN or infinite values; expected finite numbers")
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
    q_labels, db_labels = _class_ids(q_labels, db_labels)
    if q_labels.ndim == 1:  # queries with equal numbers of relevant items side by side
        relevant = torch.bincount(db_labels, minlength=int(q_labels.max()) + 1)[q_labels]
        order = torch.argsort(relevant, stable=True)
        q, q_labels = q[order], q_labels[order]
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

    threads = torch.get_num_threads()
    if device.type == "cpu" and len(starts) > 1 and threads > 1:
        # numpy's sort is single-threaded: one block per thread at once (a block of memory
        # each), each block's torch operations on one thread so they do not oversubscribe
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                stats = list(pool.map(rank, starts))
        finally:
            torch.set_num_threads(threads)
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


def class_set_report(embeddings: Mapping[str, ArrayLike], labels: Mapping[str, ArrayLike],
                     classes: Sequence[int], *, k: int, multi_label: bool,
                     query_chunk: int = 1024, device: torch.device | str | None = None,
                     ) -> dict[str, dict[str, float]]:
    """direction_report's tables on the items whose labels all lie in `classes`, ranked among
    themselves with labels narrowed to those classes: zero-shot retrieval's unseen-class (or
    seen-class) test set."""
    from drcl.data.zero_shot import class_subset

    chosen = np.asarray(classes, dtype=np.int64)
    sub_embeddings, sub_labels = {}, {}
    for name in embeddings:
        rows, narrowed = class_subset(np.asarray(labels[name]), chosen)
        sub_embeddings[name] = torch.as_tensor(embeddings[name])[torch.as_tensor(rows)]
        sub_labels[name] = narrowed
    tables, _ = direction_report(sub_embeddings, sub_labels, k=k, multi_label=multi_label,
                                 query_chunk=query_chunk, device=device)
    return tables


def chance_map(query_labels: np.ndarray, database_labels: np.ndarray, *,
               query_chunk: int = 1024) -> float:
    """MAP@all of a ranking that knows nothing: the mean, over queries, of the share of the
    database relevant to each (sharing a label), which is what a random order's AP averages to
    as the database grows. The floor a model must beat when labels are too noisy for absolute
    thresholds. Chunked over queries: never a full query x database matrix."""
    database = np.asarray(database_labels, dtype=np.float32) > 0
    if database.shape[0] == 0 or len(query_labels) == 0:
        return 0.0
    shares = []
    for start in range(0, len(query_labels), query_chunk):
        block = np.asarray(query_labels[start:start + query_chunk], dtype=np.float32) > 0
        relevant = (block.astype(np.float32) @ database.T.astype(np.float32)) > 0
        shares.append(relevant.mean(axis=1))
    return float(np.concatenate(shares).mean())
