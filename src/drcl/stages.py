"""One function per pipeline step: the CLI and the DVC stages are thin shells around these."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from drcl.atomic import atomic_path, write_csv, write_json
from drcl.config import Params, load_params
from drcl.data.dataset import Manifest, dataset_checksum, file_sha256, load_manifest, load_modality
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.metrics import direction_report
from drcl.model import embed, load_encoder, read_metadata, save_encoder
from drcl.plots import pr_curves_png, training_curve_png
from drcl.prior import PriorResult, select_prior
from drcl.prior_io import load_prior, prior_checksum, save_prior
from drcl.runtime import resolve_device
from drcl.tracking import stage_run
from drcl.train import TrainResult, train_encoder


def params_for_data(params_path: str | Path, layout: Layout) -> tuple[Params, Manifest]:
    """Load params.yaml with the checks that need the prepared data set's manifest."""
    manifest = load_manifest(layout.data)
    params = load_params(params_path, modalities=list(manifest.modalities),
                         num_classes=manifest.num_classes)
    return params, manifest


def fit_prior(params: Params, manifest: Manifest, layout: Layout) -> PriorResult:
    """Stage `prior`: SPL over every modality (or the orthogonal baseline); writes W and S_k."""
    device = resolve_device(params.device)
    modalities = [load_modality(layout.data, m) for m in manifest.modalities]
    with stage_run(params, "prior", layout=layout,
                   dataset_sha256=dataset_checksum(manifest)) as run:
        result = select_prior(modalities, num_classes=manifest.num_classes, params=params,
                              device=device)
        with atomic_path(layout.prior_plots) as tmp:
            tmp.mkdir()
            for name, cand in result.candidates.items():
                write_csv(tmp / f"{name}.csv", cand.history)
                run.log_history(cand.history, prefix=f"spl.{name}.")
        write_json(layout.prior_metrics, result.summary())
        save_prior(result.prior, layout.prior, method=result.method, chosen=result.chosen or "",
                   dataset=manifest.name)
        run.log_metrics({f"quality_score.{m}": s for m, s in result.summary()["scores"].items()})
        for name, cand in result.candidates.items():
            if cand.standardization is not None:
                run.log_metrics({f"{key}.{name}": value
                                 for key, value in cand.standardization.metrics().items()})
        run.set_tags({"drcl.prior_method": result.method,
                      "drcl.chosen_modality": result.chosen or "none",
                      "drcl.prior_sha256": prior_checksum(result.prior)})
        run.log_artifacts(layout.prior_metrics, layout.prior_plots)
    return result


def train_modality(params_path: str | Path, layout: Layout, *, modality: str,
                   prior_path: Path | None = None) -> TrainResult:
    """Stage `train@<modality>`: RSC for one modality against the frozen prior.

    Reads only the prior and this modality's own file, so DVC retrains a modality alone when
    only its data changes. `prior_path` replaces the pipeline's prior (adding a modality to the
    registry's champions trains against theirs).
    """
    data = load_modality(layout.data, modality, verify=False)
    params = load_params(params_path, num_classes=data.train.labels.shape[1])
    if params.data.modalities is not None and modality not in params.data.modalities:
        raise DrclError(f"--modality: {modality!r} is not in data.modalities "
                        f"({', '.join(params.data.modalities)})")
    prior, prior_meta = load_prior(prior_path or layout.prior)
    data_sha256 = file_sha256(layout.data / f"{modality}.npz")
    with stage_run(params, "train", layout=layout, modality=modality,
                   dataset_sha256=data_sha256) as run:
        result = train_encoder(data, prior, params=params, device=resolve_device(params.device))
        write_csv(layout.train_history(modality), result.history)
        training_curve_png(result.history, layout.train_curve(modality),
                           title=f"RSC training: {modality}", best_epoch=result.best_epoch)
        choice = result.standardization
        write_json(layout.train_metrics(modality),
                   {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                    "standardize": choice.as_dict()})
        save_encoder(result.encoder, layout.encoder(modality), prior_sha256=prior_checksum(prior),
                     dataset=prior_meta.get("dataset", ""),
                     standardize=json.dumps(choice.as_dict(), sort_keys=True))
        run.log_history(result.history)
        run.log_metrics({"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                         **choice.metrics()})
        run.set_tags({"drcl.prior_sha256": prior_checksum(prior),
                      "drcl.standardize": str(choice.standardize).lower(),
                      "drcl.standardize_how": choice.how})
        run.log_artifacts(layout.train_history(modality), layout.train_curve(modality),
                          layout.train_metrics(modality))
    return result


def evaluate_encoders(params: Params, manifest: Manifest, layout: Layout) -> dict:
    """Stage `evaluate`: MAP@all and MAP@k for every ordered pair of modalities on test data."""
    device = resolve_device(params.device)
    k = params.evaluate.k
    embeddings, labels, priors = {}, {}, {}
    for m in manifest.modalities:
        path = layout.encoder(m)
        encoder = load_encoder(path, device=device)
        priors[m] = read_metadata(path).get("prior_sha256")
        test = load_modality(layout.data, m).test
        embeddings[m] = embed(encoder, test.features, device=device)
        labels[m] = test.labels
    if len(set(priors.values())) != 1:
        raise DrclError(f"{layout.encoder(next(iter(priors)))}: encoders were trained against "
                        "different priors; retrain them against one prior")
    with stage_run(params, "evaluate", layout=layout,
                   dataset_sha256=dataset_checksum(manifest)) as run:
        report, results = direction_report(embeddings, labels, k=k,
                                           multi_label=manifest.multi_label,
                                           query_chunk=params.evaluate.query_chunk, device=device)
        curves = {direction: (res.recall, res.precision) for direction, res in results.items()}
        with atomic_path(layout.pr_curves) as tmp:
            tmp.mkdir()
            for direction, (recall, precision) in curves.items():
                q, d = direction.split("->")
                _write_pr_csv(tmp / f"{q}_to_{d}.csv", recall, precision)
        pr_curves_png(curves, layout.pr_image,
                      title=f"Precision-recall on {manifest.name} (test)")
        write_json(layout.eval_metrics, report)
        run.log_metrics({f"{name}.{direction}": value for name, table in report.items()
                         for direction, value in table.items()})
        run.set_tags({"drcl.prior_sha256": next(iter(priors.values()))})
        run.log_artifacts(layout.eval_metrics, layout.pr_curves, layout.pr_image)
    return report


def _write_pr_csv(path: Path, recall, precision) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["recall", "precision"])
        writer.writerows(zip(map(float, recall), map(float, precision), strict=True))
