"""Step `prior`: SPL over every modality (or the orthogonal baseline) writes W and S_k."""

from __future__ import annotations

import json

import torch

from drcl.atomic import output_set, write_csv, write_json, write_text
from drcl.config import Params, for_data
from drcl.correction import save_posteriors
from drcl.data.dataset import Manifest, dataset_checksum, load_manifest
from drcl.errors import DrclError
from drcl.extract.class_texts import TEXT_EXTRACTOR, embed_class_texts
from drcl.layout import Layout
from drcl.plots import spl_scores_png
from drcl.prior import ClassSemantics, PriorResult, select_prior
from drcl.prior_io import prior_checksum, save_prior
from drcl.runtime import resolve_device, resolved_precision
from drcl.tracking import stage_run


def fit_prior(params: Params, layout: Layout) -> PriorResult:
    """Learn the prior on the prepared data set in `layout`; write it, its scores and plots."""
    manifest = load_manifest(layout.data)
    params = for_data(params, modalities=list(manifest.modalities),
                      num_classes=manifest.num_classes)
    correction = params.train.correction
    if correction.method != "none" and correction.cost == "cross_modal" and not manifest.paired:
        raise DrclError(f"train.correction.cost: cross_modal blends the posteriors of one item's "
                        f"modalities, but {manifest.name} is not paired (no item id recurs "
                        "across modalities); use own")
    device = resolve_device(params.device)
    modalities = [layout.modality(m, ("train", "val")) for m in manifest.modalities]
    with stage_run(params, "prior", layout=layout, dataset_sha256=dataset_checksum(manifest),
                   data_source=manifest.source) as run:
        result = select_prior(modalities, num_classes=manifest.num_classes, params=params,
                              device=device, semantics=_semantics(params, manifest, device))
        precision = resolved_precision(params.precision, device)
        with output_set(layout.out) as out:  # scores, curves, W and posteriors land together
            plots = out.path(layout.prior_plots)
            plots.mkdir()
            for name, cand in result.candidates.items():
                write_csv(plots / f"{name}.csv", cand.history)
            if not result.candidates:  # no SPL ran: a header, so the plot is empty, not missing
                write_text(plots / f"{result.method}.csv", "epoch,loss,score\n")
            spl_scores_png({m: c.history for m, c in result.candidates.items()},
                           out.path(layout.prior_image), chosen=result.chosen,
                           title=f"SPL quality score on {manifest.name}" if result.candidates
                           else f"prior.method {result.method}: no SPL ran")
            write_json(out.path(layout.prior_metrics),
                       result.summary() | {"precision": precision})
            save_prior(result.prior, out.path(layout.prior), extra=_semantic_tensors(result),
                       method=result.method, chosen=result.chosen or "", dataset=manifest.name,
                       classes=json.dumps([manifest.classes[c] for c in result.classes]),
                       **_semantic_metadata(result, manifest))
            save_posteriors(out.path(layout.posteriors), {m: (c.ids, c.posteriors)
                                                          for m, c in result.candidates.items()
                                                          if c.posteriors is not None})
        for name, cand in result.candidates.items():
            run.log_history(cand.history, prefix=f"spl.{name}.")
        run.log_metrics({f"quality_score.{m}": s for m, s in result.summary()["scores"].items()})
        for name, cand in result.candidates.items():
            if cand.standardization is not None:
                run.log_metrics({f"{key}.{name}": value
                                 for key, value in cand.standardization.metrics().items()})
        run.set_tags({"drcl.prior_method": result.method,
                      "drcl.chosen_modality": result.chosen or "none",
                      "drcl.prior_sha256": prior_checksum(result.prior),
                      "drcl.precision": precision})
        run.log_artifacts(layout.prior_metrics, layout.prior_plots, layout.prior_image)
    return result


def _semantics(params: Params, manifest: Manifest, device: torch.device) -> ClassSemantics | None:
    """The class texts embedded, when the semantic prior needs them."""
    if params.prior.method != "semantic":
        return None
    texts = manifest.class_texts()
    return ClassSemantics(texts=texts, embeddings=torch.from_numpy(
        embed_class_texts(texts, device=str(device))))


def _semantic_tensors(result: PriorResult) -> dict[str, torch.Tensor]:
    if result.semantics is None or result.projection is None:
        return {}
    return {"class_embeddings": result.semantics.embeddings, "projection": result.projection}


def _semantic_metadata(result: PriorResult, manifest: Manifest) -> dict[str, str]:
    """Every class's name and text, so a search can name a class unseen in training."""
    if result.semantics is None:
        return {}
    return {"all_classes": json.dumps(manifest.classes),
            "class_texts": json.dumps(result.semantics.texts),
            "text_extractor": TEXT_EXTRACTOR}
