"""Tables from benchmarks/quality/results/*.json: benchmarks/quality/RESULTS.md.

    python benchmarks/quality/report.py

Means and standard deviations are over seeds. The `default?` verdicts compare validation means
only: a change from the method's defaults counts as a win on a data set when its validation
MAP@all beats the default's by more than the default's seed standard deviation.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections import defaultdict
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
TITLES = {
    "uci_mfeat": "UCI Multiple Features (6 modalities, 30 directions, 400 test items each)",
    "wikipedia_lda": "Wikipedia, SIFT image + LDA text (462 test pairs)",
    "wikipedia_minilm": "Wikipedia, SIFT image + MiniLM text (462 test pairs)",
}
LABELS = {
    "drcl": "DRCL, the defaults (`prior.method: spl`, `model.standardize: auto`)",
    "orthogonal": "orthogonal prior (SDML)",
    "no_fa": "DRCL without FA (`train.use_fa: false`)",
    "no_mrr": "DRCL without MRR (`train.use_mrr: false`)",
    "spl_last": "DRCL, `prior.spl_snapshot: last`",
    "score_val": "DRCL, `prior.score_split: val`",
    "select_target_map": "DRCL, `train.selection: target_map`",
    "standardize_hand": "DRCL, standardisation picked by hand on validation (UCI's earlier "
                        "default: all views but fou, kar, zer)",
    "standardize_all": "DRCL, `model.standardize: true` (every modality standardised)",
    "standardize_none": "DRCL, `model.standardize: false` (features as given)",
    "bf16": "DRCL, `precision: bf16` (autocast matmuls)",
    "logistic": "logistic regression posteriors",
}
# The per-modality searches ran with the defaults of their day: UCI every modality standardised,
# Wikipedia features as given.
SEARCH_BASE = {"uci_mfeat": "every modality standardised",
               "wikipedia_lda": "features as given", "wikipedia_minilm": "features as given"}
PER_MODALITY = ("search lr ", "search standardize ")
CHANGES = ("score_val", "select_target_map", "standardize_hand", "standardize_all",
           "standardize_none")  # bf16 is judged by its own rule: within one seed sd


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def grouped(results: dict) -> dict[str, list[dict]]:
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for entry in results.values():
        by_variant[entry["variant"]].append(entry)
    return by_variant


def summary_table(by_variant: dict[str, list[dict]]) -> list[str]:
    lines = ["| method | seeds | val MAP@all | test MAP@all | test MAP@50 | SPL chose |",
             "|---|---|---|---|---|---|"]
    for variant, label in LABELS.items():
        runs = by_variant.get(variant)
        if not runs:
            continue
        chosen = sorted({r["chosen"] for r in runs if r.get("chosen")})
        lines.append(
            f"| {label} | {len(runs)} | {mean_std([r['val']['map_all']['mean'] for r in runs])} | "
            f"{mean_std([r['test']['map_all']['mean'] for r in runs])} | "
            f"{mean_std([r['test']['map_at_50']['mean'] for r in runs])} | "
            f"{', '.join(chosen) or '–'} |")
    return lines


def overview_table(all_results: dict[str, dict[str, list[dict]]], split: str) -> list[str]:
    """Every variant on every data set: MAP@all on `split`, mean ± sd over seeds."""
    lines = ["| method | " + " | ".join(TITLES[d].split(" (")[0] for d in all_results) + " |",
             "|---|" + "---|" * len(all_results)]
    for variant, label in LABELS.items():
        cells = [mean_std([r[split]["map_all"]["mean"] for r in by_variant[variant]])
                 if by_variant.get(variant) else "–" for by_variant in all_results.values()]
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def direction_table(by_variant: dict[str, list[dict]], metric: str) -> list[str]:
    variants = [v for v in LABELS if v in by_variant]
    directions = [d for d in by_variant["drcl"][0]["test"][metric] if d != "mean"]
    lines = ["| direction | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for direction in [*directions, "mean"]:
        cells = [statistics.mean(r["test"][metric][direction] for r in by_variant[v])
                 for v in variants]
        lines.append(f"| {direction} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return lines


def matrix_table(by_variant: dict[str, list[dict]], first: str, second: str) -> list[str]:
    """Test MAP@all as a query x database matrix, cells 'first / second' (means over seeds)."""
    def mean(variant: str, direction: str) -> float:
        return statistics.mean(r["test"]["map_all"][direction] for r in by_variant[variant])

    directions = [d for d in by_variant[first][0]["test"]["map_all"] if d != "mean"]
    names = list(dict.fromkeys(d.split("->")[0] for d in directions))
    lines = ["| query \\ database | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for q in names:
        cells = ["–" if q == d else
                 f"{mean(first, f'{q}->{d}'):.3f} / {mean(second, f'{q}->{d}'):.3f}"
                 for d in names]
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    return lines


def search_table(by_variant: dict[str, list[dict]]) -> list[str]:
    runs = sorted((r for v, rs in by_variant.items()
                   if v.startswith("search") and not v.startswith(PER_MODALITY) for r in rs),
                  key=lambda r: r["variant"])
    if not runs:
        return []
    lines = ["| setting (seed 0) | val MAP@all |", "|---|---|"]
    lines += [f"| {r['variant'].removeprefix('search ')} | {r['val']['map_all']['mean']:.4f} |"
              for r in runs]
    return lines


def per_modality_table(by_variant: dict[str, list[dict]], name: str) -> list[str]:
    """Validation MAP@all of the directions involving each modality, per searched value."""
    prefix = f"search {name} "
    grid: dict[str, dict[float, float]] = defaultdict(dict)
    for variant, runs in by_variant.items():
        if variant.startswith(prefix):
            modality, value = variant.removeprefix(prefix).split("=")
            grid[modality][float(value)] = runs[0]["val"]["map_all"]["mean"]
    if not grid:
        return []
    values = sorted({v for row in grid.values() for v in row})
    header = {"lr": lambda v: f"lr {v:g}", "standardize": lambda v: "on" if v else "off"}[name]
    lines = ["| modality | " + " | ".join(header(v) for v in values) + " |",
             "|---|" + "---|" * len(values)]
    for modality, row in grid.items():
        best = max(row, key=row.get)
        lines.append(f"| {modality} | " + " | ".join(
            (f"**{row[v]:.4f}**" if v == best else f"{row[v]:.4f}") if v in row else "–"
            for v in values) + " |")
    return lines


def auto_choices(by_variant: dict[str, list[dict]]) -> list[str]:
    runs = sorted((r for r in by_variant.get("drcl", []) if "standardize" in r),
                  key=lambda r: r["seed"])
    if not runs:
        return []
    lines = ["| modality | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for modality in runs[0]["standardize"]:
        cells = []
        for r in runs:
            c = r["standardize"][modality]
            z = c["gain"] / c["stderr"] if c.get("stderr") else 0.0
            cells.append(f"{'standardised' if c['standardize'] else 'as given'} ({z:+.1f})")
        lines.append(f"| {modality} | " + " | ".join(cells) + " |")
    return lines


def criteria_table(path: Path, all_results: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Each candidate criterion's gain of standardising, per modality (mean over seeds), beside
    the validation search's gain; bold where the criterion's choice agrees with the search."""
    if not path.exists():
        return []
    entries = json.loads(path.read_text()).values()
    names = list(next(iter(entries))["criteria"])
    lines = ["| data set | modality | search: gain of standardising | "
             + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    seconds: dict[str, list[float]] = defaultdict(list)
    for dataset, by_variant in all_results.items():
        search = {}
        for variant, runs in by_variant.items():
            if variant.startswith("search standardize "):
                modality, value = variant.removeprefix("search standardize ").split("=")
                search.setdefault(modality, {})[value] = runs[0]["val"]["map_all"]["mean"]
        for modality, values in search.items():
            truth = values["1"] - values["0"]
            runs = [e for e in entries if e["dataset"] == dataset and e["modality"] == modality]
            cells = []
            for name in names:
                found = [e["criteria"][name] for e in runs]
                seconds[name] += [f["seconds"] for f in found]
                gain = statistics.mean(f["gain"] for f in found)
                chosen = sum(f["standardize"] for f in found)
                agrees = (chosen > len(found) / 2) == (truth > 0.002)
                text = f"{gain:+.3f} ({chosen}/{len(found)})"
                cells.append(f"**{text}**" if agrees else text)
            lines.append(f"| {dataset} | {modality} | {truth:+.4f} | " + " | ".join(cells) + " |")
    lines.append("| seconds per modality (mean) | | | " + " | ".join(
        f"{statistics.mean(seconds[n]):.2f}" for n in names) + " |")
    return lines


def verdicts(all_results: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = ["| change | " + " | ".join(all_results) + " | wins everywhere |",
             "|---|" + "---|" * (len(all_results) + 1)]
    for change in CHANGES:
        cells, wins = [], []
        for by_variant in all_results.values():
            base = [r["val"]["map_all"]["mean"] for r in by_variant.get("drcl", [])]
            other = [r["val"]["map_all"]["mean"] for r in by_variant.get(change, [])]
            if len(base) < 2 or not other:
                cells.append("–")
                continue
            gain = statistics.mean(other) - statistics.mean(base)
            wins.append(gain > statistics.stdev(base))
            cells.append(f"{gain:+.4f}" + (" (win)" if wins[-1] else ""))
        verdict = "yes" if wins and all(wins) and len(wins) == len(all_results) else "no"
        lines.append(f"| {LABELS[change]} | " + " | ".join(cells) + f" | {verdict} |")
    return lines


def main() -> None:
    all_results = {}
    for name in TITLES:
        path = HERE / "results" / f"{name}.json"
        if path.exists():
            all_results[name] = grouped(json.loads(path.read_text()))
    out = ["# Retrieval quality", "",
           f"Made by `benchmarks/quality/run.py` and `benchmarks/quality/report.py` on "
           f"{date.today().isoformat()} ({platform.machine()} CPU, torch). Means ± standard "
           "deviations over seeds 0, 1, 2; validation figures choose, test figures report.", ""]
    out += ["## Every data set", "", "Test MAP@all (mean over every direction):", "",
            *overview_table(all_results, "test"), "", "Validation MAP@all:", "",
            *overview_table(all_results, "val"), ""]
    for name, by_variant in all_results.items():
        out += [f"## {TITLES[name]}", "", *summary_table(by_variant), ""]
        search = search_table(by_variant)
        if search:
            out += ["Validation search over the learning rate and hidden width:", "",
                    *search, ""]
        for knob, what in (("lr", "RSC learning rate"), ("standardize", "standardisation")):
            table = per_modality_table(by_variant, knob)
            if table:
                out += [f"Validation search over each modality's {what} (seed 0; MAP@all of "
                        "the directions involving the modality; the other modalities "
                        f"{SEARCH_BASE.get(name, 'at the default')}; best in bold):", "",
                        *table, ""]
        choices = auto_choices(by_variant)
        if choices:
            out += ["`model.standardize: auto`: what each modality chose, per seed (the "
                    "probe's mean gain of standardising, in standard errors):", "",
                    *choices, ""]
        if "drcl" in by_variant and "orthogonal" in by_variant:
            out += ["Test MAP@all, query (rows) x database (columns), DRCL / orthogonal prior "
                    "(mean over seeds):", "", *matrix_table(by_variant, "drcl", "orthogonal"), ""]
        if "drcl" in by_variant:
            for metric, title in (("map_all", "MAP@all"), ("map_at_50", "MAP@50")):
                out += [f"Test {title} per direction (mean over seeds):", "",
                        *direction_table(by_variant, metric), ""]
    criteria = criteria_table(HERE / "results" / "standardization.json", all_results)
    if criteria:
        out += ["## Choosing standardisation: candidate criteria against the validation search",
                "", "Each cell: the criterion's mean gain of standardising on validation items "
                "(over the seeds of `standardization.py`), and in how many runs it chose to "
                "standardise (gain at least 2 standard errors). Bold: the choice agrees with "
                "the validation search, which trained the whole method both ways (a gain "
                "within 0.002 counts as a tie, where keeping the features as given agrees).",
                "", *criteria, ""]
    out += ["## Changes from the method, judged on validation data", "",
            "Gain in validation MAP@all over DRCL's defaults (mean over seeds); a win needs more "
            "than the defaults' seed standard deviation.", "", *verdicts(all_results), ""]
    tmp = HERE / "RESULTS.md.tmp"
    tmp.write_text("\n".join(out))
    tmp.replace(HERE / "RESULTS.md")


if __name__ == "__main__":
    main()
