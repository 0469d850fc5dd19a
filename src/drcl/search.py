"""Retrieval with the champion encoders: embed queries and a database, return the top k.

`drcl index` embeds a database once into an index file (drcl.vector_index: exact search up to
a measured size, an approximate faiss index chosen by a recall target above it); the index
records which champion encoder made it and is refused once the champions have moved on. Items
are added and removed by id without a rebuild. A plain features file is embedded and searched
exactly, on the fly.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from drcl import vector_index
from drcl.array_files import load_npy, load_npz
from drcl.config import Params
from drcl.data.dataset import file_sha256
from drcl.errors import DrclError
from drcl.model import Encoder, embed
from drcl.registry import EncoderSet, LoadedMember, Registry
from drcl.rerank import Rerank, augment_database, expand_with
from drcl.runtime import compute_dtype, resolve_device
from drcl.serving.schema import Match

if TYPE_CHECKING:
    from drcl.extract.manifest import Item

LEGACY_FORMAT = "drcl-index/1"  # plain embeddings in an .npz, still read


@dataclass(frozen=True)
class Features:
    """Rows to embed, with an id per row (the row number when the file names none)."""

    values: np.ndarray
    ids: list[str]
    source: Path


def read_features(path: Path, *, key: str = "features") -> Features:
    """A `.npy` matrix, or the array `key` of a `.npz` file, with ids from the array beside it
    (`ids` for `features`, `test.ids` for a prepared data set's `test.features`)."""
    if not path.is_file():
        raise DrclError(f"{path}: no such features file")
    ids = None
    if path.suffix == ".npy":
        values = load_npy(path, what="a features file")
    elif path.suffix == ".npz":
        ids_key = key.removesuffix("features") + "ids" if key.endswith("features") else "ids"
        names, arrays = load_npz(path, [key, ids_key], what="a features file")
        if key not in arrays:
            raise DrclError(f"{path}: no array {key!r}; it has {sorted(names)}")
        values = arrays[key]
        ids = [str(i) for i in arrays[ids_key]] if ids_key in arrays else None
    else:
        raise DrclError(f"{path}: features must be a .npy or .npz file")
    if values.ndim != 2 or values.shape[0] == 0 or not np.issubdtype(values.dtype, np.number):
        raise DrclError(f"{path}: features must be a non-empty numeric (rows, width) matrix, "
                        f"got {values.dtype} {values.shape}")
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise DrclError(f"{path}: features contain NaN or infinite values")
    if ids is not None and len(ids) != values.shape[0]:
        raise DrclError(f"{path}: {len(ids)} ids for {values.shape[0]} rows")
    return Features(values, ids or [str(i) for i in range(values.shape[0])], path)


def read_raw(path: Path, *, modality: str, extractor: str, params: Params,
             device: torch.device) -> Features:
    """Raw items through the extractor the champion encoder expects: a text file (one item a
    line) or a folder of files (images), so queries need not be extracted beforehand."""
    if extractor == "precomputed":
        raise DrclError(f"{path}: the champion {modality} encoder takes precomputed features; "
                        "give a .npy or .npz file without --raw")
    from drcl.extract.manifest import Item

    if path.is_dir():
        items = [Item(where=str(f), id=f.name, modality=modality, labels=(), path=f)
                 for f in sorted(path.iterdir()) if f.is_file()]
    elif path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DrclError(f"{path}: not a readable UTF-8 text file ({exc})") from None
        items = [Item(where=f"{path}:{n}", id=str(n), modality=modality, labels=(), text=line)
                 for n, line in enumerate(lines, 1) if line.strip()]  # ids: line numbers
    else:
        raise DrclError(f"{path}: no such file or folder")
    if not items:
        raise DrclError(f"{path}: no items to search with")
    values = extract_raw(items, extractor=extractor, device=device,
                         dtype=compute_dtype(params.precision, device),
                         image_size=params.extract.image_size,
                         batch_size=params.extract.batch_size)
    return Features(values, [item.id for item in items], path)


def extract_raw(items: list[Item], *, extractor: str, device: torch.device,
                dtype: torch.dtype | None, image_size: int | None = None,
                batch_size: int | None = None) -> np.ndarray:
    """Features of raw items (image files, texts) by the named extractor; an item it cannot
    read is an error naming the item."""
    from drcl.config import ExtractParams
    from drcl.extract.extractors import ItemError, make_extractor

    defaults = ExtractParams()
    chosen = make_extractor(extractor, image_size=image_size or defaults.image_size,
                            batch_size=batch_size or defaults.batch_size, device=str(device),
                            compute_dtype=dtype)
    payloads = []
    for item in items:
        try:
            payloads.append(chosen.load(item)[1])
        except ItemError as exc:
            raise DrclError(f"{item.where}: {exc}") from None
    return np.asarray(chosen.embed(payloads), dtype=np.float32)


@dataclass(frozen=True)
class Index:
    """A database embedded by one champion encoder, searchable (drcl.vector_index)."""

    vectors: vector_index.VectorIndex

    @property
    def meta(self) -> dict:
        return self.vectors.meta

    @property
    def ids(self) -> list[str]:
        return self.vectors.live_ids()


def check_width(loaded: LoadedMember, width: int, where: str) -> None:
    """Features must be as wide as the encoder's input."""
    encoder: Encoder = loaded.encoder
    if width != encoder.spec.input_dim:
        raise DrclError(f"{where}: {width}-d features, but the {loaded.member.modality} "
                        f"encoder ({loaded.member.describe()}) takes "
                        f"{encoder.spec.input_dim}-d {loaded.extractor} features")


def _embed_checked(loaded: LoadedMember, features: Features, device: torch.device) -> torch.Tensor:
    check_width(loaded, features.values.shape[1], str(features.source))
    return embed(loaded.encoder, features.values, device=device)


def _champions(params: Params, root: Path, modalities: list[str], dest: Path,
               device: torch.device) -> tuple[EncoderSet, dict[str, LoadedMember]]:
    registry = Registry.open(params, root)
    champion = registry.champion()
    if champion is None:
        raise DrclError(f"registry: {registry.set_model} has no champion yet; promote one with "
                        "`drcl promote`")
    return champion, registry.load_members(champion, dest, device=device, modalities=modalities,
                                           compute_dtype=compute_dtype(params.precision, device))


def build_index(params: Params, *, modality: str, features: Features, out: Path,
                queries: Features | None = None, query_modality: str | None = None,
                root: Path = Path("."), log: Callable[[str], None] = lambda _: None) -> Index:
    """Embed a database once with the champion encoder of its modality; index it (exact, or
    approximate above `index.exact_max_items`, by params `index`) and write it to `out`. An
    approximate index's recall is measured on held-back database items, or on `queries` of
    `query_modality` (as the index will be asked: validation items, never test)."""
    if out.suffix != ".npz":
        raise DrclError(f"{out}: an index file is written as .npz")
    if (queries is None) != (query_modality is None):
        raise DrclError("index: give --queries with --query-modality, or neither")
    device = resolve_device(params.device)
    wanted = list(dict.fromkeys([modality, *([query_modality] if query_modality else [])]))
    with tempfile.TemporaryDirectory() as tmp:
        champion, loaded = _champions(params, root, wanted, Path(tmp), device)
        setting = Rerank.from_tags(champion.tags)
        check_width(loaded[modality], features.values.shape[1], str(features.source))
        if setting.dba_k:  # each item averaged with its neighbours: every embedding at once
            embeddings = augment_database(_embed_checked(loaded[modality], features, device)
                                          .cpu(), k=setting.dba_k, alpha=setting.alpha).numpy()
            chunks = vector_index.array_chunks(embeddings, features.ids)
        else:  # embedded a chunk at a time on each pass, never the whole matrix at once
            chunks = _embedded_chunks(loaded[modality].encoder, features, device)
        asked = None if queries is None else _embed_checked(
            loaded[query_modality], queries, device).cpu().numpy()
        weights_sha256 = file_sha256(loaded[modality].weights)
    member = loaded[modality].member
    meta = {"modality": modality, "model": member.model,
            "version": member.version, "set_version": champion.version,
            "prior_sha256": champion.prior_sha256,
            "weights_sha256": weights_sha256,
            "source": features.source.name,
            "source_sha256": file_sha256(features.source),
            "rerank": setting.as_dict()}  # the set's, chosen on validation: DBA applied here
    vectors = vector_index.build(chunks, n=len(features.ids),
                                 dim=loaded[modality].encoder.spec.common_dim,
                                 settings=vector_index.BuildSettings.from_params(
                                     params.index, params.seed), meta=meta,
                                 queries=asked, log=log)
    vectors.save(out)
    return Index(vectors)


def _embedded_chunks(encoder: Encoder, features: Features, device: torch.device,
                     size: int = 65536) -> vector_index.Chunks:
    def read() -> Iterator[tuple[np.ndarray, list[str]]]:
        for start in range(0, len(features.ids), size):
            yield (embed(encoder, features.values[start:start + size], device=device)
                   .cpu().numpy(), features.ids[start:start + size])
    return read


def update_index(params: Params, path: Path, *, add: Features | None = None,
                 remove: list[str] | None = None, root: Path = Path(".")) -> tuple[Index, int]:
    """Items added (embedded by the champion encoder that made the index) or removed by id,
    without a rebuild; the file is replaced atomically. Added items are augmented (DBA) by
    their neighbours in the index, as the index's setting says."""
    index = read_index(path)
    if index is None:
        raise DrclError(f"{path}: not an index; build one with `drcl index`")
    before = index.vectors.size
    if remove:
        index.vectors.remove(remove)
    if add is not None:
        device = resolve_device(params.device)
        modality = index.meta["modality"]
        with tempfile.TemporaryDirectory() as tmp:
            champion, loaded = _champions(params, root, [modality], Path(tmp), device)
            _check_current(path, index, champion)
            new = _embed_checked(loaded[modality], add, device).cpu().float()
        setting = Rerank.from_dict(index.meta.get("rerank"))
        if setting.dba_k and index.vectors.size:
            new = torch.nn.functional.normalize(new, dim=1)
            scores, _, vectors = index.vectors.search_and_reconstruct(new.numpy(), setting.dba_k)
            new = expand_with(new, torch.from_numpy(scores), torch.from_numpy(vectors),
                              setting.alpha)
        index.vectors.add(new.numpy(), add.ids)
    index.vectors.save(path)
    return index, index.vectors.size - before


def read_index(path: Path) -> Index | None:
    """The index in `path` (this format or the earlier one of plain embeddings, searched
    exactly), or None when the file is a plain features file."""
    if path.suffix != ".npz" or not path.is_file():
        return None
    vectors = vector_index.VectorIndex.load(path)
    if vectors is not None:
        return Index(vectors)
    names, arrays = load_npz(path, ["meta", "embeddings", "ids"], what="an index or features")
    if "meta" not in arrays:
        return None
    try:
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != LEGACY_FORMAT:
            raise DrclError(f"{path}: index format {meta.get('format')!r}, expected "
                            f"{vector_index.FORMAT!r}; rebuild it with `drcl index`")
        embeddings, ids = arrays["embeddings"], [str(i) for i in arrays["ids"]]
    except (ValueError, KeyError, AttributeError) as exc:
        raise DrclError(f"{path}: not a readable index ({exc!r}); rebuild it with "
                        "`drcl index`") from None
    if embeddings.ndim != 2 or len(ids) != embeddings.shape[0]:
        raise DrclError(f"{path}: {len(ids)} ids for embeddings of shape {embeddings.shape}; "
                        "rebuild it with `drcl index`")
    return Index(vector_index.flat_index(embeddings, ids, meta))


def ranked_in(indexes: Sequence[vector_index.VectorIndex], queries: torch.Tensor,
              setting: Rerank, *, k: int, device: torch.device | None = None
              ) -> list[list[tuple[str, float]]]:
    """The top k (id, score) for each query over one index or several shards of one (each
    searched, the answers merged by score, ties in shard order), each query expanded first
    (aQE, by the index's re-ranking setting) with its best matches over every shard; the
    scores are the expanded queries' inner products."""
    q = queries.detach().float().cpu()
    for index in indexes:
        index.check_width(q.shape[1], "query")
    filled = [index for index in indexes if index.size]
    if setting.qe_k and filled:
        q = torch.nn.functional.normalize(q, dim=1)
        parts = []
        for index in filled:
            scores, _, vectors = index.search_and_reconstruct(q.numpy(), setting.qe_k,
                                                              device=device)
            parts.append((scores, vectors))
        q = expanded_over(q, parts, setting)
    per_shard = []
    for index in filled:
        scores, slots = index.search(q.numpy(), k, device=device)
        per_shard.append([[(index.id_of(j), float(sc)) for j, sc in zip(
            row_j.tolist(), row_s.tolist(), strict=True) if j >= 0]
            for row_s, row_j in zip(scores, slots, strict=True)])
    return merged(per_shard, k, len(q))


def expanded_over(q: torch.Tensor, parts: Sequence[tuple[np.ndarray, np.ndarray]],
                  setting: Rerank) -> torch.Tensor:
    """aQE over shards: each unit query moved towards its best `qe_k` matches over every
    shard's (scores, vectors) of shapes (n, m) and (n, m, d)."""
    scores = np.concatenate([part[0] for part in parts], axis=1)
    vectors = np.concatenate([part[1] for part in parts], axis=1)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :setting.qe_k]
    return expand_with(q, torch.from_numpy(np.take_along_axis(scores, best, 1)),
                       torch.from_numpy(np.take_along_axis(vectors, best[..., None], 1)),
                       setting.alpha)


def merged(per_shard: Sequence[list[list[tuple[str, float]]]], k: int, n: int
           ) -> list[list[tuple[str, float]]]:
    """Each of n queries' top k over the shards' answers, by score (ties in shard order)."""
    if not per_shard:
        return [[] for _ in range(n)]
    if len(per_shard) == 1:
        return per_shard[0]
    return [sorted(itertools.chain.from_iterable(rows), key=lambda m: -m[1])[:k]
            for rows in zip(*per_shard, strict=True)]


@dataclass(frozen=True)
class SearchResult:
    """Per query: its id and the top k database (id, score), best first."""

    query_modality: str
    database_modality: str
    set_version: str
    matches: list[tuple[str, list[tuple[str, float]]]]

    def to_json(self) -> str:
        return json.dumps({
            "query_modality": self.query_modality, "database_modality": self.database_modality,
            "champion_set": self.set_version,
            "results": [{"query": q, "matches": [
                Match(rank=r, id=i, score=round(s, 6)).model_dump()
                for r, (i, s) in enumerate(found, 1)]} for q, found in self.matches]}, indent=2)

    def to_table(self) -> str:
        rows = [(q, str(r), i, f"{s:.4f}") for q, found in self.matches
                for r, (i, s) in enumerate(found, 1)]
        header = ("query", "rank", "id", "score")
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                         for row in (header, *rows))


CLASS_QUERY = "class"
"""The query modality of class-text queries: the semantic prior's class space."""


def class_queries(prior_path: Path, texts: list[str], *, device: torch.device) -> torch.Tensor:
    """Class columns as queries (unit rows): a class of the set by its name (its stored text
    is used), or any new class by a text of its own, through the semantic prior's isometry, so
    a class added after training needs no retraining."""
    from drcl.extract.class_texts import embed_class_texts
    from drcl.semantics import class_columns
    from drcl.tensor_files import load_tensors

    tensors, meta = load_tensors(prior_path, what="prior file")
    if "projection" not in tensors:
        raise DrclError(f"--class-text: the champion set's prior is {meta.get('method', '?')!r}; "
                        "only prior.method: semantic places a class by its text")
    stored = dict(zip(json.loads(meta["all_classes"]), json.loads(meta["class_texts"]),
                      strict=True))
    embedded = embed_class_texts([stored.get(t, t) for t in texts], device=str(device))
    return class_columns(torch.from_numpy(embedded), tensors["projection"]).T.contiguous()


def search(params: Params, *, query_modality: str | None, queries: Path | None,
           database: Path | Sequence[Path], database_modality: str | None = None,
           key: str = "features", k: int = 10, raw: bool = False, root: Path = Path("."),
           class_texts: list[str] | None = None) -> SearchResult:
    """Top k of `database` (an index from `drcl index`, several indexes as shards of one
    database, or features) for each query; `queries` holds features, or raw items for the
    champion encoder's extractor when `raw`; or the queries are classes, named or described
    (`class_texts`, a semantic prior's set)."""
    if k < 1:
        raise DrclError(f"--top-k must be at least 1, got {k}")
    if (class_texts is None) == (queries is None or query_modality is None):
        raise DrclError("search: give --query-modality and --queries, or --class-text")
    if class_texts is not None:
        query_modality = CLASS_QUERY
    device = resolve_device(params.device)
    paths = [database] if isinstance(database, Path) else list(database)
    shards = [(path, read_index(path)) for path in paths]
    for path, index in shards:
        if index is None and len(paths) > 1:
            raise DrclError(f"{path}: plain features cannot be a shard; build an index of "
                            "each shard with `drcl index`")
        if index is not None:
            if database_modality not in (None, index.meta["modality"]):
                raise DrclError(f"{path}: an index of {index.meta['modality']!r}, not "
                                f"{database_modality!r}")
            database_modality = index.meta["modality"]
    indexed = shards[0][1] is not None
    if not indexed and database_modality is None:
        raise DrclError(f"{paths[0]}: plain features: name their modality with "
                        "--database-modality (or build an index with `drcl index`)")
    wanted = [query_modality] if indexed else [query_modality, database_modality]
    wanted = [m for m in wanted if m != CLASS_QUERY]
    with tempfile.TemporaryDirectory() as tmp:
        champion, loaded = _champions(params, root, list(dict.fromkeys(wanted)), Path(tmp),
                                      device)
        if indexed:
            for path, index in shards:
                _check_current(path, index, champion)
            indexes = [index for _, index in shards]
        else:
            db_features = read_features(paths[0], key=key)
            indexes = [Index(vector_index.flat_index(
                _embed_checked(loaded[database_modality], db_features, device).cpu().numpy(),
                db_features.ids))]
        if class_texts is not None:
            registry = Registry.open(params, root)
            (Path(tmp) / "prior").mkdir()
            q = class_queries(registry.prior_of(champion, Path(tmp) / "prior"), class_texts,
                              device=device)
            query_ids = list(class_texts)
        else:
            asker = loaded[query_modality]
            query = read_raw(queries, modality=query_modality, extractor=asker.extractor,
                             params=params, device=device) if raw else read_features(queries,
                                                                                     key=key)
            q, query_ids = _embed_checked(asker, query, device), query.ids
    found = ranked_in([index.vectors for index in indexes], q,
                      Rerank.from_dict(indexes[0].meta.get("rerank")), k=k, device=device)
    matches = list(zip(query_ids, found, strict=True))
    return SearchResult(query_modality, database_modality, champion.version, matches)


def _check_current(path: Path, index: Index, champion: EncoderSet) -> None:
    """An index is valid only for the champion encoder that made it."""
    member = champion.members.get(index.meta["modality"])
    made_by = f"{index.meta['model']} v{index.meta['version']}"
    if member is None or (member.model, member.version) != (index.meta["model"],
                                                            index.meta["version"]):
        now = "none" if member is None else f"{member.model} v{member.version}"
        raise DrclError(f"{path}: built with {made_by}, but the champion is {now}; rebuild it "
                        "with `drcl index`")
