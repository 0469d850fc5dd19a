"""Wall time of `dvc repro` on the default data set, split by stage.

    python benchmarks/speed/pipeline.py [--json out.json]

Runs `dvc repro --force dvc.yaml` in the repository (every stage re-runs; the outputs are
deterministic, so they come out the same) and times each stage from the moment DVC announces
it to the next announcement (the last one ends when DVC exits, so it includes DVC's final
bookkeeping).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANNOUNCE = re.compile(r"Running stage '([^']+)'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the timings to this file")
    args = parser.parse_args()
    bin_dir = str(Path(sys.executable).parent)  # the stages call `drcl` from this environment
    env = dict(os.environ, PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]))
    dvc = shutil.which("dvc", path=bin_dir) or "dvc"
    start = time.perf_counter()
    marks: list[tuple[str, float]] = [("(dvc start-up)", 0.0)]
    with subprocess.Popen([dvc, "repro", "--force", "dvc.yaml"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = ANNOUNCE.search(line)
            if found:
                marks.append((found.group(1), time.perf_counter() - start))
    total = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"dvc repro failed with exit code {proc.returncode}")
    rows = [(name, (marks[i + 1][1] if i + 1 < len(marks) else total) - at)
            for i, (name, at) in enumerate(marks)]
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.2f}")
    print("| stage | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **total** | **{total:.1f}** |")
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": dict(rows), "total": total}, indent=1))


if __name__ == "__main__":
    main()
