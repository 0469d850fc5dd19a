"""The extract step: manifest -> checked items -> features (cached per item) -> data/extracted.

One function serves `drcl extract`, the DVC stage and any pipeline component. Every item is read
and checked before anything is embedded; bad items either stop the run (``on_error: fail``) or
are left out and listed in the report (``skip``). Nothing is written unless the whole step
succeeds, and the folder is replaced atomically.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drcl.atomic import atomic_path, write_json
from drcl.config import ExtractParams, Params, SplitRatios
from drcl.data.dataset import SPLITS
from drcl.errors import DrclError
from drcl.extract import EXTRACTED_DIR, FEATURES_FILE, REPORT_FILE
from drcl.extract.manifest import Item, ItemManifest, read_manifest

SHOWN = 4
"""How many offending rows an error line lists."""


@dataclass(frozen=True)
class Skipped:
    where: str
    modality: str
    id: str
    reason: str


@dataclass
class ExtractionReport:
    """What the step did; ``embedded`` and ``cached`` count computed and reused features."""

    name: str | None
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    embedded: int = 0
    cached: int = 0


@dataclass
class _Loaded:
    item: Item
    digest: str | None
    payload: Any
    labels: np.ndarray
    split: str | None = None


def extract_dataset(params: Params, *, out_dir: str | Path = EXTRACTED_DIR,
                    cache_dir: str | Path | None = None) -> ExtractionReport:
    """Step `extract`: turn the manifest's items into ``out_dir/features.npz`` and
    ``out_dir/extraction.json``.

    With ``extract.manifest`` null only the report (saying so) is written. ``seed`` and
    ``data.split`` assign the rows that have no split; ``device`` (auto: CUDA if any) runs the
    extractors.
    """
    seed, split, device = params.seed, params.data.split, params.device
    settings = params.extract
    if settings.manifest is None:
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            write_json(tmp / REPORT_FILE, {"name": None, "manifest": None})
        return ExtractionReport(name=None)
    from drcl.extract.extractors import make_extractor
    from drcl.runtime import compute_dtype, resolve_device

    manifest = read_manifest(settings.manifest, manifest_format=settings.manifest_format,
                             root=settings.root)
    name = settings.name or manifest.name
    classes = _classes(settings, manifest)
    chosen = choose_extractors(settings.extractors, manifest.items)
    resolved = resolve_device(device)
    dtype, torch_device = compute_dtype(params.precision, resolved), str(resolved)
    extractors = {m: make_extractor(e, image_size=settings.image_size,
                                    batch_size=settings.batch_size, device=torch_device,
                                    compute_dtype=dtype)
                  for m, e in chosen.items()}
    loaded, skipped = _load_items(manifest.items, extractors, classes)
    if skipped and settings.on_error == "fail":
        raise DrclError(_bad_items_line(skipped))
    lost = sorted({i.modality for i in manifest.items} - {e.item.modality for e in loaded})
    if lost:
        bad = [s for s in skipped if s.modality == lost[0]]
        raise DrclError(f"modality {lost[0]!r}: all {len(bad)} items are bad, nothing is left "
                        f"(first {bad[0].where}: {bad[0].reason})")
    groups = _assign_splits(loaded, split=split, seed=seed)
    report = ExtractionReport(name=name, skipped=skipped)
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(classes, dtype=np.str_)}
    for modality, items in groups.items():
        features = _features(items, extractors[modality], cache_dir, report)
        report.dims[modality] = int(features.shape[1])
        report.sizes[modality] = {}
        for part in SPLITS:
            rows = [i for i, it in enumerate(items) if it.split == part]
            arrays[f"{modality}.{part}.features"] = features[rows]
            arrays[f"{modality}.{part}.labels"] = np.stack([items[i].labels for i in rows])
            arrays[f"{modality}.{part}.ids"] = np.asarray([items[i].item.id for i in rows],
                                                          dtype=np.str_)
            report.sizes[modality][part] = len(rows)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        with (tmp / FEATURES_FILE).open("wb") as fh:
            np.savez(fh, **arrays)
        write_json(tmp / REPORT_FILE, _report_json(settings, report, classes, chosen))
    return report


def items_digest(settings: ExtractParams) -> str:
    """sha256 over what the step reads: every manifest row and the bytes of every file it names
    (the key of an extraction run where those files lie outside any store); no manifest: the
    empty digest. Costs one read of the files, a fraction of embedding them."""
    import hashlib

    digest = hashlib.sha256()
    if settings.manifest is None:
        return digest.hexdigest()
    manifest = read_manifest(settings.manifest, manifest_format=settings.manifest_format,
                             root=settings.root)
    for item in manifest.items:
        row = [item.id, item.modality, "|".join(item.labels), item.split or "", item.key or "",
               "" if item.row is None else str(item.row), item.text or ""]
        digest.update("\0".join(row).encode() + b"\0")
        if item.path is not None:
            try:
                with open(item.path, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        digest.update(block)
            except OSError as exc:  # extraction itself reports bad items row by row
                digest.update(f"unreadable: {exc.strerror}".encode())
        digest.update(b"\1")
    return digest.hexdigest()


def _classes(params: ExtractParams, manifest: ItemManifest) -> list[str]:
    """extract.classes, else the manifest format's own list, else every label seen, sorted."""
    if params.classes is not None:
        return list(params.classes)
    if manifest.classes is not None:
        return manifest.classes
    return sorted({label for item in manifest.items for label in item.labels})


def choose_extractors(named: dict[str, str], items: list[Item]) -> dict[str, str]:
    """Each modality's extractor: the one extract.extractors names, else the one its items'
    kind calls for (item_kind), which must be the same for all of them."""
    chosen: dict[str, str] = {}
    by_modality: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_modality[item.modality].append(item)
    for modality, group in by_modality.items():
        if modality in named:
            chosen[modality] = named[modality]
            continue
        kinds: dict[str | None, list[Item]] = defaultdict(list)
        for item in group:
            kinds[item_kind(item)].append(item)
        if None in kinds:
            raise DrclError(f"modality {modality!r}: cannot tell which extractor suits "
                            f"{_rows(kinds[None])}; name one in extract.extractors.{modality}")
        if len(kinds) > 1:
            shown = "; ".join(f"{kind} for {_rows(rows[:2])}" for kind, rows in kinds.items())
            raise DrclError(f"modality {modality!r}: its items call for different extractors "
                            f"({shown}); name one in extract.extractors.{modality}")
        chosen[modality] = next(iter(kinds))  # type: ignore[assignment]
    return chosen


TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".xml"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
ARRAY_SUFFIXES = frozenset({".npy", ".npz", ".mat"})


def item_kind(item: Item) -> str | None:
    """The extractor an item's own form calls for, or None when its form says nothing."""
    if item.text is not None:
        return "minilm"
    suffix = item.path.suffix.lower() if item.path is not None else ""
    if item.key is not None or item.row is not None or suffix in ARRAY_SUFFIXES:
        return "precomputed"
    if suffix in TEXT_SUFFIXES:
        return "minilm"
    if suffix in IMAGE_SUFFIXES:
        return "efficientnet_lite0"
    return None


def _rows(items: list[Item]) -> str:
    shown = ", ".join(f"{i.where} (id {i.id!r})" for i in items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _bad_items_line(skipped: list[Skipped]) -> str:
    shown = "; ".join(f"{s.where} ({s.modality} {s.id!r}): {s.reason}" for s in skipped[:SHOWN])
    more = f"; and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
    return (f"{len(skipped)} bad item(s): {shown}{more}; fix them, or set extract.on_error: skip "
            "to leave them out")


def _load_items(items: list[Item], extractors: dict[str, Any],
                classes: list[str]) -> tuple[list[_Loaded], list[Skipped]]:
    from drcl.extract.extractors import ItemError

    index = {name: k for k, name in enumerate(classes)}
    loaded, skipped = [], []
    for item in _progress(items, "checking items"):
        try:
            unknown = [label for label in item.labels if label not in index]
            if not item.labels:
                raise ItemError("no label")
            if unknown:
                raise ItemError(f"label {unknown[0]!r} is not in the class list")
            digest, payload = extractors[item.modality].load(item)
        except ItemError as exc:
            skipped.append(Skipped(item.where, item.modality, item.id, str(exc)))
            continue
        labels = np.zeros(len(classes), dtype=np.uint8)
        labels[[index[label] for label in item.labels]] = 1
        loaded.append(_Loaded(item, digest, payload, labels, item.split))
    return loaded, skipped


def _assign_splits(loaded: list[_Loaded], *, split: SplitRatios,
                   seed: int) -> dict[str, list[_Loaded]]:
    """Give every row a split, then group the rows by modality.

    Rows that share an id are one item seen in several modalities, so they share a split: the
    one a row gives, or one drawn for the whole item. Items without a split are split stratified
    by their first label, separately for each set of modalities they appear in, so the split of
    an unpaired modality does not depend on the others.
    """
    from drcl.data.splits import label_strata, stratified_split
    from drcl.runtime import stage_seed

    by_id: dict[str, list[_Loaded]] = defaultdict(list)
    for entry in loaded:
        by_id[entry.item.id].append(entry)
    open_items: dict[tuple[str, ...], list[list[_Loaded]]] = defaultdict(list)
    for item_id, rows in by_id.items():
        given = {e.split for e in rows if e.split is not None}
        if len(given) > 1:
            shown = ", ".join(f"{e.item.where} ({e.item.modality}: {e.split})" for e in rows
                              if e.split is not None)
            raise DrclError(f"id {item_id!r} names one item in several modalities but has "
                            f"different splits ({shown}); give its rows one split")
        if given:
            for entry in rows:
                entry.split = next(iter(given))
        else:
            open_items[tuple(sorted(e.item.modality for e in rows))].append(rows)
    for modalities, items in open_items.items():
        strata = label_strata(np.stack([rows[0].labels for rows in items]))
        chosen = stratified_split(strata, fractions=split.model_dump(),
                                  seed=stage_seed(seed, "extract", *modalities))
        for part, picked in chosen.items():
            for index in picked:
                for entry in items[index]:
                    entry.split = part
    groups: dict[str, list[_Loaded]] = defaultdict(list)
    for entry in loaded:
        groups[entry.item.modality].append(entry)
    for modality, entries in groups.items():
        for part in SPLITS:
            if not any(e.split == part for e in entries):
                raise DrclError(f"modality {modality!r}: no item in the {part} split (of "
                                f"{len(entries)} usable items); give more items or splits")
    return dict(groups)


def _features(items: list[_Loaded], extractor: Any, cache_dir: str | Path | None,
              report: ExtractionReport) -> np.ndarray:
    """Cached features where the cache has them; the rest embedded in batches and cached."""
    from drcl.extract.cache import FeatureCache

    if extractor.fingerprint is None:
        vectors = [e.payload for e in items]
    else:
        cache = FeatureCache(cache_dir, extractor.fingerprint)
        vectors = [cache.get(e.digest) for e in items]
        todo = [i for i, v in enumerate(vectors) if v is None]
        report.cached += len(items) - len(todo)
        report.embedded += len(todo)
        batch = max(extractor.batch_size, 1)
        bar = _progress(None, f"{items[0].item.modality}: {extractor.name}", total=len(todo))
        for start in range(0, len(todo), batch):
            rows = todo[start:start + batch]
            computed = extractor.embed([items[i].payload for i in rows])
            for i, vector in zip(rows, computed, strict=True):
                cache.put(items[i].digest, vector)
                vectors[i] = vector
            bar.update(len(rows))
        bar.close()
    odd = next((i for i, v in enumerate(vectors) if v.shape != vectors[0].shape), None)
    if odd is not None:
        first, other = items[0].item, items[odd].item
        raise DrclError(f"modality {first.modality!r}: {vectors[0].shape[0]} features at "
                        f"{first.where} but {vectors[odd].shape[0]} at {other.where}; "
                        "one width per modality")
    return np.stack(vectors).astype(np.float32, copy=False)


def _progress(items: Any, desc: str, total: int | None = None) -> Any:
    """A progress bar on a terminal, silent in logs and tests."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit="item", disable=None, leave=False)


def _report_json(params: ExtractParams, report: ExtractionReport, classes: list[str],
                 extractors: dict[str, str]) -> dict[str, Any]:
    """Only what the inputs determine (no cache counts), so a re-run writes the same file."""
    return {
        "name": report.name,
        "manifest": str(params.manifest),
        "manifest_format": params.manifest_format,
        "classes": classes,
        "extractors": {m: extractors[m] for m in report.sizes},
        "image_size": params.image_size,
        "dims": report.dims,
        "sizes": report.sizes,
        "skipped": [vars(s) for s in report.skipped],
    }
