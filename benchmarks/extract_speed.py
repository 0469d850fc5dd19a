"""Throughput (items/s) of each extractor on this machine: a command, not a test.

    python benchmarks/extract_speed.py [--sizes 192 224] [--images 64] [--texts 256]
                                       [--wikipedia ../shared/data/wikipedia] [--device cpu]

Each extractor runs in float32 and in bf16 (the `precision` param); the table gives both rates,
their ratio, and how far bf16's features are from float32's (the lowest cosine over the items).

Images are scikit-learn's two sample photos, cropped at varied places so no two inputs are equal;
short texts are generated captions; long texts are Wikipedia articles when the release folder is
given. The model is loaded and warmed up before timing; decoding and resizing are timed with the
model, as the extract step pays for both; the fastest of --repeats passes counts. The cache is not
involved.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drcl.extract.extractors import EfficientNetLite0, MiniLM
from drcl.extract.manifest import read_manifest
from drcl.runtime import compute_dtype, resolve_device


def photos(folder: Path, count: int) -> list[Path]:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image = load_sample_images().images[i % 2]
        top, left = rng.integers(0, 80), rng.integers(0, 120)
        path = folder / f"photo{i}.jpg"
        Image.fromarray(image[top:top + 340, left:left + 500]).save(path, quality=90)
        paths.append(path)
    return paths


def captions(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    subjects = ["A dog", "Two children", "An old man", "A red car", "The orchestra", "A cook"]
    actions = ["runs across", "waits beside", "plays near", "drives past", "stands in front of"]
    places = ["a busy market", "the river bank", "a snowy field", "the city hall", "a garden"]
    return [f"{rng.choice(subjects)} {rng.choice(actions)} {rng.choice(places)} at {i} o'clock."
            for i in range(count)]


def rate(embed, payloads: list, batch: int, repeats: int) -> float:
    """Items/s of the fastest of ``repeats`` passes: other load on a shared machine only slows."""
    embed(payloads[:batch])  # warm-up: first-call allocations
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(payloads), batch):
            embed(payloads[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return len(payloads) / best


def compare(make, payloads: list, batch: int, repeats: int) -> str:
    """float32 and bf16 rates of one extractor, and the agreement of their features."""
    full, half = make(None), make(torch.bfloat16)
    a, b = full.embed(payloads), half.embed(payloads)
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    r32, r16 = (rate(e.embed, payloads, batch, repeats) for e in (full, half))
    return f"{len(payloads):>7}{r32:>10.1f}{r16:>10.1f}{r16 / r32:>8.2f}x{cos.min():>10.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 224])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--documents", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--wikipedia", type=Path, default=None,
                        help="the Wikipedia release folder, for long documents")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    resolved = resolve_device(args.device)
    device = str(resolved)
    compute_dtype("fp32", resolved)  # plain float32 matmuls for the float32 column (no TF32)
    print(f"device {device}; batch {args.batch}")
    print(f"{'extractor':<28}{'items':>7}{'fp32/s':>10}{'bf16/s':>10}{'ratio':>9}"
          f"{'min cos':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        images = photos(Path(tmp), args.images)
        for size in args.sizes:
            def net(dtype, size=size):
                return EfficientNetLite0(image_size=size, batch_size=args.batch, device=device,
                                         compute_dtype=dtype)
            print(f"{f'efficientnet_lite0 {size}px':<28}"
                  f"{compare(net, images, args.batch, args.repeats)}")

    def text(dtype):
        return MiniLM(batch_size=args.batch, device=device, compute_dtype=dtype)

    print(f"{'minilm, captions':<28}"
          f"{compare(text, captions(args.texts), args.batch, args.repeats)}")
    if args.wikipedia is not None:
        items = [i for i in read_manifest(args.wikipedia, manifest_format="wikipedia_svcl").items
                 if i.modality == "text"][:args.documents]
        docs = [text(None).load(i)[1] for i in items]
        words = np.mean([len(d.split()) for d in docs])
        print(f"{f'minilm, articles ~{words:.0f} words':<28}"
              f"{compare(text, docs, args.batch, args.repeats)}")


if __name__ == "__main__":
    main()
