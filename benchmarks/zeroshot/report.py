"""Tables of benchmarks/zeroshot/results/*.json as Markdown (RESULTS.md and README.md's section).

    python benchmarks/zeroshot/report.py [--out benchmarks/zeroshot/RESULTS.md]

Per data set and variant: test MAP@all on the unseen classes (mean over directions, then mean ±
standard deviation over the class splits, and each direction), on the seen classes and on all
classes, and seen-class validation MAP (the only figure a choice may read). Below each table:
what the semantic modes gain over the better of the SPL and orthogonal priors on unseen classes,
and the share of the gap to the upper bound they close.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["chance", "spl", "orthogonal", "ridge", "semantic", "semantic_recast",
         "semantic_paired", "orthogonal_mse", "semantic_mse", "semantic_paired_mse", "upper"]
NAMES = {"chance": "chance (random embeddings)", "spl": "DRCL, SPL prior",
         "orthogonal": "DRCL, orthogonal prior", "ridge": "ridge to class texts (linear)",
         "semantic": "semantic prior, class targets", "semantic_recast":
         "semantic prior, recast targets", "semantic_paired": "semantic prior, paired-text "
         "targets", "orthogonal_mse": "orthogonal prior, weighted regression",
         "semantic_mse": "semantic prior, class targets, weighted regression",
         "semantic_paired_mse": "semantic prior, paired-text targets, weighted regression",
         "upper": "upper bound: DRCL with every class seen"}
DATASETS = {"wikipedia_minilm": "Wikipedia SIFT+MiniLM", "wikipedia_lda": "Wikipedia SIFT+LDA",
            "uci_mfeat": "UCI Multiple Features", "openclipart": "OpenClipArt"}


def means(results: dict, variant: str, subset: str, direction: str = "mean") -> list[float]:
    return [e[subset]["map_all"][direction] for e in results.values()
            if e["variant"] == variant and subset in e]


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(dataset: str, results: dict) -> str:
    directions = sorted({d for e in results.values() for d in e["unseen"]["map_all"]
                         if d != "mean"})
    heads = " | ".join(f"unseen {d}" for d in directions)
    lines = [f"#### {DATASETS.get(dataset, dataset)}", "",
             f"| variant | splits | unseen MAP@all | {heads} | seen MAP@all | all classes "
             "MAP@all | seen-class validation MAP@all |",
             "|---|---|---|" + "---|" * len(directions) + "---|---|---|"]
    for variant in ORDER:
        unseen = means(results, variant, "unseen")
        if not unseen:
            continue
        per_direction = " | ".join(f"{statistics.mean(means(results, variant, 'unseen', d)):.4f}"
                                   for d in directions)
        lines.append(f"| {NAMES[variant]} | {len(unseen)} | {cell(unseen)} | {per_direction} | "
                     f"{cell(means(results, variant, 'seen'))} | "
                     f"{cell(means(results, variant, 'all'))} | "
                     f"{cell(means(results, variant, 'val'))} |")
    lines += ["", *gains(results)]
    return "\n".join(lines)


def gains(results: dict) -> list[str]:
    """Each semantic mode against the better of SPL and orthogonal, split by split."""
    splits = sorted({e["split"] for e in results.values()})

    def by_split(variant: str, subset: str = "unseen") -> dict[int, float]:
        return {e["split"]: e[subset]["map_all"]["mean"] for e in results.values()
                if e["variant"] == variant and subset in e}

    spl, orth, upper = by_split("spl"), by_split("orthogonal"), by_split("upper")
    spl_seen, orth_seen = by_split("spl", "seen"), by_split("orthogonal", "seen")
    out = []
    for mode in ("semantic", "semantic_recast", "semantic_paired", "semantic_mse",
                 "semantic_paired_mse", "orthogonal_mse", "ridge"):
        got, got_seen = by_split(mode), by_split(mode, "seen")
        common = [s for s in splits if s in got and s in spl and s in orth]
        if not common:
            continue
        base = {s: max(spl[s], orth[s]) for s in common}
        diff = [got[s] - base[s] for s in common]
        line = (f"- {NAMES[mode]}: {statistics.mean(diff):+.4f} unseen MAP@all over the better "
                f"of SPL and orthogonal")
        if len(diff) > 1:
            line += f" (sd over splits {statistics.stdev(diff):.4f})"
        closed = [s for s in common if s in upper and upper[s] > base[s]]
        if closed:
            share = statistics.mean((got[s] - base[s]) / (upper[s] - base[s]) for s in closed)
            line += f"; closes {share:.0%} of the gap to the upper bound"
        seen_cost = [got_seen[s] - max(spl_seen[s], orth_seen[s]) for s in common
                     if s in got_seen]
        if seen_cost:
            line += f"; seen classes {statistics.mean(seen_cost):+.4f}"
        out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    parts = [table(path.stem, json.loads(path.read_text()))
             for path in sorted((HERE / "results").glob("*.json"))]
    text = "\n\n".join(parts) + "\n"
    args.out.write_text("# Zero-shot retrieval: results\n\nGenerated by `python benchmarks/"
                        "zeroshot/report.py` from benchmarks/zeroshot/results/.\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
