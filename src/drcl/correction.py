"""Label correction by partial optimal transport (`train.correction`), in the spirit of UOT-RCL.

Once per epoch after a warm-up on the given labels (networks fit clean labels before noisy
ones), the modality's training items are transported onto the classes: cost -log p(c | x) from
the encoder's posteriors under the frozen prior W, items of equal mass, classes with the given
labels' frequencies, and only a trusted share of the mass, which grows from
`mass_start` to `mass_end` over the remaining epochs. The items the plan carries (at least half
their mass) are the trusted ones; the rest leave that epoch's loss. `relabel: false` (default)
keeps a trusted item only when the plan puts it in its given class, so it selects; `relabel:
true` gives each trusted item the plan's class. The recast targets (MRR) follow the labels
used.

`cost: own` uses the modality's own posteriors. `cost: cross_modal` (paired data) averages them
with the other modalities' posteriors of the same item, so the other views can outvote one
corrupted label; those come from the SPL stage, which trains a classifier per modality anyway,
taken at its epoch `warmup` (before a network memorises noisy labels) and saved beside the prior
(`models/posteriors.npz`). Each modality's RSC still trains alone, on its own file and that one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drcl.array_files import load_npz
from drcl.atomic import atomic_path
from drcl.batching import ordered_batches
from drcl.config import CorrectionParams
from drcl.errors import DrclError
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


@dataclass(frozen=True)
class Partners:
    """For each training item of one modality: the sum of the other modalities' posteriors of
    the same item (C columns) and how many there are (0: the item has no partner)."""

    total: torch.Tensor  # (n, C)
    count: torch.Tensor  # (n,)

    def blend(self, own: torch.Tensor) -> torch.Tensor:
        return (own + self.total) / (1.0 + self.count)[:, None]


def partners_of(posteriors: Mapping[str, tuple[np.ndarray, np.ndarray]], modality: str,
                ids: np.ndarray, device: torch.device) -> Partners:
    """The other modalities' posteriors of each of `modality`'s items, matched by item id."""
    row = {item: i for i, item in enumerate(ids.tolist())}
    num_classes = next(iter(posteriors.values()))[1].shape[1]
    total = np.zeros((len(ids), num_classes), dtype=np.float64)
    count = np.zeros(len(ids), dtype=np.float64)
    for other, (other_ids, probs) in posteriors.items():
        if other == modality:
            continue
        mine = [(row[item], j) for j, item in enumerate(other_ids.tolist()) if item in row]
        if mine:
            at, source = (np.asarray(x) for x in zip(*mine, strict=True))
            total[at] += probs[source]
            count[at] += 1
    return Partners(torch.as_tensor(total, dtype=torch.float32, device=device),
                    torch.as_tensor(count, dtype=torch.float32, device=device))


def save_posteriors(path: Path, posteriors: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """`<modality>.ids` and `<modality>.posteriors` per modality (none unless the cross-modal
    cost asked for them), atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **{f"{m}.{k}": v for m, (ids, probs) in posteriors.items()
                        for k, v in (("ids", np.asarray(ids, dtype=np.str_)),
                                     ("posteriors", probs))})


def load_posteriors(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names, arrays = load_npz(path, what="the prior stage's posteriors")
    modalities = sorted({n.rsplit(".", 1)[0] for n in names})
    try:
        return {m: (arrays[f"{m}.ids"].astype(np.str_), arrays[f"{m}.posteriors"])
                for m in modalities}
    except KeyError as exc:
        raise DrclError(f"{path}: {exc.args[0]!r} missing; run `drcl prior` again") from None


@torch.no_grad()
def correct_labels(encoder: Encoder, x: torch.Tensor, given: torch.Tensor, prior: torch.Tensor,
                   *, mass: float, cfg: CorrectionParams, batch_size: int,
                   partners: Partners | None = None) -> Corrected:
    """This epoch's labels and kept items from the partial OT plan of the posteriors."""
    encoder.eval()
    logits = torch.cat([encoder(x[rows]) @ prior for rows in
                        ordered_batches(x.shape[0], batch_size)])
    probabilities = torch.softmax(logits.float(), dim=1)
    if partners is not None:
        probabilities = partners.blend(probabilities)
    cost = -probabilities.clamp_min(1e-12).log()
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
