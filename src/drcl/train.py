"""Stage 2, RSC (Reversible Semantic Consistency): train one modality's encoder against a frozen W.

Labels are recast into the common space with W's pseudo-inverse (MRR), embeddings and labels are
mixed within the batch (FA), and the epoch with the lowest validation loss (no mixup) is kept.
Each modality trains alone: it needs only the prior and its own data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from drcl.batching import ordered_batches, progress, shuffled_batches, split_tensors
from drcl.config import Params
from drcl.correction import Corrected, Partners, correct_labels, trusted_mass
from drcl.data.dataset import ModalityData
from drcl.data.zero_shot import training_view
from drcl.errors import DrclError
from drcl.losses import label_q, rsc_loss
from drcl.metrics import mean_average_precision
from drcl.model import Encoder, EncoderSpec, adam, input_statistics
from drcl.runtime import compute_dtype, seed_everything, stage_seed
from drcl.standardization import StandardizeChoice, choose_standardization

_PARTS = ("loss", "label", "structure", "mse")


def prior_pseudo_inverse(prior: torch.Tensor) -> torch.Tensor:
    """W_pinv (C x d) with W_pinv W = I_C; computed once per training run."""
    return torch.linalg.pinv(prior.double()).float()


def mix(embeddings: torch.Tensor, labels: torch.Tensor, *, weight: float,
        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """FA: mix each row with a random partner of the batch; the mix is not re-normalised."""
    partner = torch.randperm(embeddings.shape[0], generator=generator).to(embeddings.device)
    return (weight * embeddings + (1 - weight) * embeddings[partner],
            weight * labels + (1 - weight) * labels[partner])


@dataclass
class TrainResult:
    """The selected encoder and the per-epoch record that chose it."""

    encoder: Encoder
    best_epoch: int
    best_val_loss: float
    standardization: StandardizeChoice
    best_score: float = float("-inf")
    history: list[dict[str, float]] = field(default_factory=list)


Observer = Callable[[int, Corrected], dict[str, float]]


@dataclass(frozen=True)
class ItemTargets:
    """Fixed common-space targets per training and validation item, in split order (for
    zero-shot retrieval: the item's paired text embedding through the semantic isometry).
    They replace the label targets in J_D and J_MSE; J_L still reads the labels."""

    train: torch.Tensor
    val: torch.Tensor


def target_kind(params: Params, prior_method: str) -> Literal["recast", "class"]:
    """`train.targets` resolved: `auto` pulls items to their class's column under a semantic
    prior (its columns are not orthogonal, and W_pinv's dual basis would leave the text
    space), and to the recast targets otherwise."""
    if params.train.targets != "auto":
        return params.train.targets
    return "class" if prior_method == "semantic" else "recast"


def target_matrix(prior: torch.Tensor, kind: str) -> torch.Tensor:
    """The C x d matrix that turns labels into targets: W_pinv (MRR) or W^T."""
    return prior_pseudo_inverse(prior) if kind == "recast" else prior.T.float().contiguous()


def train_encoder(data: ModalityData, prior: torch.Tensor, *, params: Params,
                  device: torch.device, observe: Observer | None = None,
                  partners: Partners | None = None,
                  targets: Literal["recast", "class"] = "recast",
                  item_targets: ItemTargets | None = None,
                  on_epoch: Callable[[int, float], None] | None = None,
                  standardization: StandardizeChoice | None = None) -> TrainResult:
    """RSC training of `data.name`'s encoder towards the targets of the frozen prior: recast
    by W's pseudo-inverse (MRR), or W's class columns themselves (`targets="class"`).

    With `train.correction`, each epoch after the warm-up trains on corrected labels
    (drcl.correction); `partners` are the other modalities' posteriors of the same items for
    its cross-modal cost. `observe(epoch, corrected)` may add figures to that epoch's record
    (the stage measures the corrected labels against clean ones there, when it has them).
    Classes held out for zero-shot retrieval never reach training (drcl.data.zero_shot).
    `on_epoch(epoch, val_target_map)` sees each epoch's validation curve (a tuning search
    prunes hopeless trials from it, by raising). `standardization` is the inputs' choice when
    the caller has made it already (it depends on shared settings only).
    """
    data = training_view(data)
    if prior.shape[1] != data.train.labels.shape[1]:
        raise DrclError(f"prior: W has {prior.shape[1]} classes but modality {data.name!r} "
                        f"has {data.train.labels.shape[1]} in training")
    cfg = params.train.for_modality(data.name)
    if cfg.correction.method != "none" and _multi_label(data):
        raise DrclError(f"train.correction.method: {cfg.correction.method} assigns one class "
                        f"per item; modality {data.name!r} is multi-label")
    choice = standardization or choose_standardization(data, params, device)  # before seeding
    seed = stage_seed(params.seed, "train", data.name)
    gen = seed_everything(seed)
    mix_rng = np.random.default_rng(seed)
    mean, std = input_statistics(data.train.features, standardize=choice.standardize)
    spec = EncoderSpec(modality=data.name, input_dim=data.dim,
                       hidden_dim=cfg.hidden_dim or params.model.hidden_dim,
                       common_dim=prior.shape[0])
    encoder = Encoder(spec, mean=mean, std=std,
                      compute_dtype=compute_dtype(params.precision, device)).to(device)
    optimizer = adam(encoder.parameters(), lr=cfg.lr)
    w = prior.to(device).float()
    w_pinv = target_matrix(prior, targets).to(device)
    x, y = split_tensors(data.train, device)
    xv, yv = split_tensors(data.val, device)
    num_classes = y.shape[1]
    t, tv = (None, None) if item_targets is None else (
        item_targets.train.to(device, y.dtype), item_targets.val.to(device, y.dtype))
    loss_args = dict(alpha=cfg.alpha, beta=cfg.beta, use_mrr=cfg.use_mrr,
                     mse_reduction=cfg.mse_reduction)

    result = TrainResult(encoder=encoder, best_epoch=0, best_val_loss=float("inf"),
                         standardization=choice)
    best_state = None
    for epoch in progress(range(1, cfg.epochs + 1), desc=f"RSC {data.name}", total=cfg.epochs):
        q = label_q(epoch, cfg.label_loss)
        rows, labels, corrected = None, y, None
        mass = trusted_mass(epoch, cfg.epochs, cfg.correction)
        if mass is not None:
            corrected = correct_labels(encoder, x, y, w, mass=mass, cfg=cfg.correction,
                                       batch_size=cfg.batch_size, partners=partners)
            if corrected.kept.any():  # a plan that keeps nothing leaves the given labels
                rows, labels = corrected.kept.nonzero().squeeze(1), corrected.labels
        encoder.train()
        # summed on the device and read once per epoch: no host sync inside the step loop
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        seen = x.shape[0] if rows is None else max(1, rows.numel())
        for idx in shuffled_batches(seen, cfg.batch_size, gen, device):
            if rows is not None:
                idx = rows[idx]
            f, lab = encoder(x[idx]), labels[idx]
            if t is not None:  # carried beside the labels, so mixup mixes them alike
                lab = torch.cat([lab, t[idx]], 1)
            if cfg.use_fa:
                g = cfg.mixup.g if cfg.mixup.kind == "fixed" else float(
                    mix_rng.beta(cfg.mixup.beta_a, cfg.mixup.beta_a))
                f, lab = mix(f, lab, weight=g, generator=gen)
            lab, tgt = lab[:, :num_classes], (lab[:, num_classes:] if t is not None else None)
            loss = rsc_loss(f, lab, w, w_pinv, q=q, targets=tgt, **loss_args)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            parts = torch.stack([loss.total, loss.label, loss.structure, loss.mse]).detach()
            sums += parts.double() * idx.numel()
        val_loss = validation_loss(encoder, xv, yv, w, w_pinv, q=q, batch_size=cfg.batch_size,
                                   item_targets=tv, **loss_args)
        means = (sums / seen).tolist()
        if not all(math.isfinite(v) for v in (*means, val_loss)):
            raise DrclError(f"train@{data.name}: the loss became NaN or infinite at epoch "
                            f"{epoch}; lower train.lr (or train.per_modality.{data.name}.lr) "
                            "or check the features")
        record = {"epoch": epoch, "q": q,
                  **{f"train_{k}": v for k, v in zip(_PARTS, means, strict=True)},
                  "val_loss": val_loss}
        if corrected is not None:
            record |= corrected.summary()
            if observe is not None:
                record |= observe(epoch, corrected)
        if cfg.selection == "target_map" or on_epoch is not None:
            record["val_target_map"] = target_map(encoder, xv, yv, w_pinv,
                                                  batch_size=cfg.batch_size)
        if on_epoch is not None:
            on_epoch(epoch, record["val_target_map"])
        result.history.append(record)
        if _better(record, result, cfg.selection):
            result.best_val_loss, result.best_epoch = val_loss, epoch
            result.best_score = record.get("val_target_map", -val_loss)
            best_state = copy.deepcopy(encoder.state_dict())
    if best_state is not None:
        encoder.load_state_dict(best_state)
    encoder.eval()
    return result


def _multi_label(data: ModalityData) -> bool:
    return bool((data.train.labels.sum(axis=1) != 1).any())


def _better(record: dict[str, float], best: TrainResult, selection: str) -> bool:
    """Validation loss (the authors' criterion) falls, or the target MAP rises."""
    if selection == "target_map":
        return record["val_target_map"] > best.best_score
    return record["val_loss"] < best.best_val_loss


@torch.no_grad()
def target_map(encoder: Encoder, x: torch.Tensor, y: torch.Tensor, prior_pinv: torch.Tensor, *,
               batch_size: int) -> float:
    """MAP of validation items retrieving their classes' recast targets (rows of W_pinv).

    Unlike the GCE validation loss, it does not drift as q grows, so it can tell epochs apart.
    """
    encoder.eval()
    embeddings = torch.cat([encoder(x[rows]) for rows in ordered_batches(x.shape[0], batch_size)])
    classes = torch.eye(prior_pinv.shape[0], device=prior_pinv.device)
    # multi_label=True leaves out items without any label; every other item has a hit at @all
    return mean_average_precision(embeddings, y, prior_pinv, classes, multi_label=True)


@torch.no_grad()
def validation_loss(encoder: Encoder, x: torch.Tensor, y: torch.Tensor, prior: torch.Tensor,
                    prior_pinv: torch.Tensor, *, q: float, batch_size: int,
                    item_targets: torch.Tensor | None = None, **loss_args) -> float:
    """The training objective without mixup, averaged over validation batches (bounded memory)."""
    encoder.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for rows in ordered_batches(x.shape[0], batch_size):
        loss = rsc_loss(encoder(x[rows]), y[rows], prior, prior_pinv, q=q,
                        targets=None if item_targets is None else item_targets[rows], **loss_args)
        total += loss.total.double() * (rows.stop - rows.start)
    return float(total) / x.shape[0]
