"""One deployment beside shard deployments behind a router: a command, not a test.

    python benchmarks/speed/shards.py [--database 200000] [--shards 2] [--requests 100]

In a scratch folder, the set of benchmarks/speed/serving.py (untrained encoders of the default
shape, a synthetic text database) with exact indexes (`index.kind: flat`): `drcl index` over
the whole database, and over each of --shards parts split by id range. Then on 127.0.0.1, one
worker each: `drcl serve` holding the whole index, and --shards `drcl serve` processes (each
its part under the same name in its own index_root) behind a router (`drcl serve` with model
config `shards`). Each is asked by one client, one request at a time: p50/p99 latency for one
query and for a batch, the answers compared, and the resident memory of every server. All
servers share this machine's cores, so the figures show what the router's exchange costs, not
what separate machines gain. Results go to benchmarks/speed/shards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent


def answers(port: int, body: bytes) -> list[list[str]]:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return [[m["id"] for m in a["matches"]] for a in json.loads(response.read())["predictions"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "shards.json")
    args = parser.parse_args()

    from benchmarks.speed.serving import register, served, tree_rss_mb
    from tests.services import free_ports, running

    work = Path(tempfile.mkdtemp(prefix="drcl-shards-"))
    try:
        tracking = f"sqlite:///{work / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking,
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        os.environ["MLFLOW_TRACKING_URI"] = tracking
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["index"] = {**params.get("index", {}), "kind": "flat"}
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        register(work, tracking)
        rng = np.random.default_rng(0)
        features = rng.normal(size=(args.database, 64)).astype(np.float32)
        ids = np.asarray([f"text-{i}" for i in range(args.database)])
        parts = np.array_split(np.arange(args.database), args.shards)
        folders = {"whole": (work / "whole", slice(None))}
        for n, part in enumerate(parts):
            folders[f"shard-{n}"] = (work / f"shard-{n}", slice(part[0], part[-1] + 1))
        for folder, rows in folders.values():
            folder.mkdir()
            np.savez(work / "part.npz", features=features[rows], ids=ids[rows])
            subprocess.run([BIN / "drcl", "index", "-m", "text", "--features", "part.npz",
                            "--out", str(folder / "db.npz")], cwd=work, env=env, check=True,
                           capture_output=True)
        queries = rng.normal(size=(args.batch, 76)).astype(np.float32)
        asked = [{"modality": "image", "features": q.tolist(), "id": str(i)}
                 for i, q in enumerate(queries)]
        request = {"database": "db.npz", "top_k": args.k}
        singles = [json.dumps({"inputs": [q], "params": request}).encode() for q in asked]
        batch = json.dumps({"inputs": asked, "params": request}).encode()
        results: dict[str, object] = {"database": args.database, "shards": args.shards,
                                      "dim": 512, "k": args.k, "batch": args.batch,
                                      "cpus": os.cpu_count(), "index": "flat"}
        names = [*folders, "router"]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        shard_urls = [f"http://127.0.0.1:{ports[n]}" for n in folders if n != "whole"]
        with ExitStack() as stack:
            procs = {}
            for name in names:
                config = ({"shards": shard_urls} if name == "router"
                          else {"index_root": str(folders[name][0])})
                procs[name] = stack.enter_context(running(
                    [str(BIN / "drcl"), "serve", "-m", "models:/drcl-set@champion", "--port",
                     str(ports[name])], health=f"http://127.0.0.1:{ports[name]}/ping",
                    cwd=work, env={**env, "MLFLOW_PYFUNC_INFERENCE_CONFIG": json.dumps(config)},
                    log=work / f"{name}.log", timeout=300))
            for name in ("whole", "router"):
                port = ports[name]
                served(port, singles[:3], 3)  # warm: every index read once
                results[f"{name}_one"] = served(port, singles, args.requests)
                results[f"{name}_batch"] = served(port, [batch], max(5, args.requests // 10))
                print(name, results[f"{name}_one"], results[f"{name}_batch"], flush=True)
            results["same_answers"] = answers(ports["whole"], batch) == answers(
                ports["router"], batch)
            results["rss_mb"] = {name: round(tree_rss_mb(proc.pid), 1)
                                 for name, proc in procs.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:14} {value}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
