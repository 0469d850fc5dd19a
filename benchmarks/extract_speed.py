"""Throughput (items/s) of each extractor on this machine: a command, not a test.

    python benchmarks/extract_speed.py [--sizes 192 224] [--images 64] [--texts 256]
                                       [--wikipedia ../shared/data/wikipedia] [--device cpu]

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
from PIL import Image

from drcl.extract.extractors import EfficientNetLite0, MiniLM
from drcl.extract.manifest import read_manifest
from drcl.runtime import resolve_device


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
    device = str(resolve_device(args.device))
    print(f"device {device}; batch {args.batch}")
    print(f"{'extractor':<28}{'items':>7}{'items/s':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        images = photos(Path(tmp), args.images)
        for size in args.sizes:
            net = EfficientNetLite0(image_size=size, batch_size=args.batch, device=device)
            print(f"{f'efficientnet_lite0 {size}px':<28}{len(images):>7}"
                  f"{rate(net.embed, images, args.batch, args.repeats):>10.1f}")
    text = MiniLM(batch_size=args.batch, device=device)
    short = captions(args.texts)
    print(f"{'minilm, captions':<28}{len(short):>7}"
          f"{rate(text.embed, short, args.batch, args.repeats):>10.1f}")
    if args.wikipedia is not None:
        items = [i for i in read_manifest(args.wikipedia, manifest_format="wikipedia_svcl").items
                 if i.modality == "text"][:args.documents]
        docs = [text.load(i)[1] for i in items]
        words = np.mean([len(d.split()) for d in docs])
        print(f"{f'minilm, articles ~{words:.0f} words':<28}{len(docs):>7}"
              f"{rate(text.embed, docs, args.batch, args.repeats):>10.1f}")


if __name__ == "__main__":
    main()
