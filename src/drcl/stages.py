"""One function per pipeline step: the CLI and the DVC stages are thin shells around these."""

from __future__ import annotations

import csv
from pathlib import Path

from drcl.atomic import atomic_path, write_csv, write_json
from drcl.config import Params, load_params
from drcl.data.dataset import Manifest, load_manifest, load_modality
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.metrics import evaluate_direction
from drcl.model import embed, load_encoder, read_metadata, save_encoder
from drcl.plots import pr_curves_png, training_curve_png
from drcl.prior import PriorResult, select_prior
from drcl.prior_io import load_prior, prior_checksum, save_prior
from drcl.runtime import resolve_device
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
    result = select_prior(modalities, num_classes=manifest.num_classes, params=params,
                          device=device)
    with atomic_path(layout.prior_plots) as tmp:
        tmp.mkdir()
        for name, cand in result.candidates.items():
            write_csv(tmp / f"{name}.csv", cand.history)
    write_json(layout.prior_metrics, result.summary())
    save_prior(result.prior, layout.prior, method=result.method, chosen=result.chosen or "",
               dataset=manifest.name)
    return result


def train_modality(params_path: str | Path, layout: Layout, *, modality: str) -> TrainResult:
    """Stage `train@<modality>`: RSC for one modality against the frozen prior.

    Reads only the prior and this modality's own file, so DVC retrains a modality alone when
    only its data changes.
    """
    data = load_modality(layout.data, modality, verify=False)
    params = load_params(params_path, num_classes=data.train.labels.shape[1])
    if params.data.modalities is not None and modality not in params.data.modalities:
        raise DrclError(f"--modality: {modality!r} is not in data.modalities "
                        f"({', '.join(params.data.modalities)})")
    prior, prior_meta = load_prior(layout.prior)
    result = train_encoder(data, prior, params=params, device=resolve_device(params.device))
    write_csv(layout.train_history(modality), result.history)
    training_curve_png(result.history, layout.train_curve(modality),
                       title=f"RSC training: {modality}", best_epoch=result.best_epoch)
    write_json(layout.train_metrics(modality),
               {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss})
    save_encoder(result.encoder, layout.encoder(modality), prior_sha256=prior_checksum(prior),
                 dataset=prior_meta.get("dataset", ""))
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
    report: dict[str, dict[str, float]] = {"map_all": {}, f"map_at_{k}": {}}
    curves = {}
    for q in manifest.modalities:
        for d in manifest.modalities:
            if q == d:
                continue
            direction = f"{q}->{d}"
            res = evaluate_direction(embeddings[q], labels[q], embeddings[d], labels[d], k=k,
                                     multi_label=manifest.multi_label,
                                     query_chunk=params.evaluate.query_chunk, device=device)
            report["map_all"][direction] = res.map_all
            report[f"map_at_{k}"][direction] = res.map_at_k
            curves[direction] = (res.recall, res.precision)
    for table in report.values():
        values = list(table.values())
        table_mean = sum(values) / len(values) if values else 0.0
        items = list(table.items())
        table.clear()
        table["mean"] = table_mean
        table.update(items)
    with atomic_path(layout.pr_curves) as tmp:
        tmp.mkdir()
        for direction, (recall, precision) in curves.items():
            q, d = direction.split("->")
            _write_pr_csv(tmp / f"{q}_to_{d}.csv", recall, precision)
    pr_curves_png(curves, layout.pr_image, title=f"Precision-recall on {manifest.name} (test)")
    write_json(layout.eval_metrics, report)
    return report


def _write_pr_csv(path: Path, recall, precision) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["recall", "precision"])
        writer.writerows(zip(map(float, recall), map(float, precision), strict=True))
