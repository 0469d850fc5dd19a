"""Step `prior`: SPL over every modality (or the orthogonal baseline) writes W and S_k."""

from __future__ import annotations

from drcl.atomic import atomic_path, write_csv, write_json
from drcl.config import Params, for_data
from drcl.correction import save_posteriors
from drcl.data.dataset import dataset_checksum, load_manifest, load_modality
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.prior import PriorResult, select_prior
from drcl.prior_io import prior_checksum, save_prior
from drcl.runtime import resolve_device, resolved_precision
from drcl.tracking import stage_run


def fit_prior(params: Params, layout: Layout, *, run_key: str | None = None) -> PriorResult:
    """Learn the prior on the prepared data set in `layout`; write it, its scores and plots.
    `run_key` names the pipeline run it tracks under (drcl.tracking.stage_run)."""
    manifest = load_manifest(layout.data)
    params = for_data(params, modalities=list(manifest.modalities),
                      num_classes=manifest.num_classes)
    correction = params.train.correction
    if correction.method != "none" and correction.cost == "cross_modal" and not manifest.paired:
        raise DrclError(f"train.correction.cost: cross_modal blends the posteriors of one item's "
                        f"modalities, but {manifest.name} is not paired (no item id recurs "
                        "across modalities); use own")
    device = resolve_device(params.device)
    modalities = [load_modality(layout.data, m) for m in manifest.modalities]
    with stage_run(params, "prior", layout=layout, dataset_sha256=dataset_checksum(manifest),
                   data_source=manifest.source, run_key=run_key) as run:
        result = select_prior(modalities, num_classes=manifest.num_classes, params=params,
                              device=device)
        with atomic_path(layout.prior_plots) as tmp:
            tmp.mkdir()
            for name, cand in result.candidates.items():
                write_csv(tmp / f"{name}.csv", cand.history)
                run.log_history(cand.history, prefix=f"spl.{name}.")
        precision = resolved_precision(params.precision, device)
        write_json(layout.prior_metrics, result.summary() | {"precision": precision})
        save_prior(result.prior, layout.prior, method=result.method, chosen=result.chosen or "",
                   dataset=manifest.name)
        save_posteriors(layout.posteriors, {m: (c.ids, c.posteriors)
                                            for m, c in result.candidates.items()
                                            if c.posteriors is not None})
        run.log_metrics({f"quality_score.{m}": s for m, s in result.summary()["scores"].items()})
        for name, cand in result.candidates.items():
            if cand.standardization is not None:
                run.log_metrics({f"{key}.{name}": value
                                 for key, value in cand.standardization.metrics().items()})
        run.set_tags({"drcl.prior_method": result.method,
                      "drcl.chosen_modality": result.chosen or "none",
                      "drcl.prior_sha256": prior_checksum(result.prior),
                      "drcl.precision": precision})
        run.log_artifacts(layout.prior_metrics, layout.prior_plots)
    return result
