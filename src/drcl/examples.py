"""Small example data sets that README.md's walk-throughs run on, made on the spot.

`drcl example scene` writes a feature file in the `.npz` format ("Your own data"): three views
of four scene classes, two of them paired by item ids. `drcl example raw` writes raw items and a
manifest ("Raw images and texts"): photos of handwritten-looking digits, a caption for each,
and a second picture of each digit (a scan: light on dark, another size) as a third modality,
all under the same ids. Both are drawn from a seed, so a walk-through gives the same numbers on
every machine.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from drcl.atomic import atomic_path
from drcl.errors import DrclError

SCENE_CLASSES = ["beach", "city", "forest", "snow"]
DIGITS = ["zero", "one", "two"]
CAPTIONS = ["a handwritten {} on a white card", "the digit {} written by hand",
            "a scanned {} from a form", "someone wrote the number {}"]


def write_scene(path: Path, *, seed: int = 0) -> Path:
    """Three views of a four-class scene data set: view0 and view1 share item ids (paired),
    view2 has items of its own; the views' scales differ by orders of magnitude."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(SCENE_CLASSES)}
    for view, dim, scale in (("view0", 12, 1.0), ("view1", 7, 50.0), ("view2", 9, 0.01)):
        centers = rng.normal(size=(len(SCENE_CLASSES), dim)) * 3
        for split, n in (("train", 80), ("val", 24), ("test", 24)):
            labels = np.arange(n) % len(SCENE_CLASSES)
            arrays[f"{view}.{split}.features"] = scale * (centers[labels]
                                                          + rng.normal(size=(n, dim)))
            arrays[f"{view}.{split}.labels"] = labels
            prefix = "scene" if view != "view2" else "extra"
            arrays[f"{view}.{split}.ids"] = np.asarray([f"{prefix}-{split}-{i}" for i in range(n)])
    _refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as out:
        np.savez(out, **arrays)
    return path


def write_raw(folder: Path, *, items: int = 60, seed: int = 0) -> list[str]:
    """Digit pictures (modalities `image` and `scan`) and captions (`text`) under shared ids,
    with `manifest.csv` as README.md describes it; returns the ids."""
    from PIL import Image, ImageDraw, ImageFont

    _refuse_existing(folder)
    rng = np.random.default_rng(seed)
    rows, ids = [], []
    with atomic_path(folder) as tmp:
        for kind in ("photos", "scans"):
            (tmp / kind).mkdir(parents=True)
        for i in range(items):
            label = DIGITS[i % len(DIGITS)]
            item = f"d{i:03d}"
            for kind, (ink, paper, size) in (("photos", (20, 245, 64)), ("scans", (235, 15, 48))):
                image = Image.new("L", (size, size), paper)
                font = ImageFont.load_default(size=int(size * rng.uniform(0.55, 0.8)))
                x, y = rng.uniform(0.15, 0.35, size=2) * size
                ImageDraw.Draw(image).text((x, y), str(DIGITS.index(label)), fill=ink, font=font,
                                           stroke_width=int(rng.integers(0, 3)), stroke_fill=ink)
                angle = float(rng.uniform(-20, 20))
                image.rotate(angle, fillcolor=paper).convert("RGB").save(
                    tmp / kind / f"{item}.png")
            caption = CAPTIONS[i % len(CAPTIONS)].format(label)
            rows += [{"id": item, "modality": "image", "labels": label,
                      "path": f"photos/{item}.png", "text": ""},
                     {"id": item, "modality": "text", "labels": label, "path": "",
                      "text": caption},
                     {"id": item, "modality": "scan", "labels": label,
                      "path": f"scans/{item}.png", "text": ""}]
            ids.append(item)
        with (tmp / "manifest.csv").open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["id", "modality", "labels", "path", "text"])
            writer.writeheader()
            writer.writerows(rows)
    return ids


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise DrclError(f"{path}: exists already; remove it or name another path")

