"""Seed ensembles: K encoders of one modality, trained against one prior from different seeds,
embed as the normalised mean of their unit embeddings.

Members differ only in their initialisation and batch order, so their errors are partly
independent and the mean is closer to the class direction than any one of them; the prior, and
so the common space, is shared, which is what makes the mean meaningful.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def member_seed(seed: int, member: int) -> int:
    """Member 0 trains with the run's seed itself (an ensemble of one is the plain run); the
    others with seeds drawn from (seed, member), so nearby seeds share no member."""
    if member == 0:
        return seed
    digest = hashlib.sha256(f"drcl-ensemble/{seed}/{member}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def mean_embedding(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """The members' unit embeddings of the same items, averaged and normalised."""
    if not embeddings:
        raise ValueError("an ensemble needs at least one member")
    stacked = torch.stack([F.normalize(e.float(), dim=-1) for e in embeddings])
    return F.normalize(stacked.mean(dim=0), dim=-1)
