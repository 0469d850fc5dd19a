"""What `drcl tune` buys: the defaults against the tuned settings, each measured on test data.

    python benchmarks/quality/tune.py DATASET [--seeds 0 1 2] [--trials 16]
                                              [--strategies coordinate joint]
    python benchmarks/quality/tune.py --report     # the table of RESULTS.md

For each (strategy, seed) a project is made in a temporary folder with params.yaml and the data
set's profile (params/DATASET.yaml), and the commands a user types run in it: `drcl extract`
(for extracted features), `drcl prepare`, `drcl prior`, `drcl train` per modality and `drcl
evaluate` (the defaults), then `drcl tune`, `drcl profile apply tune/best.yaml`, `drcl train`
per modality and `drcl evaluate` again.
Validation figures come from `drcl tune` (it chose on them); test figures from
metrics/eval.json. Both strategies get the same number of trainings: `--trials` per modality
(coordinate) or in all (joint, each trial training every modality). Results go to
benchmarks/quality/results/tune-DATASET.json, one entry per (strategy, seed), written after
each, so an interrupted benchmark resumes. Wikipedia needs the release linked at
data/wikipedia (README, "Wikipedia"); OpenClipArt the manifest benchmarks/zeroshot/openclipart.py
writes to data/openclipart.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
from run import base_params  # noqa: E402


def drcl(*args: str, cwd: Path) -> str:
    """One `drcl` command as a user types it; its output, or the benchmark stops."""
    done = subprocess.run([sys.executable, "-m", "drcl", *args], cwd=cwd, text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"drcl {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def train_and_evaluate(project: Path, modalities: list[str]) -> dict:
    for m in modalities:
        drcl("train", "--modality", m, cwd=project)
    drcl("evaluate", cwd=project)
    return json.loads((project / "metrics" / "eval.json").read_text())


def one_run(dataset: str, strategy: str, seed: int, trials: int) -> dict:
    raw = base_params(dataset)
    raw["seed"] = seed
    raw["tune"]["strategy"] = strategy
    raw["tune"]["trials"] = trials
    with tempfile.TemporaryDirectory(prefix="drcl-tune-") as tmp:
        project = Path(tmp)
        (project / "data").mkdir()
        for name in ("wikipedia", "openclipart"):  # the raw data the profiles name
            if (ROOT / "data" / name).exists():
                (project / "data" / name).symlink_to((ROOT / "data" / name).resolve())
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        if raw["data"]["source"] == "extracted":  # MiniLM text features, made as a user would
            drcl("extract", cwd=project)
        drcl("prepare", cwd=project)
        start = time.perf_counter()
        drcl("prior", cwd=project)
        prior_s = time.perf_counter() - start
        manifest = json.loads((project / "data" / "prepared" / "manifest.json").read_text())
        modalities = list(manifest["modalities"])
        start = time.perf_counter()
        defaults = train_and_evaluate(project, modalities)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        out = drcl("tune", cwd=project)
        tune_s = time.perf_counter() - start
        found = re.search(r"validation MAP@all ([0-9.]+) \(before: ([0-9.]+)\)", out)
        drcl("profile", "apply", "tune/best.yaml", cwd=project)
        tuned = train_and_evaluate(project, modalities)
        best = yaml.safe_load((project / "tune" / "best.yaml").read_text())
        states = [row.split(",")[2] for row in
                  (project / "tune" / "trials.csv").read_text().splitlines()[1:]]
    return {"dataset": dataset, "strategy": strategy, "seed": seed, "trials": trials,
            "val_defaults": float(found.group(2)), "val_tuned": float(found.group(1)),
            "test_defaults": defaults["map_all"]["mean"], "test_tuned": tuned["map_all"]["mean"],
            "seconds": {"prior": prior_s, "train_evaluate": train_s, "tune": tune_s},
            "trainings": len(states), "pruned": states.count("PRUNED"),
            "best": best["train"]["per_modality"]}


NAMES = {"uci_mfeat": "UCI Multiple Features", "wikipedia_lda": "Wikipedia SIFT+LDA",
         "wikipedia_minilm": "Wikipedia SIFT+MiniLM", "openclipart": "OpenClipArt"}


def report() -> str:
    """The markdown table of every result file: one row per (data set, strategy, seed)."""
    lines = ["| data set | strategy | seed | trials | trials run (pruned) | val MAP@all defaults "
             "-> tuned | test MAP@all defaults -> tuned | test gain | tuning time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("tune-*.json")):
        for r in sorted(json.loads(path.read_text()), key=lambda r: (r["strategy"], r["seed"])):
            lines.append(
                f"| {NAMES.get(r['dataset'], r['dataset'])} | {r['strategy']} | {r['seed']} | "
                f"{r['trials']} | {r['trainings']} ({r['pruned']}) | {r['val_defaults']:.4f} -> "
                f"{r['val_tuned']:.4f} | {r['test_defaults']:.4f} -> {r['test_tuned']:.4f} | "
                f"{r['test_tuned'] - r['test_defaults']:+.4f} | "
                f"{r['seconds']['tune'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:] == ["--report"]:
        print(report())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--strategies", nargs="+", default=["coordinate", "joint"],
                        choices=["coordinate", "joint"])
    args = parser.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tune-{args.dataset}.json"
    results = json.loads(path.read_text()) if path.is_file() else []
    for strategy in args.strategies:
        for seed in args.seeds:
            if any(r["strategy"] == strategy and r["seed"] == seed and r["trials"] == args.trials
                   for r in results):
                continue
            entry = one_run(args.dataset, strategy, seed, args.trials)
            # read again before writing: another run of this script may have added entries
            results = json.loads(path.read_text()) if path.is_file() else []
            results.append(entry)
            path.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{args.dataset} {strategy} seed {seed}: val {entry['val_defaults']:.4f} -> "
                  f"{entry['val_tuned']:.4f}, test {entry['test_defaults']:.4f} -> "
                  f"{entry['test_tuned']:.4f} ({entry['seconds']['tune']:.0f} s tuning)",
                  flush=True)


if __name__ == "__main__":
    main()
