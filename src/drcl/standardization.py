"""Whether a modality's inputs are standardised, chosen on that modality's own data.

`model.standardize: auto` decides per modality with a probe: a narrow copy of the encoder
(hidden width at most PROBE_HIDDEN) is trained twice on the modality's training split, on the
same schedule as RSC (epochs, batch size, learning rate) and with the method's label loss J_L
against a random orthogonal prior, once on the features as given and once standardised. Each
validation item scores the average precision of its true classes among all class columns (the
per-item `target_map`). Standardisation is chosen only when its mean gain is at least MIN_Z
standard errors of the per-item differences; otherwise the features stay as given, which is what
the method's authors feed their encoders.

Nothing else is read: no test item and no other modality, so a modality's choice is the same
whichever modalities are trained beside it. Why a trained probe rather than a distance-based one
(nearest class mean, k-NN) is in benchmarks/quality/standardization.py and its results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from drcl.batching import ordered_batches, shuffled_batches
from drcl.config import Params
from drcl.data.dataset import ModalityData
from drcl.losses import gce_q, generalized_cross_entropy
from drcl.model import Encoder, EncoderSpec, adam, input_statistics
from drcl.runtime import compute_dtype, seed_everything, stage_seed

PROBE_HIDDEN = 256
"""Hidden width of the probe (the encoder's own when that is smaller)."""
PROBE_MAX_TRAIN = 4096
"""Training items the probe sees at most (a seeded subset), so large modalities stay cheap."""
MIN_Z = 2.0
"""Standardise when the mean per-item gain is at least this many standard errors."""


@dataclass(frozen=True)
class StandardizeChoice:
    """The decision for one modality and, when the probe made it, the evidence."""

    modality: str
    standardize: bool
    how: Literal["auto", "params"]
    raw_score: float | None = None
    standardized_score: float | None = None
    gain: float | None = None
    stderr: float | None = None

    def as_dict(self) -> dict[str, object]:
        """For metrics files, MLflow and the encoder's metadata."""
        out: dict[str, object] = {"standardize": self.standardize, "how": self.how}
        if self.how == "auto":
            out |= {"raw_score": self.raw_score, "standardized_score": self.standardized_score,
                    "gain": self.gain, "stderr": self.stderr, "min_z": MIN_Z}
        return out

    def metrics(self) -> dict[str, float]:
        """Numbers to log as MLflow metrics (prefix `standardize.`)."""
        values = {"standardize": float(self.standardize)}
        if self.how == "auto":
            values |= {"raw_score": float(self.raw_score or 0.0),
                       "standardized_score": float(self.standardized_score or 0.0),
                       "gain": float(self.gain or 0.0), "stderr": float(self.stderr or 0.0)}
        return {f"standardize.{k}": v for k, v in values.items()}


def choose_standardization(data: ModalityData, params: Params,
                           device: torch.device) -> StandardizeChoice:
    """The param's setting for `data.name`, or the probe's verdict when it is `auto`."""
    setting = params.model.standardize_for(data.name)
    if setting != "auto":
        return StandardizeChoice(data.name, bool(setting), "params")
    raw = probe_scores(data, params, device, standardize=False)
    standardized = probe_scores(data, params, device, standardize=True)
    gain, stderr = paired_gain(standardized, raw)
    return StandardizeChoice(
        data.name, standardize=gain > 0 and gain >= MIN_Z * stderr, how="auto",
        raw_score=float(raw.mean()) if raw.size else 0.0,
        standardized_score=float(standardized.mean()) if standardized.size else 0.0,
        gain=gain, stderr=stderr)


def paired_gain(new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """Mean of the per-item differences and its standard error (0, 0 without items)."""
    diff = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    if diff.size == 0:
        return 0.0, 0.0
    stderr = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()), stderr


def class_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: AP of its true classes when all classes are ranked by score (ties by class
    index). Rows without a label are dropped."""
    keep = labels.sum(dim=1) > 0
    scores, labels = scores[keep], labels[keep] > 0
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    relevant = labels.gather(1, order).double()
    ranks = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=torch.float64)
    precision = relevant.cumsum(dim=1) / ranks
    return (precision * relevant).sum(dim=1) / relevant.sum(dim=1)


def probe_scores(data: ModalityData, params: Params, device: torch.device, *,
                  standardize: bool) -> np.ndarray:
    """Train the probe on one variant of the inputs; per-item AP on the validation split."""
    from drcl.prior import orthogonal_init  # prior imports this module

    seed = stage_seed(params.seed, "standardize", data.name)
    rows = _subset(data.train.labels, seed)
    features, labels = data.train.features[rows], data.train.labels[rows]
    mean, std = input_statistics(features, standardize=standardize)
    gen = seed_everything(seed)  # the same initial weights and batches for both variants
    spec = EncoderSpec(modality=data.name, input_dim=data.dim,
                       hidden_dim=min(params.model.hidden_dim, PROBE_HIDDEN),
                       common_dim=params.model.common_dim)
    encoder = Encoder(spec, mean=mean, std=std,
                      compute_dtype=compute_dtype(params.precision, device)).to(device)
    prior = orthogonal_init(params.model.common_dim, labels.shape[1], seed=seed).to(device)
    optimizer = adam(encoder.parameters(), lr=params.train.lr_for(data.name))
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(labels, dtype=torch.float32, device=device)
    encoder.train()
    for epoch in range(1, params.train.epochs + 1):
        for idx in shuffled_batches(x.shape[0], params.train.batch_size, gen, device):
            loss = generalized_cross_entropy(encoder(x[idx]) @ prior, y[idx], gce_q(epoch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    encoder.eval()
    xv = torch.as_tensor(data.val.features, dtype=torch.float32, device=device)
    yv = torch.as_tensor(data.val.labels, dtype=torch.float32, device=device)
    with torch.no_grad():
        ap = [class_average_precision(encoder(xv[s]) @ prior, yv[s])
              for s in ordered_batches(xv.shape[0], 4096)]
    return torch.cat(ap).cpu().numpy()


def _subset(labels: np.ndarray, seed: int) -> np.ndarray:
    """All rows, or PROBE_MAX_TRAIN of them drawn without replacement (sorted)."""
    n = labels.shape[0]
    if n <= PROBE_MAX_TRAIN:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, PROBE_MAX_TRAIN, replace=False))
