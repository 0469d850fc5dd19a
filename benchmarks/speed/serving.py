"""The champion set served by `mlflow models serve`, beside `drcl search`: a command, not a test.

    python benchmarks/speed/serving.py [--database 100000] [--requests 200] [--batch 100]

In a scratch folder: two encoders of the default shape (image queries of 76-d features, a text
database of 64-d features), registered and promoted as a set in a sqlite registry; `drcl index`
embeds a synthetic database of that many texts. Then, against that index:
- `mlflow models serve -m models:/drcl-set@champion` (one worker) on 127.0.0.1, asked by one
  client over a kept-alive connection, one request at a time: requests per second and p50/p99
  latency, for one query per request and for a batch of queries per request;
- the same model loaded in the process (`mlflow.pyfunc.load_model`), `predict` alone;
- `drcl search` as a user runs it, a new process per call (it loads the champions and reads the
  index every time), for one query and for the batch;
- under load: 32 clients at once (threads, each on its own kept-alive connection, one query per
  request) for --load-seconds against `drcl serve` (1 and 2 workers) and `mlflow models serve`:
  requests per second, p50/p99, answers that differ from `drcl search --format json` on the
  same queries, 5xx answers, and the server's peak resident memory (all its processes).
Results go to benchmarks/speed/serving.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent


def register(folder: Path, tracking: str) -> None:
    """A promoted set of two freshly initialised encoders of one orthogonal prior."""
    import torch
    from mlflow import MlflowClient

    from drcl.data.dataset import file_sha256
    from drcl.model import Encoder, EncoderSpec, save_encoder
    from drcl.prior_io import prior_checksum, save_prior
    from drcl.registry import Registry
    from drcl.tracking import experiment_id

    torch.manual_seed(0)
    prior = torch.linalg.qr(torch.randn(512, 10))[0]
    save_prior(prior, folder / "prior.safetensors")
    sha = prior_checksum(prior)
    client = MlflowClient(tracking)
    registry = Registry(client, "drcl")
    run = client.create_run(experiment_id(client, "benchmark")).info.run_id
    members, weights = {}, {}
    for modality, width in (("image", 76), ("text", 64)):
        path = folder / f"{modality}.safetensors"
        save_encoder(Encoder(EncoderSpec(modality, width, 1024, 512)), path, prior_sha256=sha)
        weights[modality] = path
        info = {"modality": modality, "input_dim": width, "extractor": "precomputed",
                "prior_sha256": sha}
        members[modality] = registry.register_encoder(
            run, modality=modality, encoder=path, prior=folder / "prior.safetensors", info=info,
            tags={"drcl.weights_sha256": file_sha256(path), "drcl.extractor": "precomputed",
                  "drcl.prior_sha256": sha})
    made = registry.create_set(run, prior=folder / "prior.safetensors", prior_sha256=sha,
                               members=members, member_priors=dict.fromkeys(members, sha),
                               weights=weights, extractors=dict.fromkeys(members, "precomputed"),
                               record={}, tags={})
    with registry.locked(30):
        registry.commit(made.version, action="promote", expected=None, reason="benchmark")
    client.set_terminated(run)


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
            "requests_per_s": len(times) / sum(times)}


def served(port: int, bodies: list[bytes], requests: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times = []
    for i in range(requests + 3):  # three to warm up
        start = time.perf_counter()
        conn.request("POST", "/invocations", body=bodies[i % len(bodies)],
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(payload[:500])
        if i >= 3:
            times.append(time.perf_counter() - start)
    conn.close()
    return percentiles(times)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (the server's workers), in MB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("VmRSS:"))
        todo += [int(c) for c in children]
    return total / 1024


def under_load(port: int, pid: int, bodies: list[bytes], expected: list[list[str]],
               clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads asking one query per request for `seconds`; every answer checked."""
    times: list[float] = []
    failures = {"status_5xx": 0, "other_status": 0, "wrong_answers": 0}
    peak = [0.0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i = n
        while time.monotonic() < stop:
            start = time.perf_counter()
            conn.request("POST", "/invocations", body=bodies[i % len(bodies)],
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            took = time.perf_counter() - start
            with lock:
                if response.status >= 500:
                    failures["status_5xx"] += 1
                elif response.status != 200:
                    failures["other_status"] += 1
                else:
                    (answer,) = json.loads(payload)["predictions"]
                    if [m["id"] for m in answer["matches"]] != expected[i % len(bodies)]:
                        failures["wrong_answers"] += 1
                    times.append(took)
            i += clients
        conn.close()

    def sample() -> None:
        while time.monotonic() < stop:
            peak[0] = max(peak[0], tree_rss_mb(pid))
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    threads.append(threading.Thread(target=sample))
    begun = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begun
    ordered = sorted(times)
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(times),
            "requests_per_s": len(times) / elapsed,
            "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[round(0.99 * (len(ordered) - 1))],
            "peak_rss_mb": peak[0], **failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cli-repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=HERE / "serving.json")
    args = parser.parse_args()

    import mlflow

    from tests.services import free_ports, running

    work = Path(tempfile.mkdtemp(prefix="drcl-serving-"))
    try:
        tracking = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
        os.environ["MLFLOW_TRACKING_URI"] = tracking
        shutil.copy(ROOT / "params.yaml", work / "params.yaml")
        register(work, tracking)
        rng = np.random.default_rng(0)
        np.savez(work / "texts.npz", features=rng.normal(size=(args.database, 64)).astype(
            np.float32), ids=np.asarray([f"text-{i}" for i in range(args.database)]))
        subprocess.run([BIN / "drcl", "index", "-m", "text", "--features", "texts.npz", "--out",
                        "index.npz"], cwd=work, env=env, check=True, capture_output=True)
        queries = rng.normal(size=(args.batch, 76)).astype(np.float32)
        np.save(work / "one.npy", queries[:1])
        np.save(work / "batch.npy", queries)
        asked = [{"modality": "image", "features": q.tolist(), "id": str(i)}
                 for i, q in enumerate(queries)]
        params = {"database": str(work / "index.npz"), "top_k": args.k}
        singles = [json.dumps({"inputs": [q], "params": params}).encode() for q in asked]
        batch = [json.dumps({"inputs": asked, "params": params}).encode()]
        results: dict[str, object] = {"database": args.database, "dim": 512, "k": args.k,
                                      "batch": args.batch, "cpus": os.cpu_count()}

        model = mlflow.pyfunc.load_model("models:/drcl-set@champion",
                                         model_config={"index_root": str(work)})
        for name, request, repeats in (("one", asked[:1], args.requests),
                                       ("batch", asked, max(10, args.requests // 10))):
            model.predict(request, params=params)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.predict(request, params=params)
                times.append(time.perf_counter() - start)
            results[f"predict_{name}"] = percentiles(times)
        del model

        (port,) = free_ports(1)
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/drcl-set@champion",
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        start = time.perf_counter()
        with running(cmd, health=f"http://127.0.0.1:{port}/ping", cwd=work, env=env,
                     log=work / "serve.log", timeout=180):
            results["serve_ready_s"] = time.perf_counter() - start
            results["served_one"] = served(port, singles, args.requests)
            results["served_batch"] = served(port, batch, max(10, args.requests // 10))

        # the answers `drcl search` gives, to check every answer under load against
        searched = json.loads(subprocess.run(
            [BIN / "drcl", "search", "-q", "image", "--queries", "batch.npy", "--database",
             "index.npz", "-k", str(args.k), "--format", "json"], cwd=work, env=env, check=True,
            capture_output=True, text=True).stdout)
        expected = [[m["id"] for m in answer["matches"]] for answer in searched["results"]]
        servers = {
            "drcl_serve_1_worker": [str(BIN / "drcl"), "serve", "--workers", "1"],
            "drcl_serve_2_workers": [str(BIN / "drcl"), "serve", "--workers", "2"],
            "mlflow_models_serve": [str(BIN / "mlflow"), "models", "serve", "--env-manager",
                                    "local", "--host", "127.0.0.1"],
        }
        for name, cmd in servers.items():
            (port,) = free_ports(1)
            cmd = [*cmd, "-m", "models:/drcl-set@champion", "--port", str(port)]
            with running(cmd, health=f"http://127.0.0.1:{port}/ping", cwd=work, env=env,
                         log=work / f"{name}.log", timeout=180) as proc:
                served(port, singles[:5], 5)  # warm: the index is read once
                results[f"load_{name}"] = under_load(port, proc.pid, singles, expected,
                                                     args.clients, args.load_seconds)
                print(name, results[f"load_{name}"], flush=True)

        for name, file in (("one", "one.npy"), ("batch", "batch.npy")):
            times = []
            for _ in range(args.cli_repeats):
                start = time.perf_counter()
                subprocess.run([BIN / "drcl", "search", "-q", "image", "--queries", file,
                                "--database", "index.npz", "-k", str(args.k), "--format",
                                "json"], cwd=work, env=env, check=True, capture_output=True)
                times.append(time.perf_counter() - start)
            results[f"drcl_search_{name}"] = percentiles(times)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:16} {value}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
