"""MAP@all speed and peak memory: drcl's chunked ranking against the usual full-argsort loop.

    python benchmarks/speed/evaluation.py [--sizes 10000 50000] [--classes 10 200] [--dim 64]
                                          [--loop-max 10000] [--device cpu] [--repeat 3]

Each measurement runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own;
drcl's time is the fastest of --repeat runs in it, the loop's a single run;
torch allocations are invisible to tracemalloc. On CUDA the peak allocated device memory is
reported as well. The loop baseline is what retrieval papers' evaluation scripts usually do:
one full argsort of the whole query x database distance matrix, then a Python walk down every
ranked list adding precision at each relevant position (numpy's default argsort, so ties may
fall in any order; float32 scores of the synthetic data tie only now and then, and never
enough to move MAP by 1e-6). Its matrices grow as n^2 (a
50k x 50k problem needs about 10 GB for the float32 distances plus 20 GB for the int64
argsort), so it is run only up to --loop-max. Both sides get the same float32 unit embeddings
and must agree to 1e-6.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

TOLERANCE = 1e-6


def synthetic(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings around random class centres (so MAP is neither 0 nor 1), int labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    emb = centres[labels] + 1.5 * rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), labels


def problem(n: int, dim: int, classes: int) -> tuple[np.ndarray, ...]:
    """Queries and database drawn apart but around the same centres (same generator state)."""
    q, q_labels = synthetic(2 * n, dim, classes, seed=classes * 7919 + dim)
    return q[:n], q_labels[:n], q[n:], q_labels[n:]


def loop_map(query: np.ndarray, query_labels: np.ndarray, database: np.ndarray,
             database_labels: np.ndarray) -> float:
    """The usual research code: argsort the full distance matrix, walk each ranked list."""
    distances = 1.0 - query @ database.T  # cosine distance of unit vectors, n x n float32
    ranked = np.argsort(distances, axis=1)  # n x n int64, numpy's default sort as such code uses
    aps = []
    for i in range(query.shape[0]):
        order = ranked[i]
        hits, total = 0, 0.0
        for position in range(order.shape[0]):  # numpy element access, as such scripts do
            if query_labels[i] == database_labels[order[position]]:
                hits += 1
                total += hits / (position + 1)
        aps.append(total / hits if hits else 0.0)
    return float(np.mean(aps))


def drcl_map(query: np.ndarray, query_labels: np.ndarray, database: np.ndarray,
             database_labels: np.ndarray, classes: int, device: str) -> float:
    """drcl.metrics on one-hot labels, as the pipeline calls it."""
    from drcl.metrics import mean_average_precision

    eye = np.eye(classes, dtype=np.float32)
    q = torch.as_tensor(query, device=device)
    return mean_average_precision(q, eye[query_labels], database, eye[database_labels],
                                  device=device)


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    classes = args.classes[0]
    q, ql, db, dbl = problem(args.n, args.dim, classes)
    if args.device.startswith("cuda"):
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    before = max_rss_mib()
    if args.worker == "loop":
        start = time.perf_counter()
        value = loop_map(q, ql, db, dbl)
        seconds = time.perf_counter() - start
    else:  # the best of --repeat runs: the shared machine's noise only ever adds time
        seconds = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            value = drcl_map(q, ql, db, dbl, classes, args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = min(seconds, time.perf_counter() - start)
    out = {"impl": args.worker, "n": args.n, "classes": classes, "map": value,
           "seconds": seconds, "rss_before_mib": before, "peak_rss_mib": max_rss_mib(),
           "load_avg_1m": os.getloadavg()[0]}
    if args.device.startswith("cuda"):
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def measure(args: argparse.Namespace, impl: str, n: int, classes: int) -> dict:
    """Run one measurement in a subprocess, so peak memory is not shared between them."""
    cmd = [sys.executable, __file__, "--worker", impl, "--n", str(n), "--classes", str(classes),
           "--dim", str(args.dim), "--device", args.device, "--threads", str(args.threads),
           "--repeat", str(args.repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{impl} at n={n}, classes={classes} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000],
                        help="n for an n x n query x database problem")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--loop-max", type=int, default=10_000,
                        help="largest n the loop baseline runs at (its memory grows as n^2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (for drcl's side)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch default")
    parser.add_argument("--repeat", type=int, default=3,
                        help="drcl's runs per measurement, the fastest reported (the loop "
                             "runs once: it takes half a minute)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", choices=["drcl", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"device {args.device}, dim {args.dim}, load avg {os.getloadavg()[0]:.2f}")
    print("| n x n | classes | impl | MAP@all | seconds | peak RSS MiB | load 1m | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    rows, failed = [], False
    for n in args.sizes:
        for classes in args.classes:
            ours = measure(args, "drcl", n, classes)
            rows.append(ours)
            loop = measure(args, "loop", n, classes) if n <= args.loop_max else None
            speedup = ""
            if loop is not None:
                rows.append(loop)
                speedup = f"{loop['seconds'] / ours['seconds']:.0f}x"
                diff = abs(loop["map"] - ours["map"])
                failed |= diff > TOLERANCE
                loop["abs_diff"] = ours["abs_diff"] = diff
            for row in (ours, loop):
                if row is None:
                    continue
                cuda = f" (CUDA {row['peak_cuda_mib']:.0f})" if "peak_cuda_mib" in row else ""
                print(f"| {n} x {n} | {classes} | {row['impl']} | {row['map']:.8f} | "
                      f"{row['seconds']:.2f} | {row['peak_rss_mib']:.0f}{cuda} | "
                      f"{row['load_avg_1m']:.2f} | {speedup if row is ours else ''} |",
                      flush=True)
            if loop is not None:
                print(f"#   |MAP difference| = {loop['abs_diff']:.2e}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    if failed:
        sys.exit(f"MAP differs by more than {TOLERANCE} between the two implementations")


if __name__ == "__main__":
    main()
