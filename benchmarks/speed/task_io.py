"""Bytes each Kubeflow task reads and writes: measured on a local run, derived for XMediaNet.

    python benchmarks/speed/task_io.py [--params params.yaml]

Runs `drcl pipeline run --local` with the given params (the default data set unless they say
otherwise) in a scratch folder. Every task counts the bytes it fetched from the pipeline's store
and the bytes it stored there (drcl.kfp.store); the run's summary lists them per task. The same
accounting, with the sizes a data set of XMediaNet's shape would have (5 modalities x 32,000
items x 4096-d float32, about 2.6 GB, split 60/20/20; 200 classes; the method's 4096/2048
widths), gives the second table. Results go to benchmarks/speed/task_io.json.
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
SHARE = {"train": 0.6, "val": 0.2, "test": 0.2}


def measured(summary: dict) -> dict[str, dict[str, float]]:
    """Per task that ran: bytes fetched from the store and bytes it stored (prepare's source
    lies outside the store: the data set's remote, or the package for the default one)."""
    rows = {t["task"]: {"read": t["read"], "written": t["written"]} for t in summary["tasks"]}
    rows["promote"] = {"read": summary["outcome"]["store_read"], "written": 0}
    return rows


def xmedianet() -> dict[str, dict[str, float]]:
    """The same accounting at XMediaNet's size (features float32, labels int64, ids ~12
    bytes): each task reads the splits it uses (drcl.kfp.task_steps)."""
    modalities, items, dim, classes = 5, 32_000, 4096, 200
    hidden, common = 4096, 2048
    per_modality = items * (dim * 4 + 8 + 12)
    splits = {s: share * per_modality for s, share in SHARE.items()}
    dataset = modalities * per_modality
    prior = common * classes * 4
    encoder = 4 * (dim * hidden + hidden + hidden * hidden + hidden + hidden * common + 2 * dim)
    training = splits["train"] + splits["val"]
    out = {"prepare": {"read": dataset, "written": dataset},
           "prior": {"read": modalities * training, "written": prior}}
    for m in range(modalities):
        out[f"train@m{m + 1}"] = {"read": training + prior, "written": encoder}
    out["evaluate"] = {"read": modalities * (splits["test"] + encoder), "written": 0}
    out["promote"] = {"read": modalities * (splits["val"] + splits["test"] + encoder) + prior,
                      "written": 0}
    return out


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| task | reads (MB) | writes (MB) |", "|---|---|---|"]
    lines += [f"| {task} | {v['read'] / MB:,.2f} | {v['written'] / MB:,.2f} |"
              for task, v in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        done = subprocess.run([str(Path(sys.executable).parent / "drcl"), "pipeline", "run",
                               "--local", "-p", str(args.params.resolve()),
                               "--pipeline-root", f"{tmp}/runs"], cwd=tmp, env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        outputs = Path(done.stdout.splitlines()[-1].removeprefix("outputs in "))
        summary = json.loads(next(outputs.parent.glob("kfp/*/summary/report/summary.json"))
                             .read_text())
    results = {"default_data_set": measured(summary), "xmedianet_derived": xmedianet()}
    (HERE / "task_io.json").write_text(json.dumps(results, indent=2) + "\n")
    print("measured, default data set:\n" + table(results["default_data_set"]))
    print("\nderived, XMediaNet-sized:\n" + table(results["xmedianet_derived"]))


if __name__ == "__main__":
    main()
