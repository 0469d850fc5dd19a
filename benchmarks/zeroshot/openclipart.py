"""An extract manifest of OpenClipArt: each drawing's PNG and its title and keywords, classed by
its top-level folder. A data-building command for the zero-shot benchmark, not a test.

    apt-get download openclipart-png openclipart-svg
    dpkg-deb -x openclipart-png_*.deb ROOT && dpkg-deb -x openclipart-svg_*.deb ROOT
    python benchmarks/zeroshot/openclipart.py ROOT [--out data/openclipart] [--per-class 120]

ROOT holds usr/share/openclipart/{png,svg}. A drawing becomes an image item (its PNG) and a text
item (its SVG's title and keywords) under one id. Keywords that repeat the class name, and the
packagers' placeholders ("unsorted", "clip art"), are removed, so the text does not name its
class outright. Folders with fewer than `--min-class` drawings and the catch-all folders
(unsorted, special) are left out; two folders hold half the drawings, so each class keeps at most
`--per-class`, drawn with `--seed`. A drawing's id is its file name; a PNG larger than Pillow
decodes is left out. Writes OUT/manifest.csv and
OUT/classes.txt.
"""

from __future__ import annotations

import argparse
import csv
import re
import warnings
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

NS = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
      "dc": "http://purl.org/dc/elements/1.1/", "cc": "http://web.resource.org/cc/"}
LEFT_OUT = {"unsorted", "special"}
PLACEHOLDERS = {"unsorted", "clip art", "clipart", "image", "media", "public domain", "svg", "png",
                "openclipart", "externalsource"}


def metadata(svg: Path) -> tuple[str, list[str]]:
    """The drawing's title and keywords (dc:subject; not its author's name), empty when
    unreadable."""
    try:
        root = ElementTree.parse(svg).getroot()
    except (ElementTree.ParseError, OSError):
        return "", []
    work = root.find(".//cc:Work", NS)
    if work is None:
        return "", []
    title = (work.findtext("dc:title", default="", namespaces=NS) or "").strip()
    author = (work.findtext("dc:creator//dc:title", default="", namespaces=NS) or "").lower()
    keywords = [(li.text or "").strip() for li in work.findall("dc:subject//rdf:li", NS)]
    return title, [k for k in keywords if k and k.lower() != author.strip()]


def class_words(name: str) -> set[str]:
    """'signs_and_symbols' -> {sign, signs, symbol, symbols}: what a keyword may not repeat."""
    words = {w for w in re.split(r"[_\W]+", name.lower()) if w and w != "and"}
    return words | {w.rstrip("s") for w in words} | {w + "s" for w in words}


def item_text(title: str, keywords: list[str], label: str) -> str:
    banned = class_words(label)
    kept = [k for k in keywords if k.lower() not in PLACEHOLDERS
            and not set(re.split(r"\W+", k.lower())) & banned]
    return ". ".join(part for part in (title, ", ".join(dict.fromkeys(kept))) if part)


def too_large(png: Path) -> bool:
    """A few posters pass the pixel count at which Pillow warns of a decompression bomb (twice
    it, and the extractor refuses them; below that they take seconds and gigabytes each): they
    are left out here."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(png):  # reads the header only
                return False
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            return True


def collect(root: Path) -> dict[str, list[tuple[str, Path, str]]]:
    """Per class folder: (id, png, text) of every drawing with a readable text. A drawing filed
    in several folders of one class counts once; one filed under two classes is left out."""
    png_root = root / "usr/share/openclipart/png"
    svg_root = root / "usr/share/openclipart/svg"
    by_name: dict[str, list[Path]] = defaultdict(list)
    for png in sorted(png_root.rglob("*.png")):
        by_name[png.stem].append(png)
    found: dict[str, list[tuple[str, Path, str]]] = defaultdict(list)
    for name, copies in sorted(by_name.items()):
        relative = copies[0].relative_to(png_root)
        labels = {c.relative_to(png_root).parts[0] for c in copies}
        label = relative.parts[0]
        if len(labels) > 1 or len(relative.parts) < 2 or label in LEFT_OUT:
            continue
        if too_large(copies[0]):
            continue
        title, keywords = metadata((svg_root / relative).with_suffix(".svg"))
        text = item_text(title, keywords, label)
        if text:
            found[label].append((name, copies[0], text))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=Path("data/openclipart"))
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--min-class", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    found = collect(args.root)
    rng = np.random.default_rng(args.seed)
    classes = sorted(c for c, items in found.items() if len(items) >= args.min_class)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = 0
    with (args.out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "modality", "label", "path", "text"])
        for label in classes:
            items = found[label]
            chosen = sorted(rng.choice(len(items), min(len(items), args.per_class),
                                       replace=False))
            for i in chosen:
                item_id, png, text = items[i]
                writer.writerow([item_id, "image", label, png.resolve().as_posix(), ""])
                writer.writerow([item_id, "text", label, "", text])
                rows += 1
    (args.out / "classes.txt").write_text("\n".join(classes) + "\n")
    counts = ", ".join(f"{c} {min(len(found[c]), args.per_class)}" for c in classes)
    print(f"{rows} drawings in {len(classes)} classes ({counts}) -> {args.out / 'manifest.csv'}")


if __name__ == "__main__":
    main()
