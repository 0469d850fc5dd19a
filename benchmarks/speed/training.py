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

Each stage runs in every --precisions setting (float32 and bf16 autocast by default), beside a
reference: one RSC epoch written the way the authors' code runs it (a NumPy permutation per
epoch, a fresh tensor per batch copied from host memory, the loss read back every step; the same
model, losses, mixup and optimiser, in float32). Standardisation is off, so the preprocessing
probe of `model.standardize: auto` does not enter the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from drcl.config import Params, parse_params
from drcl.data.dataset import ModalityData, Split
from drcl.losses import gce_q, rsc_loss
from drcl.model import Encoder, EncoderSpec
from drcl.prior import learn_candidate, orthogonal_init
from drcl.runtime import resolve_device
from drcl.train import mix, prior_pseudo_inverse, train_encoder


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


def authors_style_rsc(data: ModalityData, prior: torch.Tensor, params: Params,
                      device: torch.device) -> float:
    """One RSC epoch and its validation pass, the authors' way; returns the validation loss."""
    cfg = params.train
    spec = EncoderSpec("img", data.dim, params.model.hidden_dim, params.model.common_dim)
    encoder = Encoder(spec).to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    w, w_pinv = prior.to(device), prior_pseudo_inverse(prior).to(device)
    gen = torch.Generator().manual_seed(0)
    args = dict(q=gce_q(1), alpha=cfg.alpha, beta=cfg.beta, use_mrr=True,
                mse_reduction=cfg.mse_reduction)
    x, y = data.train.features, data.train.labels
    order = np.random.permutation(len(x))
    losses = []
    encoder.train()
    for start in range(0, len(x), cfg.batch_size):
        rows = order[start:start + cfg.batch_size]
        xb, yb = torch.tensor(x[rows]).to(device), torch.tensor(y[rows]).to(device)
        f, yb = mix(encoder(xb), yb, weight=cfg.mixup.g, generator=gen)
        loss = rsc_loss(f, yb, w, w_pinv, **args)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(loss.total.item())
    encoder.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(data.val.features), cfg.batch_size):
            xb = torch.tensor(data.val.features[start:start + cfg.batch_size]).to(device)
            yb = torch.tensor(data.val.labels[start:start + cfg.batch_size]).to(device)
            total += rsc_loss(encoder(xb), yb, w, w_pinv, **args).total.item() * len(xb)
    return total / len(data.val.features)


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
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "tf32", "bf16", "auto"])
    args = parser.parse_args()

    device = resolve_device(args.device)

    def params(precision: str) -> Params:
        return parse_params({
            "device": args.device, "precision": precision, "tracking": {"enabled": False},
            "model": {"hidden_dim": args.hidden_dim, "common_dim": args.common_dim,
                      "standardize": False},
            "train": {"epochs": 1, "batch_size": args.batch_size},
        }, source="benchmark", num_classes=args.classes)

    prior = orthogonal_init(args.common_dim, args.classes, seed=0)
    warm = modality(args.warmup_samples, args.warmup_samples, args.input_dim, args.classes)
    data = modality(args.samples, args.val_samples, args.input_dim, args.classes)
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"device {device}, threads {torch.get_num_threads()}")
    print(f"# {args.samples} samples x {args.input_dim}-d, {args.classes} classes, widths "
          f"{args.hidden_dim}/{args.common_dim}, batch {args.batch_size}")
    print("| stage | precision | samples | seconds | samples/s | vs float32 | vs the authors' "
          "loop | load 1m |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [("RSC, the authors' loop", "fp32",
             lambda d: authors_style_rsc(d, prior, params("fp32"), device))]
    for precision in args.precisions:
        p = params(precision)
        runs += [("RSC (train_encoder)", precision,
                  lambda d, p=p: train_encoder(d, prior, params=p, device=device)),
                 ("SPL (learn_candidate)", precision,
                  lambda d, p=p: learn_candidate(d, prior, params=p, device=device))]
    first: dict[str, float] = {}  # each stage's first setting (float32 by default)
    for name, precision, run in runs:
        run(warm)
        seconds = timed(lambda run=run: run(data), device)
        first.setdefault(name, seconds)
        authors = (f"{first[runs[0][0]] / seconds:.2f}x" if name.startswith("RSC") else "–")
        print(f"| {name} | {precision} | {args.samples} | {seconds:.2f} | "
              f"{args.samples / seconds:.0f} | {first[name] / seconds:.2f}x | {authors} | "
              f"{os.getloadavg()[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
