"""Class semantics for the semantic prior: every class, seen in training or not, gets a column.

A class's text (its name, or `data.class_text`'s description) is embedded with the offline MiniLM
extractor that `drcl extract` uses, cached like item features. A fixed isometry P (common_dim x
384, made from the seed) carries the text space into the common space, and W's column for class c
is P t_c. The map does not depend on which classes were seen, so a class added after training
gets its column from its text alone: no retraining.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from drcl.errors import DrclError

TEXT_EXTRACTOR = "minilm"


def embed_class_texts(texts: list[str], *, device: str = "cpu",
                      cache_dir: str | Path | None = None) -> np.ndarray:
    """(C, 384) unit-length MiniLM embeddings of the class texts, from the feature cache where
    an earlier run computed them."""
    from drcl.extract.cache import FeatureCache
    from drcl.extract.extractors import MiniLM

    blank = [i for i, text in enumerate(texts) if not text.strip()]
    if blank:
        raise DrclError(f"class {blank[0]} has an empty text; give it a name or a "
                        "data.class_text description")
    extractor = MiniLM(batch_size=64, device=device)
    cache = FeatureCache(cache_dir, extractor.fingerprint)
    digests = [hashlib.sha256(text.strip().encode("utf-8")).hexdigest() for text in texts]
    found = [cache.get(d) for d in digests]
    missing = [i for i, vector in enumerate(found) if vector is None]
    if missing:
        computed = extractor.embed([texts[i].strip() for i in missing])
        for i, vector in zip(missing, computed, strict=True):
            cache.put(digests[i], vector)
            found[i] = vector
    return np.stack(found).astype(np.float32)


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
