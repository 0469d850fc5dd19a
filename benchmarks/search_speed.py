"""Latency of one query and throughput of a batch against a large database: a command, not a test.

    python benchmarks/search_speed.py [--database 100000] [--dim 512] [--batch 1000] [--k 10]
                                      [--input-dim 76] [--device auto] [--threads N]

The database is synthetic unit-length embeddings, as an index from `drcl index` holds; queries
are raw features embedded by an encoder of the default shape (as `drcl search` does), then ranked
with the same chunked top-k. Loading the index file, which `drcl search` does once per call, is
timed apart. Times are medians over repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from drcl.model import Encoder, EncoderSpec, embed
from drcl.nearest import top_k
from drcl.runtime import resolve_device


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512, help="common_dim of the embeddings")
    parser.add_argument("--hidden-dim", type=int, default=1024)
    parser.add_argument("--input-dim", type=int, default=76, help="query feature width")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)
    database = torch.nn.functional.normalize(torch.randn(args.database, args.dim, generator=gen),
                                             dim=1)
    encoder = Encoder(EncoderSpec("query", args.input_dim, args.hidden_dim, args.dim)).to(device)
    one = np.random.default_rng(0).normal(size=(1, args.input_dim)).astype(np.float32)
    batch = np.random.default_rng(1).normal(size=(args.batch, args.input_dim)).astype(np.float32)
    if device.type == "cuda":
        database = database.to(device)

    def search(features: np.ndarray) -> None:
        top_k(embed(encoder, features, device=device), database, k=args.k, device=device)

    single = median_seconds(lambda: search(one), args.repeats, device)
    many = median_seconds(lambda: search(batch), max(3, args.repeats // 5), device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.npz"
        np.savez(path, embeddings=database.cpu().numpy(),
                 ids=np.asarray([str(i) for i in range(args.database)]))

        def load() -> None:
            with np.load(path, allow_pickle=False) as npz:
                npz["embeddings"], npz["ids"]

        load_s = median_seconds(load, 3, torch.device("cpu"))
    print(f"device {device}, torch threads {torch.get_num_threads()}, database "
          f"{args.database} x {args.dim}, k {args.k}")
    print(f"one query:      {single * 1000:8.1f} ms")
    print(f"batch of {args.batch}: {many:8.3f} s = {args.batch / many:,.0f} queries/s")
    print(f"index load:     {load_s:8.3f} s (once per `drcl search` call)")


if __name__ == "__main__":
    main()
