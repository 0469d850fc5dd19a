"""Step `train@<modality>`: RSC for one modality against the frozen prior."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from drcl.atomic import output_set, write_csv, write_json
from drcl.config import Params, for_data
from drcl.correction import Corrected, Partners, load_posteriors, partners_of
from drcl.data.dataset import ModalityData, file_sha256, load_modality
from drcl.data.noise import clean_labels
from drcl.data.zero_shot import training_view
from drcl.ensemble import member_seed
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.model import Ensemble, save_encoder
from drcl.plots import training_curve_png
from drcl.prior_io import load_prior, prior_checksum
from drcl.runtime import resolve_device, resolved_precision
from drcl.standardization import choose_standardization
from drcl.tracking import stage_run
from drcl.train import Observer, TrainResult, target_kind, train_encoder


def train_modality(params: Params, layout: Layout, *, modality: str,
                   prior_path: Path | None = None, member: int | None = None) -> TrainResult:
    """Train `modality`'s encoder (every member of its seed ensemble, as one file); write it,
    its metrics and its training curves.

    Reads only the prior and this modality's own file, so DVC retrains a modality alone when
    only its data changes. `prior_path` replaces the pipeline's prior (adding a modality to the
    registry's champions trains against theirs). `member` trains that member of the ensemble
    alone (a Kubeflow task of the modality x member fan-out; drcl.ensemble.pack joins them).
    """
    data = load_modality(layout.data, modality, verify=False, splits=("train", "val"))
    params = for_data(params, num_classes=training_view(data).train.labels.shape[1])
    if params.data.modalities is not None and modality not in params.data.modalities:
        raise DrclError(f"--modality: {modality!r} is not in data.modalities "
                        f"({', '.join(params.data.modalities)})")
    prior, prior_meta = load_prior(prior_path or layout.prior)
    data_sha256 = file_sha256(layout.data / f"{modality}.npz")
    with stage_run(params, "train", layout=layout, modality=modality,
                   dataset_sha256=data_sha256) as run:
        device = resolve_device(params.device)
        precision = resolved_precision(params.precision, device)
        members = fit_members(params, layout, data, prior, prior_meta, device,
                              None if member is None else [member])
        result = members[0]
        choice = result.standardization
        encoder = result.encoder if len(members) == 1 else Ensemble([r.encoder for r in members])
        with output_set(layout.out) as out:  # the curve, metrics and weights land together
            write_csv(out.path(layout.train_history(modality)), result.history)
            training_curve_png(result.history, out.path(layout.train_curve(modality)),
                               title=f"RSC training: {modality}", best_epoch=result.best_epoch)
            write_json(out.path(layout.train_metrics(modality)),
                       {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                        "standardize": choice.as_dict(), "precision": precision}
                       | _ensemble_record(members))
            save_encoder(encoder, out.path(layout.encoder(modality)),
                         prior_sha256=prior_checksum(prior),
                         dataset=prior_meta.get("dataset", ""),
                         standardize=json.dumps(choice.as_dict(), sort_keys=True),
                         precision=precision)
        run.log_history(result.history)
        run.log_metrics({"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                         **choice.metrics()})
        run.set_tags({"drcl.prior_sha256": prior_checksum(prior),
                      "drcl.standardize": str(choice.standardize).lower(),
                      "drcl.standardize_how": choice.how, "drcl.precision": precision})
        run.log_artifacts(layout.train_history(modality), layout.train_curve(modality),
                          layout.train_metrics(modality))
    return result


def fit_members(params: Params, layout: Layout, data: ModalityData, prior: torch.Tensor,
                prior_meta: dict[str, str], device: torch.device,
                members: Sequence[int] | None = None) -> list[TrainResult]:
    """The `train.ensemble` encoders of a modality (or the `members` listed): member 0 with
    the run's seed (the plain run), the others with their own (drcl.ensemble.member_seed),
    all with the input standardisation member 0 chooses. The curves and metrics written are
    the first member's."""
    size = params.train.for_modality(data.name).ensemble
    wanted = list(range(size)) if members is None else list(members)
    bad = [j for j in wanted if not 0 <= j < size]
    if bad:
        raise DrclError(f"member {bad[0]}: train.ensemble for {data.name!r} is {size}; "
                        f"members are 0 to {size - 1}")
    choice, results = None, []
    for j in wanted:
        if j > 0 and choice is None:  # member 0's choice, made as member 0 makes it
            choice = choose_standardization(training_view(data), params, device)
        run = params if j == 0 else params.model_copy(update={
            "seed": member_seed(params.seed, j)})
        result = fit_encoder(run, layout, data, prior, prior_meta, device,
                             standardization=choice)
        choice = choice or result.standardization
        results.append(result)
    return results


def _ensemble_record(members: list[TrainResult]) -> dict:
    if len(members) == 1:
        return {}
    return {"ensemble": [{"best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss}
                         for r in members]}


def fit_encoder(params: Params, layout: Layout, data: ModalityData, prior: torch.Tensor,
                prior_meta: dict[str, str], device: torch.device, **options) -> TrainResult:
    """The encoder the stage trains, in memory: the one training call that `drcl train` and
    `drcl tune`'s trials share (`options` go to train_encoder)."""
    return train_encoder(data, prior, params=params, device=device,
                         observe=_label_accuracy(layout, data.name, device),
                         partners=_partners(params, layout, data, device),
                         targets=target_kind(params, prior_meta.get("method", "spl")), **options)


def _label_accuracy(layout: Layout, modality: str, device) -> Observer | None:
    """Where the data set was made noisy on purpose (data.noise), how right the corrected
    labels are: measured for the record only, never fed back into training."""
    clean = clean_labels(layout.data, modality)
    if clean is None:
        return None
    truth = torch.as_tensor(clean["train"]).argmax(1).to(device)

    def observe(epoch: int, corrected: Corrected) -> dict[str, float]:
        used = corrected.labels.argmax(1)
        kept = corrected.kept
        return {"correction_label_accuracy":
                float((used[kept] == truth[kept]).float().mean()) if kept.any() else 0.0}

    return observe


def _partners(params: Params, layout: Layout, data, device) -> Partners | None:
    """The other modalities' SPL posteriors of this modality's items (cross-modal cost)."""
    correction = params.train.correction
    if correction.method == "none" or correction.cost != "cross_modal":
        return None
    found = load_posteriors(layout.posteriors)
    if data.name not in found or len(found) < 2:
        raise DrclError(f"train.correction.cost: cross_modal needs every modality's SPL "
                        f"posteriors in {layout.posteriors}, which has "
                        f"{', '.join(found) or 'none'}: it needs prior.method spl, and "
                        "`drcl prior` run with this correction setting")
    return partners_of(found, data.name, data.train.item_ids("train"), device)
