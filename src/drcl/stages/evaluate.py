"""Step `evaluate`: every ordered pair of modalities ranked on the test split, plain and, when
`evaluate.rerank` has candidates, with the re-ranking chosen on the validation split."""

from __future__ import annotations

import csv
from pathlib import Path

from drcl.atomic import output_set, write_json
from drcl.config import Params
from drcl.data.dataset import dataset_checksum, load_manifest
from drcl.data.zero_shot import seen_classes
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.metrics import class_set_report, direction_report
from drcl.model import embed, load_encoder, read_metadata
from drcl.plots import pr_curves_png
from drcl.report import flatten
from drcl.rerank import choose_for, reranked_report
from drcl.runtime import compute_dtype, resolve_device, resolved_precision
from drcl.tracking import stage_run


def evaluation_splits(params: Params) -> tuple[str, ...]:
    """The splits evaluate reads: test, and validation to choose a re-ranking on."""
    return ("val", "test") if params.evaluate.rerank.enabled else ("test",)


def evaluate_encoders(params: Params, layout: Layout) -> dict:
    """MAP@all and MAP@k of every ordered pair of modalities on the test split; writes the
    report, the precision-recall curves and their picture. With classes held out of training
    the report also has `unseen` (the zero-shot figure) and `seen`: the same tables on the
    test items of those classes only, ranked among themselves."""
    manifest = load_manifest(layout.data)
    device = resolve_device(params.device)
    dtype = compute_dtype(params.precision, device)
    k = params.evaluate.k
    splits = evaluation_splits(params)
    embeddings, labels, priors, val_embeddings, val_labels = {}, {}, {}, {}, {}
    for m in manifest.modalities:
        path = layout.encoder(m)
        encoder = load_encoder(path, device=device, compute_dtype=dtype)
        priors[m] = read_metadata(path).get("prior_sha256")
        data = layout.modality(m, splits)
        embeddings[m] = embed(encoder, data.test.features, device=device)
        labels[m] = data.test.labels
        if "val" in splits:
            val_embeddings[m] = embed(encoder, data.val.features, device=device)
            val_labels[m] = data.val.labels
    if len(set(priors.values())) != 1:
        raise DrclError(f"{layout.encoder(next(iter(priors)))}: encoders were trained against "
                        "different priors; retrain them against one prior")
    with stage_run(params, "evaluate", layout=layout, dataset_sha256=dataset_checksum(manifest),
                   data_source=manifest.source) as run:
        report, results = direction_report(embeddings, labels, k=k,
                                           multi_label=manifest.multi_label,
                                           query_chunk=params.evaluate.query_chunk, device=device)
        if manifest.unseen_classes:  # zero-shot: each test set apart, besides all classes
            unseen = manifest.unseen_ids
            sets = {"unseen": unseen, "seen": seen_classes(manifest.num_classes, unseen)}
            report |= {name: class_set_report(embeddings, labels, classes, k=k,
                                              multi_label=manifest.multi_label,
                                              query_chunk=params.evaluate.query_chunk,
                                              device=device)
                       for name, classes in sets.items()}
        if val_embeddings:  # chosen on validation, then measured on test
            setting, table = choose_for(params, val_embeddings, val_labels,
                                        multi_label=manifest.multi_label, device=device)
            report["rerank"] = {**setting.as_dict(), "val_map_all": max(r["map_all"]
                                                                        for r in table),
                                "val_map_all_off": table[0]["map_all"]}
            report["reranked"] = reranked_report(embeddings, labels, setting, k=k,
                                                 multi_label=manifest.multi_label,
                                                 query_chunk=params.evaluate.query_chunk,
                                                 device=device)
        curves = {direction: (res.recall, res.precision) for direction, res in results.items()}
        with output_set(layout.out) as out:  # the curves and the report land together
            folder = out.path(layout.pr_curves)
            folder.mkdir()
            for direction, (recall, precision) in curves.items():
                q, d = direction.split("->")
                _write_pr_csv(folder / f"{q}_to_{d}.csv", recall, precision)
            pr_curves_png(curves, out.path(layout.pr_image),
                          title=f"Precision-recall on {manifest.name} (test)")
            write_json(out.path(layout.eval_metrics), report)
        run.log_metrics(flatten(report))
        run.set_tags({"drcl.prior_sha256": next(iter(priors.values())),
                      "drcl.precision": resolved_precision(params.precision, device)})
        run.log_artifacts(layout.eval_metrics, layout.pr_curves, layout.pr_image)
    return report


def _write_pr_csv(path: Path, recall, precision) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["recall", "precision"])
        writer.writerows(zip(map(float, recall), map(float, precision), strict=True))

