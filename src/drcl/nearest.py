"""Exact nearest neighbours by inner product, in blocks: never the whole score matrix.

The one ranking drcl search, the served model, re-ranking and the benchmarks share.
"""

from __future__ import annotations

import torch

from drcl.batching import progress


def _best_columns(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest scores of each row and their columns, ties going to the lower column;
    columns come back in ascending order. topk alone breaks ties arbitrarily."""
    if scores.shape[1] <= k:
        cols = torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
        return scores, cols
    values, cols = torch.topk(scores, k + 1, dim=1)
    if bool((values[:, k] < values[:, k - 1]).all()):  # no tie across the cut: the usual case
        cols = torch.sort(cols[:, :k], dim=1).values
        return scores.gather(1, cols), cols
    kth = values[:, k - 1:k]
    above = scores > kth
    tied = scores == kth
    take = above | (tied & (tied.cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))
    cols = take.nonzero()[:, 1].view(scores.shape[0], k)
    return scores.gather(1, cols), cols


@torch.no_grad()
def top_k(queries: torch.Tensor, database: torch.Tensor, *, k: int,
          device: torch.device | None = None,
          max_block_elements: int = 2**24,
          desc: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top k by inner product (cosine on unit rows): scores and database indices, best
    first, equal scores in database order. At most `max_block_elements` scores exist at once.
    With `desc`, a progress bar over the query blocks (on a terminal)."""
    device = device or queries.device
    n_db = database.shape[0]
    k = min(k, n_db)
    chunk = min(n_db, max(k, max_block_elements // 64))
    block = max(1, max_block_elements // chunk)
    if device.type == "cuda" and database.device != device:
        free, _ = torch.cuda.mem_get_info(device)
        if database.element_size() * database.nelement() < free // 2:
            database = database.to(device)  # fits: move it once rather than per block
    scores, indices = [], []
    starts = range(0, queries.shape[0], block)
    for qs in starts if desc is None else progress(starts, desc=desc):
        q = queries[qs:qs + block].to(device)
        best_s = torch.empty(q.shape[0], 0, device=device)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=device)
        for ds in range(0, n_db, chunk):
            chunk_s, cols = _best_columns(q @ database[ds:ds + chunk].to(device).T, k)
            # both parts are in database order, the kept ones first: so is their union
            merged_i = torch.cat([best_i, cols + ds], dim=1)
            best_s, cols = _best_columns(torch.cat([best_s, chunk_s], dim=1), k)
            best_i = merged_i.gather(1, cols)
        order = torch.sort(best_s, dim=1, descending=True, stable=True).indices
        scores.append(best_s.gather(1, order).cpu())
        indices.append(best_i.gather(1, order).cpu())
    return torch.cat(scores), torch.cat(indices)
