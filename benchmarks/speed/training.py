"""Samples/s of one RSC epoch (drcl.train) and one SPL epoch (drcl.prior) at the method's widths.

    python benchmarks/speed/training.py [--samples 2048] [--input-dim 4096] [--classes 200]
                                        [--hidden-dim 4096] [--common-dim 2048] [--device auto]

XMediaNet-like synthetic data (4096-d features, 200 classes); the default widths are the method's
4096 hidden / 2048 common. An XMediaNet modality has 32k training samples, which a 2-core CPU
cannot run in reasonable time, so --samples defaults to 2048 and the figure is samples/s; a GPU
run can pass --samples 32000. Each figure is the wall time of one full call with epochs=1, so it
includes the per-run setup (input statistics, W's pseudo-inverse, copying the split to the
device) and the end-of-epoch pass (validation loss for RSC on --val-samples, the quality score
over the training split for SPL). A small run first warms the kernels up.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from drcl.config import parse_params
from drcl.data.dataset import ModalityData, Split
from drcl.prior import learn_candidate, orthogonal_init
from drcl.runtime import resolve_device
from drcl.train import train_encoder


def split(n: int, dim: int, classes: int, rng: np.random.Generator) -> Split:
    """Random features with a class signal and one-hot float32 labels, as ModalityData holds."""
    labels = rng.integers(0, classes, size=n)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    features = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32)
    return Split(features=features, labels=np.eye(classes, dtype=np.float32)[labels])


def modality(n_train: int, n_val: int, dim: int, classes: int) -> ModalityData:
    rng = np.random.default_rng(0)
    return ModalityData(name="img", train=split(n_train, dim, classes, rng),
                        val=split(n_val, dim, classes, rng), test=split(1, dim, classes, rng))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048, help="training samples per epoch")
    parser.add_argument("--val-samples", type=int, default=256)
    parser.add_argument("--input-dim", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--hidden-dim", type=int, default=4096)
    parser.add_argument("--common-dim", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup-samples", type=int, default=256)
    args = parser.parse_args()

    device = resolve_device(args.device)
    params = parse_params({
        "device": args.device, "tracking": {"enabled": False},
        "model": {"hidden_dim": args.hidden_dim, "common_dim": args.common_dim},
        "train": {"epochs": 1, "batch_size": args.batch_size},
    }, source="benchmark", num_classes=args.classes)
    prior = orthogonal_init(args.common_dim, args.classes, seed=0)
    warm = modality(args.warmup_samples, args.warmup_samples, args.input_dim, args.classes)
    data = modality(args.samples, args.val_samples, args.input_dim, args.classes)
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"device {device}, threads {torch.get_num_threads()}")
    print(f"# {args.samples} samples x {args.input_dim}-d, {args.classes} classes, widths "
          f"{args.hidden_dim}/{args.common_dim}, batch {args.batch_size}")
    print("| stage | samples | seconds | samples/s | load 1m |")
    print("|---|---|---|---|---|")
    for name, run in (
        ("RSC (train_encoder)", lambda d: train_encoder(d, prior, params=params, device=device)),
        ("SPL (learn_candidate)", lambda d: learn_candidate(d, prior, params=params,
                                                            device=device)),
    ):
        run(warm)
        seconds = timed(lambda run=run: run(data), device)
        print(f"| {name} | {args.samples} | {seconds:.2f} | {args.samples / seconds:.0f} | "
              f"{os.getloadavg()[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
