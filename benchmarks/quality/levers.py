"""What re-ranking and seed ensembles buy over the defaults, each chosen on validation.

    python benchmarks/quality/levers.py DATASET [--seeds 0 1 2] [--members 3]
    python benchmarks/quality/levers.py DATASET --tuned joint   # on the settings drcl tune chose
    python benchmarks/quality/levers.py --report          # the tables of RESULTS.md

Per seed: the prior (SPL, as the pipeline fits it), then `--members` encoders per modality
against it (member 0 with the seed itself: the default run; member j with the seed
drcl.ensemble.member_seed gives it). Embedded on validation and test, then measured:
- `defaults`: member 0 alone, no re-ranking;
- `dba`, `qe`, `rerank`: member 0 with database-side augmentation alone, alpha query expansion
  alone, and both, each setting chosen on validation from the grid below (drcl.rerank.choose,
  as `drcl evaluate` and `drcl promote` choose it);
- `ensemble`: every member, a modality's embedding the normalised mean of its members';
- `ensemble+rerank`: both levers.
Every choice is made on validation; the test figures are only reported. Results go to
benchmarks/quality/results/levers-DATASET.json, one entry per seed, written after each. With
`--tuned STRATEGY` the runs start from the per-modality settings `drcl tune` chose (seed 0's
search of that strategy in results/tune-DATASET.json, made by benchmarks/quality/tune.py, on
validation): all three levers together, in levers-DATASET-tuned-STRATEGY.json; `defaults` is
then the tuned run alone.
The runs call the pipeline's library functions in memory, without tracking, in float32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
from run import PriorCache, base_params, prepare, with_overrides  # noqa: E402

from drcl.ensemble import mean_embedding, member_seed  # noqa: E402
from drcl.metrics import direction_report  # noqa: E402
from drcl.model import embed  # noqa: E402
from drcl.rerank import candidates, choose, reranked_report  # noqa: E402
from drcl.runtime import resolve_device  # noqa: E402
from drcl.train import train_encoder  # noqa: E402

GRID = {"dba_k": (0, 1, 3, 5, 10, 20), "qe_k": (0, 1, 3, 5, 10, 20), "alpha": (1.0, 3.0)}
LEVERS = {"dba": {"qe_k": (0,)}, "qe": {"dba_k": (0,)}, "rerank": {}}


def measure(emb: dict, labels: dict, k: int, multi_label: bool) -> dict:
    """Validation and test MAP@all means for each lever on these embeddings."""
    out = {"plain": {split: direction_report(emb[split], labels[split], k=k,
                                             multi_label=multi_label)[0]["map_all"]["mean"]
                     for split in ("val", "test")}}
    for lever, fixed in LEVERS.items():
        grid = {**GRID, **fixed}
        start = time.perf_counter()
        setting, _ = choose(emb["val"], labels["val"],
                            candidates(grid["dba_k"], grid["qe_k"], grid["alpha"]),
                            multi_label=multi_label)
        chose_s = time.perf_counter() - start
        out[lever] = {"setting": setting.as_dict(), "choose_seconds": chose_s} | {
            split: reranked_report(emb[split], labels[split], setting, k=k,
                                   multi_label=multi_label)["map_all"]["mean"]
            for split in ("val", "test")}
    return out


def tuned_settings(dataset: str, strategy: str) -> dict:
    """The per-modality settings seed 0's search of `strategy` chose (tune.py's results)."""
    runs = json.loads((RESULTS / f"tune-{dataset}.json").read_text())
    (run,) = [r for r in runs if r["strategy"] == strategy and r["seed"] == 0]
    return run["best"]


def one_seed(dataset: str, seed: int, members: int, work: Path,
             per_modality: dict | None = None) -> dict:
    raw = base_params(dataset)
    if per_modality:
        raw["train"]["per_modality"] = per_modality
    modalities, multi_label = prepare(dataset, raw, work)
    params = with_overrides(raw, {}, seed)
    device = resolve_device(params.device)
    num_classes = modalities[0].train.labels.shape[1]
    start = time.perf_counter()
    prior = PriorCache().get(modalities, params, device, num_classes)
    prior_s = time.perf_counter() - start
    labels = {split: {m.name: getattr(m, split).labels for m in modalities}
              for split in ("val", "test")}
    per_member: list[dict[str, dict[str, torch.Tensor]]] = []
    train_s = []
    for j in range(members):
        run = params if j == 0 else with_overrides(raw, {}, member_seed(seed, j))
        start = time.perf_counter()
        emb: dict[str, dict[str, torch.Tensor]] = {"val": {}, "test": {}}
        for data in modalities:
            encoder = train_encoder(data, prior.prior, params=run, device=device).encoder
            for split in emb:
                emb[split][data.name] = embed(encoder, getattr(data, split).features,
                                              device=device)
        train_s.append(time.perf_counter() - start)
        per_member.append(emb)
        print(f"{dataset} seed {seed}: member {j} trained ({train_s[-1]:.0f} s)",
              file=sys.stderr, flush=True)
    k = params.evaluate.k
    single = measure(per_member[0], labels, k, multi_label)
    mean = {split: {m: mean_embedding([e[split][m] for e in per_member]) for m in labels[split]}
            for split in ("val", "test")}
    ensemble = measure(mean, labels, k, multi_label)
    return {"seed": seed, "members": members, "prior_seconds": prior_s,
            "train_seconds_per_member": train_s, "single": single, "ensemble": ensemble}


def report() -> str:
    rows = ["| data set | seeds | lever | chosen on validation | val MAP@all | test MAP@all "
            "| test gain | gain per seed |", "|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("levers-*.json")):
        runs = json.loads(path.read_text())
        name, _, strategy = path.stem.removeprefix("levers-").partition("-tuned-")
        dataset = f"{name} (tuned, {strategy})" if strategy else name
        seeds = sorted(runs, key=int)

        def mean(get, runs=runs, seeds=seeds):
            values = [get(runs[s]) for s in seeds]
            return sum(values) / len(values)

        base = mean(lambda r: r["single"]["plain"]["test"])
        lines = [("defaults", "", lambda r: r["single"]["plain"])]
        lines += [(f"{lever}", lever, lambda r, lv=lever: r["single"][lv])
                  for lever in LEVERS]
        lines += [("ensemble", "", lambda r: r["ensemble"]["plain"]),
                  ("ensemble + rerank", "rerank", lambda r: r["ensemble"]["rerank"])]
        for name, lever, get in lines:
            chosen = ", ".join(sorted({_describe(get(runs[s]).get("setting")) for s in seeds})) \
                if lever else ""
            val, test = mean(lambda r, g=get: g(r)["val"]), mean(lambda r, g=get: g(r)["test"])
            per_seed = " ".join(f"{get(runs[s])['test'] - runs[s]['single']['plain']['test']:+.3f}"
                                for s in seeds)
            rows.append(f"| {dataset} | {len(seeds)} | {name} | {chosen} | {val:.4f} | "
                        f"{test:.4f} | {test - base:+.4f} | {per_seed} |")
    return "\n".join(rows)


def _describe(setting: dict | None) -> str:
    from drcl.rerank import Rerank

    return Rerank.from_dict(setting).describe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--tuned", choices=["coordinate", "joint"])
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        print(report())
        return
    import tempfile

    per_modality = tuned_settings(args.dataset, args.tuned) if args.tuned else None
    out = RESULTS / f"levers-{args.dataset}{f'-tuned-{args.tuned}' if args.tuned else ''}.json"
    done = json.loads(out.read_text()) if out.is_file() else {}
    for seed in args.seeds:
        if str(seed) in done:
            continue
        with tempfile.TemporaryDirectory(prefix="drcl-levers-") as tmp:
            done[str(seed)] = one_seed(args.dataset, seed, args.members, Path(tmp),
                                       per_modality)
        out.write_text(json.dumps(done, indent=1) + "\n")
        print(json.dumps(done[str(seed)]["single"] | {"ensemble": done[str(seed)]["ensemble"]},
                     indent=1), flush=True)


if __name__ == "__main__":
    main()
