"""Zero-shot retrieval: classes unseen in training, side by side: a command, not a test.

    python benchmarks/zeroshot/run.py DATASET [--splits 0 1 2 3 4] [--variants ...]

DATASET is one of benchmarks/quality/run.py's with class names (wikipedia_minilm by default).
Each class split s holds out half the classes, drawn with seed s (`data.unseen_class_count`),
and trains every variant with `params.seed` = s. Variants:

- `spl`, `orthogonal`: DRCL with its SPL prior, or the orthogonal one, trained on seen classes;
- `semantic`: the semantic prior (class texts' MiniLM columns) with class targets;
- `semantic_recast`: the semantic prior with W_pinv's recast targets (MRR) instead;
- `semantic_paired`: the semantic prior, each item pulled to its own paired text's embedding
  (drcl.paired_targets; needs a MiniLM modality and paired ids);
- `ridge`: a linear baseline, each modality's standardised features ridge-regressed onto its
  class's text embedding (DeViSE/ESZSL style), the penalty chosen on seen-class validation MAP;
- `upper`: DRCL (SPL) trained with every class seen: what the unseen classes would score;
- `*_mse`: the same with J_MSE summed per item and weighted like J_L (`train.mse_reduction:
  sum`, `train.beta: 1`), so the pull towards the targets is not swamped by the label loss;
- `chance`: random embeddings (the mean of 5 draws).

Per run, test MAP@all and MAP@50 per direction on the unseen classes' items (the zero-shot
figure), the seen classes' and all items (drcl.metrics.class_set_report), and validation MAP on
seen classes (the only figure any choice here reads). Results go to
benchmarks/zeroshot/results/DATASET.json after each run (an interrupted benchmark resumes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from drcl.data.dataset import ModalityData, load_manifest, load_modality
from drcl.data.prepare import prepare_dataset
from drcl.data.zero_shot import seen_classes, training_view
from drcl.errors import DrclError
from drcl.extract.class_texts import embed_class_texts
from drcl.metrics import class_set_report
from drcl.model import embed
from drcl.paired_targets import paired_text_targets
from drcl.prior import ClassSemantics, select_prior
from drcl.runtime import resolve_device
from drcl.train import target_kind, train_encoder

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
_spec = importlib.util.spec_from_file_location("quality_run", HERE.parent / "quality/run.py")
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)  # type: ignore[union-attr]

REGRESS = {"train.mse_reduction": "sum", "train.beta": 1.0}
TRAINED: dict[str, dict[str, object]] = {
    "spl": {},
    "orthogonal": {"prior.method": "orthogonal"},
    "semantic": {"prior.method": "semantic"},
    "semantic_recast": {"prior.method": "semantic", "train.targets": "recast"},
    "semantic_paired": {"prior.method": "semantic"},
    "upper": {},
    # J_MSE summed per item and weighted as J_L (beta 1): the regression carries weight
    "orthogonal_mse": {"prior.method": "orthogonal", **REGRESS},
    "semantic_mse": {"prior.method": "semantic", **REGRESS},
    "semantic_paired_mse": {"prior.method": "semantic", **REGRESS},
}
VARIANTS = (*TRAINED, "ridge", "chance")
RIDGE_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)


def prepare(raw: dict, split: int, work: Path, *, hold_out: bool) -> tuple[list[ModalityData],
                                                                          object]:
    """The data set with half its classes held out by split seed `split` (or none held out)."""
    params = quality.with_overrides(raw, {}, split)
    source = work / "extracted"
    if params.data.source == "extracted":
        if not source.exists():
            from drcl.extract.step import extract_dataset

            extract_dataset(params, out_dir=source)
        params = params.model_copy(update={"data": params.data.model_copy(
            update={"path": source})})
    out = work / ("held_out" if hold_out else "all_seen")
    manifest = prepare_dataset(params, out_dir=out)
    if hold_out:
        params = params.model_copy(update={"data": params.data.model_copy(
            update={"unseen_class_count": manifest.num_classes // 2})})
        manifest = prepare_dataset(params, out_dir=out)
    return [load_modality(out, m) for m in manifest.modalities], load_manifest(out)


def evaluate(embeddings: dict, test: list[ModalityData], val: dict | None, manifest, k: int
             ) -> dict:
    labels = {m.name: m.test.labels for m in test}
    unseen = manifest.unseen_ids
    sets = {"unseen": unseen, "seen": seen_classes(manifest.num_classes, unseen).tolist(),
            "all": list(range(manifest.num_classes))}
    out = {name: class_set_report(embeddings["test"], labels, classes, k=k,
                                  multi_label=manifest.multi_label)
           for name, classes in sets.items()}
    if val is not None:
        out["val"] = val
    return out


def val_report(embeddings: dict, modalities: list[ModalityData], k: int, multi_label: bool
               ) -> dict:
    """Validation MAP on the seen classes (the held-out classes are not in it)."""
    views = [training_view(m) for m in modalities]
    labels = {m.name: m.val.labels for m in views}
    return class_set_report(embeddings, labels, list(range(views[0].val.labels.shape[1])), k=k,
                            multi_label=multi_label)


def trained(variant: str, modalities: list[ModalityData], manifest, params, semantics,
            device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    prior = select_prior(modalities, num_classes=manifest.num_classes, params=params,
                         device=device, semantics=semantics)
    text = next((m for m in modalities if manifest.modalities[m.name].extractor == "minilm"),
                None)
    if variant.startswith("semantic_paired") and (text is None or not manifest.paired):
        raise DrclError(f"{manifest.name}: semantic_paired needs a MiniLM modality and pairs")
    out: dict[str, dict[str, torch.Tensor]] = {"val": {}, "test": {}}
    for data in modalities:
        items = None
        if variant.startswith("semantic_paired"):
            items = paired_text_targets(data, text, projection=prior.projection,
                                        prior=prior.prior)
        result = train_encoder(data, prior.prior, params=params, device=device,
                               targets=target_kind(params, prior.method), item_targets=items)
        for split in out:
            out[split][data.name] = embed(result.encoder, data.split(split).features,
                                          device=device)
    return out


def ridge(modalities: list[ModalityData], manifest, texts: torch.Tensor, k: int
          ) -> dict[str, dict[str, torch.Tensor]]:
    """Closed-form ridge from standardised features to the class text embeddings; each
    modality's penalty is the one with the best seen-class validation MAP against the others'
    class vectors (the class text of each validation item's label)."""
    views = [training_view(m) for m in modalities]
    seen = seen_classes(manifest.num_classes, modalities[0].unseen)
    seen_texts = texts[torch.as_tensor(seen)].double()
    out: dict[str, dict[str, torch.Tensor]] = {"val": {}, "test": {}}
    for data in views:
        x = torch.as_tensor(data.train.features, dtype=torch.float64)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - mean) / std
        target = torch.as_tensor(data.train.labels, dtype=torch.float64) @ seen_texts
        best, best_map = None, -1.0
        for penalty in RIDGE_PENALTIES:
            gram = z.T @ z + penalty * torch.eye(z.shape[1], dtype=torch.float64)
            weights = torch.linalg.solve(gram, z.T @ target)
            zv = (torch.as_tensor(data.val.features, dtype=torch.float64) - mean) / std
            val_emb = {"q": (zv @ weights).float(),
                       "d": (torch.as_tensor(data.val.labels, dtype=torch.float64)
                             @ seen_texts).float()}
            val_map = class_set_report(val_emb, {"q": data.val.labels, "d": data.val.labels},
                                       list(range(seen.size)), k=k,
                                       multi_label=manifest.multi_label)["map_all"]["q->d"]
            if val_map > best_map:
                best, best_map = weights, val_map
        for split in out:
            zs = (torch.as_tensor(data.split(split).features, dtype=torch.float64) - mean) / std
            out[split][data.name] = (zs @ best).float()
    return out


def chance(modalities: list[ModalityData], manifest, k: int, seed: int) -> dict:
    """The tables of random embeddings, averaged over 5 draws."""
    gen = torch.Generator().manual_seed(seed)
    draws = [evaluate({"test": {m.name: torch.randn(len(m.test), 16, generator=gen)
                                for m in modalities}}, modalities, None, manifest, k)
             for _ in range(5)]
    return {name: {table: {d: float(np.mean([r[name][table][d] for r in draws]))
                           for d in values} for table, values in tables.items()}
            for name, tables in draws[0].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="wikipedia_minilm",
                        choices=sorted(quality.DATASETS))
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = quality.base_params(args.dataset)
    os.chdir(quality.ROOT)  # the profiles name data/wikipedia relative to the repository
    device = resolve_device("cpu")
    args.results.mkdir(parents=True, exist_ok=True)
    out_path = args.results / f"{args.dataset}.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in args.splits:
            todo = [v for v in args.variants if f"{v} split={split}" not in results]
            if not todo:
                continue
            modalities, manifest = prepare(raw, split, Path(tmp), hold_out=True)
            texts = torch.from_numpy(embed_class_texts(manifest.class_texts()))
            semantics = ClassSemantics(manifest.class_texts(), texts)
            for variant in todo:
                start = time.perf_counter()
                params = quality.with_overrides(raw, TRAINED.get(variant, {}), split)
                k = params.evaluate.k
                if variant == "chance":
                    entry = chance(modalities, manifest, k, split)
                else:
                    data = modalities
                    if variant == "upper":
                        data, _ = prepare(raw, split, Path(tmp), hold_out=False)
                    emb = (ridge(modalities, manifest, texts, k) if variant == "ridge" else
                           trained(variant, data, manifest, params, semantics, device))
                    val = None if variant == "upper" else val_report(  # upper: other val
                        emb["val"], modalities, k, manifest.multi_label)
                    entry = evaluate(emb, modalities, val, manifest, k)
                entry.update(variant=variant, split=split, held_out=manifest.unseen_classes,
                             seconds=time.perf_counter() - start)
                quality.record(results, f"{variant} split={split}", entry, out_path,
                               f"unseen {entry['unseen']['map_all']['mean']:.4f} "
                               f"seen {entry['seen']['map_all']['mean']:.4f}")


if __name__ == "__main__":
    try:
        main()
    except DrclError as exc:
        sys.exit(f"error: {exc}")
