"""Tables of benchmarks/noise/results/*.json as Markdown (RESULTS.md and README.md's section).

    python benchmarks/noise/report.py [--out benchmarks/noise/RESULTS.md]

Per data set and noise setting: test MAP@all (mean over directions; mean ± standard deviation
over seeds) of DRCL as is, with plain cross-entropy and with label correction, beside
clean-label DRCL; the share of clean-label MAP each keeps; validation MAP (the figures a choice
may use); and the labels: how many given training labels are right, and how many of those the
correction trained on at its last epoch were, on what share of the items.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["clean", "sym0.2", "sym0.4", "sym0.6", "sym0.8", "asym0.4", "shared0.4", "shared0.8"]
NAMES = {"uci_mfeat": "UCI Multiple Features", "wikipedia_lda": "Wikipedia SIFT+LDA",
         "wikipedia_minilm": "Wikipedia SIFT+MiniLM"}


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def figures(results: dict, setting: str, variant: str, split: str = "test") -> list[float]:
    return [e[split]["map_all"]["mean"] for e in results.values()
            if e["setting"] == setting and e["variant"] == variant]


def label_figures(results: dict, setting: str, variant: str) -> tuple[float, float, float]:
    """Given labels right, kept labels right, share kept: means over modalities and seeds."""
    rows = [m for e in results.values() if e["setting"] == setting and e["variant"] == variant
            for m in e.get("labels", {}).values()]
    def avg(key: str) -> float:
        found = [r[key] for r in rows if key in r]
        return statistics.mean(found) if found else float("nan")
    return avg("noisy_accuracy"), avg("accuracy"), avg("kept")


def table(dataset: str, results: dict, robust: str) -> str:
    clean = figures(results, "clean", "drcl")
    base = statistics.mean(clean) if clean else float("nan")
    lines = [f"#### {NAMES.get(dataset, dataset)}", "",
             "| labels | seeds | DRCL as is | plain CE | correction | correction − DRCL | kept "
             "of clean MAP (DRCL / correction) | validation (DRCL / correction) | labels right "
             "(given → trained on, share kept) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for setting in ORDER:
        drcl, ce, fix = (figures(results, setting, v) for v in ("drcl", "ce", robust))
        if not drcl and not fix:
            continue
        gain = statistics.mean(fix) - statistics.mean(drcl) if drcl and fix else float("nan")
        keep = (f"{statistics.mean(drcl) / base:.0%} / {statistics.mean(fix) / base:.0%}"
                if drcl and fix and clean else "–")
        val = (f"{statistics.mean(figures(results, setting, 'drcl', 'val')):.4f} / "
               f"{statistics.mean(figures(results, setting, robust, 'val')):.4f}"
               if drcl and fix else "–")
        given, used, kept = label_figures(results, setting, robust)
        labels = ("–" if setting == "clean" or given != given
                  else f"{given:.2f} → {used:.2f} on {kept:.0%}")
        lines.append(f"| {setting} | {len(drcl)} | {mean_sd(drcl)} | {mean_sd(ce)} | "
                     f"{mean_sd(fix)} | {gain:+.4f} | {keep} | {val} | {labels} |")
    return "\n".join(lines)


ROBUST_VARIANTS = ("robust", "robust_own", "robust_relabel")
VARIANT_NAMES = {"drcl": "DRCL as is", "ce": "plain CE", "robust": "correction (cross-modal)",
                 "robust_own": "correction (own cost)",
                 "robust_relabel": "correction (cross-modal, relabel)"}


def mean_of(results: dict, setting: str, variant: str, split: str, seeds: set[int]) -> float:
    found = [e[split]["map_all"]["mean"] for e in results.values()
             if e["setting"] == setting and e["variant"] == variant and e["seed"] in seeds]
    return statistics.mean(found) if found else float("nan")


def seeds_of(results: dict, setting: str, variant: str) -> set[int]:
    return {e["seed"] for e in results.values()
            if e["setting"] == setting and e["variant"] == variant}


def choices(dataset: str, results: dict) -> str:
    """What a user choosing on the noisy validation split would pick, and what it scores on
    test: among the correction's variants (where several were run, on their common seeds), and
    DRCL as is against the correction."""
    lines = [f"#### {NAMES.get(dataset, dataset)}: choices on the noisy validation split", ""]
    rows = []
    for setting in ORDER:
        ran = [v for v in ROBUST_VARIANTS if seeds_of(results, setting, v)]
        if len(ran) < 2:
            continue
        common = set.intersection(*(seeds_of(results, setting, v) for v in ran))
        val = {v: mean_of(results, setting, v, "val", common) for v in ran}
        test = {v: mean_of(results, setting, v, "test", common) for v in ran}
        picked, best = max(val, key=val.get), max(test, key=test.get)
        figures = "; ".join(f"{VARIANT_NAMES[v]} {val[v]:.4f} / {test[v]:.4f}" for v in ran)
        rows.append(f"| {setting} (seeds {', '.join(map(str, sorted(common)))}) | {figures} | "
                    f"{VARIANT_NAMES[picked]} | {test[picked] - test[best]:+.4f} |")
    if rows:
        lines += ["| labels | validation / test MAP@all | chosen on validation | its test MAP "
                  "− the best's |", "|---|---|---|---|", *rows, ""]
    wins = []
    for setting in ORDER:
        seeds = seeds_of(results, setting, "robust")
        drcl = mean_of(results, setting, "drcl", "val", seeds)
        fix = mean_of(results, setting, "robust", "val", seeds)
        if drcl == drcl and fix == fix:  # both ran
            wins.append(f"{setting} {fix - drcl:+.4f}")
    if wins:
        lines.append("Validation MAP@all, correction − DRCL as is (the default's choice): "
                     + "; ".join(wins) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--robust", default="robust", help="the correction variant to show")
    args = parser.parse_args()
    parts = []
    for path in sorted((HERE / "results").glob("*.json")):
        results = json.loads(path.read_text())
        parts.append(table(path.stem, results, args.robust))
        parts.append(choices(path.stem, results))
    text = "\n\n".join(parts) + "\n"
    args.out.write_text("# Label noise: results\n\nGenerated by `python benchmarks/noise/"
                        "report.py` from benchmarks/noise/results/.\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
