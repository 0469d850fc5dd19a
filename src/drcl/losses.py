"""The DRCL losses, written as the authors' code computes them.

Shapes: embeddings ``f`` (B, d), labels ``y`` (B, C), prior ``W`` (d, C), its pseudo-inverse
``W_pinv`` (C, d), recast targets ``t = y @ W_pinv`` (B, d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

_EPS_NORM = 1e-6


def gce_q(epoch: int) -> float:
    """GCE exponent q = min(1, 0.01 * epoch), epoch counted from 1 (q = 0 would be 0/0)."""
    if epoch < 1:
        raise ValueError(f"epoch is counted from 1, got {epoch}")
    return min(1.0, 0.01 * epoch)


def label_q(epoch: int, label_loss: Literal["gce", "ce"]) -> float:
    """The exponent of the label loss at `epoch`: GCE's schedule, or 0 (cross-entropy)."""
    return gce_q(epoch) if label_loss == "gce" else 0.0


def generalized_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, q: float) -> torch.Tensor:
    """J_L = mean_i (1 - s_i^q) / q with s_i the softmax mass on the (mixed) true classes; at
    q = 0 its limit, the cross-entropy mean_i -log s_i."""
    p = torch.softmax(logits, dim=1)
    s = (labels * p).sum(dim=1).clamp_min(1e-12)
    if q == 0:
        return -s.log().mean()
    return ((1.0 - s.pow(q)) / q).mean()


def pairwise_theta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """theta(A, B)_ij = 2 <a_i, b_j> / max(|a_i| |b_j|, 1e-6)."""
    norms = a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True).T
    return 2.0 * (a @ b.T) / norms.clamp_min(_EPS_NORM)


def structure_consistency(targets: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """J_D: embedding similarities match the targets'; target-to-embedding is symmetric."""
    gap = pairwise_theta(targets, targets) - pairwise_theta(embeddings, embeddings)
    match = gap.pow(2).mean()
    cross = pairwise_theta(targets, embeddings)
    symmetry = (cross - cross.T).pow(2).mean()
    return match + symmetry


def recast_mse(targets: torch.Tensor, embeddings: torch.Tensor,
               reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
    """J_MSE: mean over all B*d elements (authors' code), or a per-sample sum averaged over B."""
    sq = (targets - embeddings).pow(2)
    return sq.mean() if reduction == "mean" else sq.sum(dim=1).mean()


def recast_targets(labels: torch.Tensor, prior_pinv: torch.Tensor) -> torch.Tensor:
    """MRR: the common-space target of label rows, t = y W_pinv."""
    return labels @ prior_pinv


@dataclass(frozen=True)
class RscLoss:
    """J = J_L + alpha J_D + beta J_MSE, with its parts kept for logging."""

    total: torch.Tensor
    label: torch.Tensor
    structure: torch.Tensor
    mse: torch.Tensor


def rsc_loss(embeddings: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor,
             prior_pinv: torch.Tensor, *, q: float, alpha: float, beta: float, use_mrr: bool,
             mse_reduction: Literal["mean", "sum"],
             targets: torch.Tensor | None = None) -> RscLoss:
    """The RSC objective on (possibly mixed) embeddings and labels; `use_mrr=False` keeps J_L.
    `targets` (B, d), when given, replace the recast ones (per-item targets)."""
    label = generalized_cross_entropy(embeddings @ prior, labels, q)
    if not use_mrr:
        zero = label.new_zeros(())
        return RscLoss(total=label, label=label, structure=zero, mse=zero)
    if targets is None:
        targets = recast_targets(labels, prior_pinv)
    structure = structure_consistency(targets, embeddings)
    mse = recast_mse(targets, embeddings, mse_reduction)
    return RscLoss(total=label + alpha * structure + beta * mse, label=label,
                   structure=structure, mse=mse)
