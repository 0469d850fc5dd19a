"""Stage 1, SPL (Selective Prior Learning): a candidate prior per modality; the best is kept.

Every modality starts from the same random orthogonal W0; its encoder and its copy of W are
trained together on the GCE label loss; the candidate's quality score is the mean softmax mass on
the true classes over its training set (or its validation set, `prior.score_split: val`). The
baseline (`orthogonal`, as in SDML) uses W0 itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from drcl.batching import ordered_batches, progress, shuffled_batches, split_tensors
from drcl.config import Params
from drcl.data.dataset import ModalityData
from drcl.data.zero_shot import seen_classes, training_view
from drcl.errors import DrclError
from drcl.losses import generalized_cross_entropy, label_q
from drcl.model import Encoder, EncoderSpec, adam, input_statistics
from drcl.runtime import compute_dtype, seed_everything, stage_seed
from drcl.semantics import class_columns, isometry
from drcl.standardization import StandardizeChoice, choose_standardization


def orthogonal_init(common_dim: int, num_classes: int, *, seed: int) -> torch.Tensor:
    """W0: the first C columns of a random d x d orthogonal matrix made from the seed."""
    if common_dim < num_classes:
        raise DrclError(f"model.common_dim: {common_dim} < number of classes {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    gauss = torch.randn(common_dim, common_dim, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r))
    return q[:, :num_classes].float().contiguous()


@torch.no_grad()
def quality_score(encoder: Encoder, prior: torch.Tensor, features: torch.Tensor,
                  labels: torch.Tensor, *, batch_size: int) -> float:
    """S = mean_i sum_c y_ic softmax(f_i W)_c: how much probability lands on the true classes."""
    encoder.eval()
    total = torch.zeros((), dtype=torch.float64, device=features.device)
    for rows in ordered_batches(features.shape[0], batch_size):
        p = torch.softmax(encoder(features[rows]) @ prior, dim=1)
        total += (labels[rows] * p).sum().double()
    return float(total) / features.shape[0]


@torch.no_grad()
def posteriors(encoder: Encoder, prior: torch.Tensor, features: torch.Tensor, *,
               batch_size: int) -> np.ndarray:
    """softmax(f(x) W) of every row, float32 on the host."""
    encoder.eval()
    out = torch.cat([torch.softmax((encoder(features[rows]) @ prior).float(), dim=1)
                     for rows in ordered_batches(features.shape[0], batch_size)])
    return out.cpu().numpy()


@dataclass
class Candidate:
    """One modality's candidate prior and how it scored, epoch by epoch."""

    modality: str
    best_score: float
    best_epoch: int
    prior_best: torch.Tensor
    prior_last: torch.Tensor
    standardization: StandardizeChoice | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    posteriors: np.ndarray | None = None
    """p(c | x) of the training items at epoch train.correction.warmup, kept when the
    cross-modal correction cost will blend them in (ids: `ids`)."""
    ids: np.ndarray | None = None

    def prior(self, snapshot: str) -> torch.Tensor:
        return self.prior_best if snapshot == "best" else self.prior_last


def learn_candidate(data: ModalityData, initial_prior: torch.Tensor, *, params: Params,
                    device: torch.device) -> Candidate:
    """Train a fresh encoder and a trainable copy of W0 on J_L; score W after every epoch."""
    data = training_view(data)
    choice = choose_standardization(data, params, device)  # before seeding: training unchanged
    gen = seed_everything(stage_seed(params.seed, "prior", data.name))
    mean, std = input_statistics(data.train.features, standardize=choice.standardize)
    spec = EncoderSpec(modality=data.name, input_dim=data.dim,
                       hidden_dim=params.model.hidden_dim, common_dim=params.model.common_dim)
    encoder = Encoder(spec, mean=mean, std=std,
                      compute_dtype=compute_dtype(params.precision, device)).to(device)
    prior = torch.nn.Parameter(initial_prior.clone().to(device))
    optimizer = adam([*encoder.parameters(), prior], lr=params.prior.lr)
    x, y = split_tensors(data.train, device)
    xs, ys = (x, y) if params.prior.score_split == "train" else split_tensors(data.val, device)
    correction = params.train.correction
    wants_posteriors = correction.method != "none" and correction.cost == "cross_modal"
    batch = params.train.batch_size
    best = Candidate(modality=data.name, best_score=-1.0, best_epoch=0,
                     prior_best=prior.detach().clone(), prior_last=prior.detach().clone(),
                     standardization=choice)
    for epoch in progress(range(1, params.train.epochs + 1), desc=f"SPL {data.name}",
                          total=params.train.epochs):
        q = label_q(epoch, params.train.label_loss)
        encoder.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for idx in shuffled_batches(x.shape[0], batch, gen, device):
            loss = generalized_cross_entropy(encoder(x[idx]) @ prior, y[idx], q)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * idx.numel()  # no host sync per step
        score = quality_score(encoder, prior.detach(), xs, ys, batch_size=batch)
        loss = float(loss_sum) / x.shape[0]
        if not (math.isfinite(loss) and math.isfinite(score)):
            raise DrclError(f"prior: SPL on {data.name} became NaN or infinite at epoch "
                            f"{epoch}; lower prior.lr or check the features")
        best.history.append({"epoch": epoch, "loss": loss, "score": score})
        if wants_posteriors and epoch == min(params.train.correction.warmup,
                                             params.train.epochs):
            best.posteriors = posteriors(encoder, prior.detach(), x, batch_size=batch)
            best.ids = data.train.item_ids("train")
        if score > best.best_score:
            best.best_score, best.best_epoch = score, epoch
            best.prior_best = prior.detach().clone()
    best.prior_last = prior.detach().clone()
    return best


@dataclass(frozen=True)
class ClassSemantics:
    """Every class's text and its (C, 384) MiniLM embedding (drcl.semantics)."""

    texts: list[str]
    embeddings: torch.Tensor


@dataclass(frozen=True)
class PriorResult:
    """The frozen prior W (d x C_seen) and how it was chosen; `classes` are the class ids of
    its columns (all classes unless some were held out for zero-shot retrieval)."""

    prior: torch.Tensor
    method: str
    chosen: str | None
    candidates: dict[str, Candidate]
    classes: np.ndarray
    projection: torch.Tensor | None = None
    """The semantic prior's isometry P: a class's column is P t_c (drcl.semantics)."""
    semantics: ClassSemantics | None = None

    def summary(self) -> dict:
        return {
            "method": self.method,
            "chosen": self.chosen,
            "scores": {m: c.best_score for m, c in self.candidates.items()},
            "best_epoch": {m: c.best_epoch for m, c in self.candidates.items()},
            "standardize": {m: c.standardization.as_dict()
                            for m, c in self.candidates.items() if c.standardization},
        }


def select_prior(modalities: list[ModalityData], *, num_classes: int, params: Params,
                 device: torch.device, semantics: ClassSemantics | None = None) -> PriorResult:
    """SPL: the candidate W of the modality with the highest quality score (or W0 for the
    orthogonal baseline, or the class texts' columns for the semantic prior). W covers the
    seen classes; held-out classes never reach it."""
    seen = seen_classes(num_classes, modalities[0].unseen if modalities else ())
    modalities = [training_view(m) for m in modalities]
    if params.prior.method == "semantic":
        if semantics is None or semantics.embeddings.shape[0] != num_classes:
            raise DrclError("prior.method: semantic needs an embedded text for each of the "
                            f"{num_classes} classes")
        projection = isometry(params.model.common_dim, semantics.embeddings.shape[1],
                              seed=params.seed)
        prior = class_columns(semantics.embeddings[torch.as_tensor(seen)], projection)
        return PriorResult(prior=prior, method="semantic", chosen=None, candidates={},
                           classes=seen, projection=projection, semantics=semantics)
    w0 = orthogonal_init(params.model.common_dim, seen.size, seed=params.seed)
    if params.prior.method == "orthogonal":
        return PriorResult(prior=w0, method="orthogonal", chosen=None, candidates={},
                           classes=seen)
    if not modalities:
        raise DrclError("prior: SPL needs at least one modality")
    candidates = {m.name: learn_candidate(m, w0, params=params, device=device) for m in modalities}
    winner = max(candidates.values(), key=lambda c: c.best_score)
    return PriorResult(prior=winner.prior(params.prior.spl_snapshot).cpu(), method="spl",
                       chosen=winner.modality, candidates=candidates, classes=seen)
