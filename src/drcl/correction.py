"""Label correction by partial optimal transport (`train.correction`), in the spirit of UOT-RCL.

Once per epoch after a warm-up on the given labels (networks fit clean labels before noisy
ones), the modality's training items are transported onto the classes: cost -log p(c | x) from
the encoder's posteriors under the frozen prior W, items of equal mass, classes with the given
labels' frequencies, and only a trusted share of the mass, which grows from
`mass_start` to `mass_end` over the remaining epochs. The items the plan carries (at least half
their mass) are the trusted ones; the rest leave that epoch's loss. `relabel: false` (default)
keeps a trusted item only when the plan puts it in its given class, so it selects; `relabel:
true` gives each trusted item the plan's class. The recast targets (MRR) follow the labels
used. Training of each modality stays independent: the cost uses its own posteriors only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drcl.batching import ordered_batches
from drcl.config import CorrectionParams
from drcl.model import Encoder
from drcl.transport import partial_transport


@dataclass(frozen=True)
class Corrected:
    """The labels an epoch trains on and which items it keeps."""

    labels: torch.Tensor  # (n, C) one-hot
    kept: torch.Tensor  # (n,) bool
    mass: float
    changed: float  # share of kept items whose label is not the given one

    def summary(self) -> dict[str, float]:
        return {"correction_mass": self.mass,
                "correction_kept": float(self.kept.float().mean()),
                "correction_changed": self.changed}


def trusted_mass(epoch: int, epochs: int, cfg: CorrectionParams) -> float | None:
    """The share transported at `epoch` (None during the warm-up: the given labels are used)."""
    if cfg.method == "none" or epoch <= cfg.warmup:
        return None
    span = max(1, epochs - cfg.warmup - 1)
    step = (epoch - cfg.warmup - 1) / span
    return cfg.mass_start + (cfg.mass_end - cfg.mass_start) * min(1.0, step)


@torch.no_grad()
def correct_labels(encoder: Encoder, x: torch.Tensor, given: torch.Tensor, prior: torch.Tensor,
                   *, mass: float, cfg: CorrectionParams, batch_size: int) -> Corrected:
    """This epoch's labels and kept items from the partial OT plan of the posteriors."""
    encoder.eval()
    logits = torch.cat([encoder(x[rows]) @ prior for rows in
                        ordered_batches(x.shape[0], batch_size)])
    cost = -torch.log_softmax(logits.float(), dim=1)
    n, num_classes = given.shape
    frequencies = given.sum(0).double() + 1e-9  # a class no item names keeps a sliver
    plan = partial_transport(cost, torch.full((n,), 1.0 / n, dtype=torch.float64,
                                              device=x.device),
                             frequencies / frequencies.sum(), mass=mass, eps=cfg.eps).plan
    transported = plan.sum(1) * n >= 0.5
    assigned = plan.argmax(1)
    given_class = given.argmax(1)
    if cfg.relabel:
        labels = torch.nn.functional.one_hot(assigned, num_classes).to(given.dtype)
        kept = transported
    else:
        labels = given
        kept = transported & (assigned == given_class)
    changed = ((assigned != given_class) & kept).sum() / kept.sum().clamp_min(1)
    return Corrected(labels=labels, kept=kept, mass=mass, changed=float(changed))
