"""Read a manifest: one row per raw item, as CSV or JSONL, or the Wikipedia release's own lists.

Columns (CSV header) or keys (JSONL objects):

- ``id`` and ``modality`` (required): ``(modality, id)`` is unique;
- ``label`` (one class name) or ``labels`` (several: a JSON list, or names joined by ``|``);
- ``path`` (a file; relative paths start at ``extract.root``, else at the manifest's folder) or
  ``text`` (the text itself, for text items);
- ``key`` and ``row`` (optional): for precomputed features, the array in the file at ``path``
  (.npz/.mat variable) and the row of it holding this item;
- ``split`` (optional): train, val or test; rows without one are split stratified by seed.

Problems with the manifest itself (a missing column, a duplicate id, a bad split name) stop the
step at once; problems with one item's content are the extract step's to judge (extract.on_error).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drcl.data.dataset import SPLITS
from drcl.data.validate import MODALITY_NAME
from drcl.errors import DrclError

REQUIRED = ("id", "modality")
OPTIONAL = ("label", "labels", "path", "text", "key", "row", "split")
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class Item:
    """One raw item; ``where`` is its place in the manifest (``file:line``) for messages."""

    where: str
    id: str
    modality: str
    labels: tuple[str, ...]
    split: str | None = None
    path: Path | None = None
    text: str | None = None
    key: str | None = None
    row: int | None = None


@dataclass(frozen=True)
class ItemManifest:
    """The items of a manifest, with the class names when the manifest's format names them."""

    name: str
    items: list[Item]
    classes: list[str] | None = None


def read_manifest(path: str | Path, *, manifest_format: str = "auto",
                  root: str | Path | None = None) -> ItemManifest:
    """Parse the manifest at ``path`` in ``manifest_format`` (auto: by the file's extension)."""
    path = Path(path)
    fmt = manifest_format
    if fmt == "auto":
        fmt = {".csv": "csv", ".jsonl": "jsonl"}.get(path.suffix.lower(), "")
        if not fmt:
            raise DrclError(f"{path}: cannot tell the manifest format from the extension; use "
                            ".csv or .jsonl, or set extract.manifest_format")
    if fmt == "wikipedia_svcl":
        return _wikipedia_svcl(path)
    if not path.is_file():
        raise DrclError(f"{path}: manifest not found")
    base = Path(root) if root is not None else path.parent
    rows = _csv_rows(path) if fmt == "csv" else _jsonl_rows(path)
    items = [_item(fields, where, base) for where, fields in rows]
    if not items:
        raise DrclError(f"{path}: the manifest lists no items")
    _check_unique(items)
    return ItemManifest(name=path.stem, items=items)


def _csv_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            _check_columns(path, reader.fieldnames or [])
            rows = []
            for fields in reader:
                if None in fields:  # more cells than header columns
                    raise DrclError(f"{path}:{reader.line_num}: more cells than the header has "
                                    "columns")
                rows.append((f"{path}:{reader.line_num}", fields))
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DrclError(f"{path}: not a readable UTF-8 CSV file ({exc})") from None


def _jsonl_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DrclError(f"{path}: not a UTF-8 text file ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DrclError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(fields, dict):
            raise DrclError(f"{path}:{number}: expected a JSON object, found "
                            f"{type(fields).__name__}")
        _check_columns(path, list(fields), where=f"{path}:{number}")
        rows.append((f"{path}:{number}", fields))
    return rows


def _check_columns(path: Path, names: list[str], *, where: str | None = None) -> None:
    where = where or f"{path}: header"
    unknown = [n for n in names if n not in REQUIRED + OPTIONAL]
    missing = [n for n in REQUIRED if n not in names]
    if "label" not in names and "labels" not in names:
        missing.append("label or labels")
    if unknown or missing:
        problem = "; ".join(p for p in (
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(map(repr, unknown))}" if unknown else "") if p)
        raise DrclError(f"{where}: {problem}; columns are {', '.join(REQUIRED)} and optionally "
                        f"{', '.join(OPTIONAL)}")


def _text(fields: dict[str, Any], name: str, where: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str | int):
        raise DrclError(f"{where}: {name} must be a string, found {type(value).__name__}")
    value = str(value)
    return value if value.strip() or name == "text" else None


def _item(fields: dict[str, Any], where: str, base: Path) -> Item:
    item_id, modality = (_text(fields, n, where) for n in REQUIRED)
    if item_id is None or modality is None:
        raise DrclError(f"{where}: id and modality must not be empty")
    if not MODALITY_NAME.fullmatch(modality):
        raise DrclError(f"{where}: modality {modality!r} must use only letters, digits, '_' "
                        "and '-'")
    split = _text(fields, "split", where)
    if split is not None and split not in SPLITS:
        raise DrclError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)} (or empty)")
    path, text = _text(fields, "path", where), _text(fields, "text", where)
    if path is not None and text:
        raise DrclError(f"{where}: give a path or a text, not both")
    if path is None and text is None:
        raise DrclError(f"{where}: give a path (a file) or a text")
    if path is not None:
        text = None
    row = _text(fields, "row", where)
    if row is not None and not row.strip().isdigit():
        raise DrclError(f"{where}: row must be a whole number >= 0, found {row!r}")
    return Item(where=where, id=item_id.strip(), modality=modality, labels=_labels(fields, where),
                split=split, path=base / path if path is not None else None, text=text,
                key=_text(fields, "key", where), row=int(row) if row is not None else None)


def _labels(fields: dict[str, Any], where: str) -> tuple[str, ...]:
    raw = fields.get("labels", fields.get("label"))
    if isinstance(raw, list):
        names = [str(x).strip() for x in raw]
    elif isinstance(raw, str | int):
        names = [n.strip() for n in str(raw).split(LABEL_SEPARATOR)] if "labels" in fields \
            else [str(raw).strip()]
    else:
        names = []
    return tuple(n for n in names if n)


def _check_unique(items: list[Item]) -> None:
    counts = Counter((i.modality, i.id) for i in items)
    repeated = [i for i in items if counts[(i.modality, i.id)] > 1]
    if repeated:
        shown = ", ".join(f"{i.where} ({i.modality} {i.id!r})" for i in repeated[:4])
        raise DrclError(f"duplicate item ids in a modality: {shown}"
                        + (f" and {len(repeated) - 4} more" if len(repeated) > 4 else ""))


def _wikipedia_svcl(root: Path) -> ItemManifest:
    """The release folder as a manifest: SIFT rows of raw_features.mat as precomputed image
    items, the raw article texts as text items, the protocol's split and the .list labels."""
    from drcl.data.sources import wikipedia_svcl as wiki

    if not (root / "categories.list").is_file():
        raise DrclError(f"extract.manifest: {root} is not the Wikipedia release folder (no "
                        "categories.list there); link the release there (README, \"Ready "
                        "data sets: profiles\")")
    classes = wiki.read_categories(root)
    items = []
    for split, suffix in (("train", "tr"), ("test", "te")):
        listing = root / wiki.LISTS[split]
        for i, pair in enumerate(wiki.read_pairs(root, split, len(classes))):
            part = split if split == "train" else ("val" if i < wiki.VALIDATION_ROWS else "test")
            where, label = f"{listing}:{i + 1}", (classes[pair.category - 1],)
            # one id for the pair: the article section, which the image illustrates
            items.append(Item(where=where, id=pair.text_id, modality="image", labels=label,
                              split=part, path=root / wiki.FEATURES, key=f"I_{suffix}", row=i))
            items.append(Item(where=where, id=pair.text_id, modality="text", labels=label,
                              split=part, path=wiki.text_path(root, pair)))
    return ItemManifest(name="wikipedia", items=items, classes=classes)
