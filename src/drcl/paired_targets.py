"""Instance-level targets for zero-shot retrieval on paired data: each item's own text.

Where items are paired with a text embedded by MiniLM (the class texts' space), an image can be
pulled towards its own text's embedding rather than towards its class's column: a target fixed
before training, so each encoder still trains alone.
"""

from __future__ import annotations

import numpy as np
import torch

from drcl.data.dataset import ModalityData
from drcl.data.zero_shot import training_view
from drcl.errors import DrclError
from drcl.train import ItemTargets


def paired_text_targets(data: ModalityData, text: ModalityData, *, projection: torch.Tensor,
                        prior: torch.Tensor) -> ItemTargets:
    """Per-item targets for `data`: the text of the same item id (a modality whose features are
    MiniLM embeddings, in the class texts' space) carried by P into the common space. The
    text's features are inputs, fixed before training, so each encoder still trains alone. An
    item without a text keeps its class's column (`prior`, seen classes) as its target."""
    if text.dim != projection.shape[1]:
        raise DrclError(f"paired text targets: modality {text.name!r} is {text.dim}-d, not in "
                        f"the {projection.shape[1]}-d class text space")
    data = training_view(data)
    out = {}
    for split in ("train", "val"):
        own, other = data.split(split), text.split(split)
        where = {item: row for row, item in enumerate(other.item_ids(split).tolist())}
        rows = np.asarray([where.get(item, -1) for item in own.item_ids(split).tolist()])
        found = torch.as_tensor(rows >= 0)
        vectors = torch.nn.functional.normalize(
            torch.as_tensor(other.features[np.maximum(rows, 0)]), dim=1) @ projection.T
        fallback = torch.as_tensor(own.labels) @ prior.T
        out[split] = torch.where(found[:, None], vectors, fallback).float()
    return ItemTargets(**out)
