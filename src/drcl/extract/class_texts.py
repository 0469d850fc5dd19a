"""Class texts embedded like item texts: MiniLM, cached by content (the semantic prior's input)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from drcl.errors import DrclError
from drcl.extract.cache import FeatureCache
from drcl.extract.extractors import MiniLM

TEXT_EXTRACTOR = "minilm"


def embed_class_texts(texts: list[str], *, device: str = "cpu",
                      cache_dir: str | Path | None = None) -> np.ndarray:
    """(C, 384) unit-length MiniLM embeddings of the class texts, from the feature cache where
    an earlier run computed them."""
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
