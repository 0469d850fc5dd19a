"""Class semantics for the semantic prior: every class, seen in training or not, gets a column.

A class's text (its name, or `data.class_text`'s description) is embedded with the offline MiniLM
extractor that `drcl extract` uses (drcl.extract.class_texts). A fixed isometry P (common_dim x
384, made from the seed) carries the text space into the common space, and W's column for class c
is P t_c. The map does not depend on which classes were seen, so a class added after training
gets its column from its text alone: no retraining. On paired data, an item's own text (through
the same P) can be its target instead of its class's column (drcl.paired_targets).
"""

from __future__ import annotations

import torch


def isometry(common_dim: int, text_dim: int, *, seed: int) -> torch.Tensor:
    """P (common_dim x text_dim) with orthonormal columns (orthonormal rows when common_dim is
    the smaller): inner products of class texts survive the move into the common space."""
    gen = torch.Generator().manual_seed(seed)
    gauss = torch.randn(max(common_dim, text_dim), min(common_dim, text_dim), generator=gen,
                        dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r))
    return (q if common_dim >= text_dim else q.T).float().contiguous()


def class_columns(class_embeddings: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """W's columns (common_dim x C): P t_c, scaled to unit length."""
    columns = projection @ class_embeddings.T.to(projection.dtype)
    return torch.nn.functional.normalize(columns, dim=0)

