"""Nearest-neighbour indexes by faiss: exact below a measured size, approximate above it.

An approximate index is an inverted file (IVF: the database split into `nlist` cells by k-means,
a query scanning the `nprobe` nearest cells) over full, 8-bit or product-quantised codes. Its kind
and `nprobe` are chosen by a recall target: held-back queries (database items, each left out of
its own answer) are answered exactly and approximately, and the smallest kind reaching the target
at the fewest probes is kept. Every kind here can add and remove items by id without a rebuild,
which rules HNSW out as the top-level index (faiss cannot remove from it).

Items keep their string ids; faiss sees each item's slot in the id table. The file is a zip
(`.npz`: `meta.npy`, `ids.npy`, `index.faiss`), streamed in and out without a second copy in
memory, and replaced atomically.
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import torch

from drcl.atomic import atomic_path
from drcl.batching import progress
from drcl.config import IndexParams
from drcl.errors import DrclError
from drcl.nearest import top_k

FORMAT = "drcl-index/2"
FAISS_MEMBER = "index.faiss"
APPROXIMATE = ("ivf_pq", "ivf_sq8", "ivf_flat")  # smallest codes first
RECALL_K = 10
FLAT_FACTORY = "IDMap2,Flat"  # exact, removable by id
MIN_POINTS_PER_CENTROID = 39  # faiss's k-means asks for this many training points per cell
SCREEN_QUERIES = 200  # enough to tell a kind far below the target from one near it
PQ_CENTROIDS = 256  # 8-bit product quantisation: a codebook of 256 per sub-vector

Chunks = Callable[[], Iterable[tuple[np.ndarray, Sequence[str]]]]
"""A database read afresh each call, as (unit embeddings, ids) chunks in a fixed order."""


@dataclass(frozen=True)
class Layout:
    """An index's kind with its sizes, as faiss builds it."""

    kind: str
    nlist: int = 0
    pq_m: int = 0

    def describe(self) -> str:
        if self.kind == "flat":
            return "exact (flat, inner product)"
        codes = {"ivf_flat": "full", "ivf_sq8": "8-bit", "ivf_pq": f"PQ{self.pq_m}"}[self.kind]
        return f"IVF{self.nlist} with {codes} codes"


def default_nlist(n: int, train_sample: int) -> int:
    """About 4 sqrt(n) cells, a power of two from 64 to 4096, trainable from the sample."""
    wanted = 2 ** round(math.log2(max(64.0, 4 * math.sqrt(n))))
    trainable = 2 ** int(math.log2(max(1, min(n, train_sample) // MIN_POINTS_PER_CENTROID)))
    return int(max(1, min(wanted, 4096, trainable)))


def pq_subquantizers(dim: int) -> int:
    """Sub-vectors for 8-bit PQ: the largest divisor of `dim` at most dim / 8 (64 at 512)."""
    return next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)


def layout_for(kind: str, *, n: int, dim: int, nlist: int | None,
               train_sample: int) -> Layout:
    if kind == "flat":
        return Layout("flat")
    cells = nlist or default_nlist(n, train_sample)
    return Layout(kind, cells, pq_subquantizers(dim) if kind == "ivf_pq" else 0)


@dataclass
class VectorIndex:
    """A faiss index with the items' string ids (by slot) and what made it."""

    index: faiss.Index
    ids: np.ndarray  # UTF-8 bytes per slot; a removed item's slot is b""
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def layout(self) -> Layout:
        raw = self.meta.get("layout") or {"kind": "flat"}
        return Layout(raw["kind"], raw.get("nlist", 0), raw.get("pq_m", 0))

    @property
    def nprobe(self) -> int:
        return int(self.meta.get("nprobe", 1))

    def id_of(self, slot: int) -> str:
        return bytes(self.ids[slot]).decode("utf-8")

    def live_ids(self) -> list[str]:
        return [self.id_of(s) for s in np.flatnonzero(self.ids != b"")]

    def _params(self) -> faiss.SearchParameters | None:
        if self.layout.kind == "flat":
            return None
        return faiss.SearchParametersIVF(nprobe=self.nprobe)

    def check_width(self, width: int, where: str) -> None:
        if width != self.dim:
            raise DrclError(f"{where}: {width}-d queries, but the index holds {self.dim}-d "
                            "embeddings")

    def _flat_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """An exact index's stored matrix (a view, no copy) and each row's slot."""
        flat = faiss.downcast_index(self.index.index)
        matrix = faiss.rev_swig_ptr(flat.get_xb(), self.size * self.dim)
        return (matrix.reshape(self.size, self.dim),
                faiss.vector_to_array(self.index.id_map))

    def _exact(self, queries: np.ndarray, k: int, device: torch.device | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact search by drcl.nearest (GPU-capable; several times faster than faiss's flat
        search for batches on this project's CPUs, benchmarks/speed/RESULTS.md)."""
        matrix, slot_of = self._flat_rows()
        database = torch.from_numpy(matrix)
        scores, rows = top_k(torch.from_numpy(queries), database, k=k, device=device)
        rows = rows.numpy()
        return scores.numpy(), slot_of[rows], matrix[rows]

    def search(self, queries: np.ndarray, k: int, *, device: torch.device | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and slots of the top k (slot -1 past the database's end), best first, equal
        scores in slot order."""
        queries = self._queries(queries)
        k = max(1, min(k, self.size))
        if self.layout.kind == "flat":
            return self._exact(queries, k, device)[:2]
        scores, slots = self.index.search(queries, k, params=self._params())
        return _slot_order(scores, slots)

    def search_and_reconstruct(self, queries: np.ndarray, k: int, *,
                               device: torch.device | None = None
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The top k with their stored vectors (decoded: approximate for compressed codes)."""
        queries = self._queries(queries)
        k = max(1, min(k, self.size))
        if self.layout.kind == "flat":
            return self._exact(queries, k, device)
        return self.index.search_and_reconstruct(queries, k, params=self._params())

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.check_width(queries.shape[1], "search")
        if self.size == 0:
            raise DrclError("search: the index holds no items")
        return queries

    def add(self, embeddings: np.ndarray, ids: Sequence[str]) -> None:
        """New items, under ids the index does not hold yet."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.check_width(embeddings.shape[1], "add")
        encoded = _encode(ids)
        held = np.isin(encoded, self.ids)
        if held.any() or len(set(encoded.tolist())) < len(encoded):
            twice = ids[int(np.flatnonzero(held)[0])] if held.any() else _first_repeat(ids)
            raise DrclError(f"add: id {twice!r} is already in the index (or given twice); "
                            "remove it first to replace it")
        start = len(self.ids)
        self.ids = _concat_ids(self.ids, encoded)
        self.index.add_with_ids(embeddings, np.arange(start, start + len(encoded),
                                                      dtype=np.int64))

    def remove(self, ids: Sequence[str]) -> None:
        """Items out by id; every id must be there."""
        encoded = _encode(ids)
        order = np.argsort(self.ids)
        at = np.searchsorted(self.ids, encoded, sorter=order)
        at = np.minimum(at, len(order) - 1)
        slots = order[at]
        missing = self.ids[slots] != encoded
        if missing.any():
            raise DrclError(f"remove: id {ids[int(np.flatnonzero(missing)[0])]!r} is not in "
                            "the index")
        removed = self.index.remove_ids(np.asarray(slots, dtype=np.int64))
        if removed != len(set(slots.tolist())):
            raise DrclError(f"remove: faiss removed {removed} of {len(slots)} items")
        self.ids[slots] = b""

    def save(self, path: Path) -> None:
        """Write to `path` atomically: a reader sees the old index or the new, never half."""
        meta = {**self.meta, "format": FORMAT, "size": self.size, "dim": self.dim}
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                       allowZip64=True) as zf:
            with zf.open("meta.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(json.dumps(meta)))
            with zf.open("ids.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, self.ids)
            with zf.open(FAISS_MEMBER, "w", force_zip64=True) as fh:
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(fh.write))
        self.meta = meta

    @classmethod
    def load(cls, path: Path) -> VectorIndex | None:
        """The index in `path`; None for a zip that is not one (a features file)."""
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if FAISS_MEMBER not in names:
                    return None
                with zf.open("meta.npy") as fh:
                    meta = json.loads(str(np.lib.format.read_array(fh)))
                with zf.open("ids.npy") as fh:
                    ids = np.lib.format.read_array(fh)
                with zf.open(FAISS_MEMBER) as fh:
                    index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError, OSError) as exc:
            raise DrclError(f"{path}: not a readable index ({str(exc).splitlines()[0]}); "
                            "rebuild it with `drcl index`") from None
        if meta.get("format") != FORMAT:
            raise DrclError(f"{path}: index format {meta.get('format')!r}, expected "
                            f"{FORMAT!r}; rebuild it with `drcl index`")
        if ids.dtype.kind != "S" or int(index.ntotal) != int(np.count_nonzero(ids != b"")):
            raise DrclError(f"{path}: {np.count_nonzero(ids != b'')} ids for {index.ntotal} "
                            "items; rebuild it with `drcl index`")
        return cls(index, ids, meta)


def _encode(ids: Sequence[str]) -> np.ndarray:
    encoded = np.asarray([str(i).encode("utf-8") for i in ids], dtype=np.bytes_)
    if (encoded == b"").any():
        raise DrclError("ids: an empty id")
    return encoded


def _concat_ids(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    width = max(old.dtype.itemsize if len(old) else 1, new.dtype.itemsize if len(new) else 1)
    return np.concatenate([old.astype(f"S{width}"), new.astype(f"S{width}")])


def _first_repeat(ids: Sequence[str]) -> str:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return ""


def _slot_order(scores: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by score, best first, equal scores by slot (missing results last)."""
    key_slots = np.where(slots < 0, np.iinfo(np.int64).max, slots)
    order = np.lexsort((key_slots, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(slots, order, 1)


def flat_index(embeddings: np.ndarray, ids: Sequence[str], meta: dict | None = None
               ) -> VectorIndex:
    """Exact search over `embeddings` (inner product)."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.index_factory(embeddings.shape[1], FLAT_FACTORY,
                                faiss.METRIC_INNER_PRODUCT)
    built = VectorIndex(index, np.empty(0, dtype="S1"),
                        {**(meta or {}), "layout": {"kind": "flat"}, "nprobe": 1})
    built.add(embeddings, ids)
    return built


# --- choosing and building by a recall target ---------------------------------------------


@dataclass(frozen=True)
class BuildSettings:
    """What `drcl index` is asked for (params.yaml `index`)."""

    kind: str = "auto"
    recall_at_10: float = 0.95
    exact_max_items: int = 5000
    nlist: int | None = None
    train_sample: int = 100_000
    calibration_queries: int = 1000
    seed: int = 0

    @classmethod
    def from_params(cls, index: IndexParams, seed: int) -> BuildSettings:
        return cls(kind=index.kind, recall_at_10=index.recall_at_10,
                   exact_max_items=index.exact_max_items, nlist=index.nlist,
                   train_sample=index.train_sample,
                   calibration_queries=index.calibration_queries, seed=seed)


@dataclass
class Calibration:
    """Held-back queries with their exact top k (+1: each is in the database itself)."""

    slots: np.ndarray  # the queries' row numbers in the database
    queries: np.ndarray
    exact: np.ndarray  # exact top (k+1) rows, best first

    def recall(self, found: np.ndarray, k: int = RECALL_K) -> float:
        """Mean |approximate top k & exact top k| / k, each query left out of both."""
        hits = 0
        for own, truth, got in zip(self.slots, self.exact, found, strict=True):
            want = [r for r in truth if r != own][:k]
            have = [r for r in got if r != own and r >= 0][:k]
            hits += len(set(want) & set(have))
        return hits / (k * len(self.slots))


def _sample_and_truth(chunks: Chunks, *, n: int, settings: BuildSettings,
                      given: np.ndarray | None = None) -> tuple[np.ndarray, Calibration]:
    """One pass: the training sample and the held-back queries (database items, or `given`
    queries from outside it); a second: their exact answers."""
    rng = np.random.default_rng(settings.seed)
    sample_rows = np.sort(rng.choice(n, size=min(n, settings.train_sample), replace=False))
    query_rows = np.sort(rng.choice(n, size=0 if given is not None else min(
        n, settings.calibration_queries), replace=False))
    sample, queries = [], []
    start = 0
    for values, _ in chunks():
        end = start + len(values)
        for rows, into in ((sample_rows, sample), (query_rows, queries)):
            lo, hi = np.searchsorted(rows, [start, end])
            into.append(values[rows[lo:hi] - start])
        start = end
    if given is not None:
        pick = rng.choice(len(given), size=min(len(given), settings.calibration_queries),
                          replace=False)
        queries, query_rows = [given[np.sort(pick)]], np.full(len(pick), -1)  # none is its own
    q = np.ascontiguousarray(np.concatenate(queries), dtype=np.float32)
    k = min(RECALL_K + 1, n)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    start = 0
    for values, _ in progress(chunks(), desc="exact answers of the held-back queries"):
        scores, rows = faiss.knn(q, np.ascontiguousarray(values, dtype=np.float32), min(
            k, len(values)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, np.where(rows < 0, -1, rows + start))
        start += len(values)
    heap.finalize()
    scores, rows = _slot_order(heap.D, heap.I)
    return np.concatenate(sample), Calibration(query_rows, q, rows)


def _fill(index: faiss.Index, chunks: Chunks) -> np.ndarray:
    """Every item added under its slot; the ids in slot order."""
    ids: list[np.ndarray] = []
    start = 0
    for values, chunk_ids in progress(chunks(), desc="adding items"):
        index.add_with_ids(np.ascontiguousarray(values, dtype=np.float32),
                           np.arange(start, start + len(values), dtype=np.int64))
        ids.append(_encode(chunk_ids))
        start += len(values)
    return _concat_ids(np.empty(0, dtype="S1"), np.concatenate(ids) if ids else
                       np.empty(0, dtype="S1"))


def _probes(nlist: int) -> Iterator[int]:
    p = 1
    while p < nlist:
        yield p
        p *= 2
    yield nlist


def _tune_nprobe(index: faiss.Index, calibration: Calibration, nlist: int, target: float
                 ) -> tuple[int, float, list[dict]]:
    """The fewest probes reaching `target`; else all of them (the codes' ceiling)."""
    tried = []
    recall = 0.0
    nprobe = nlist
    for nprobe in _probes(nlist):
        k = min(RECALL_K + 1, int(index.ntotal))
        _, found = index.search(calibration.queries, k,
                                params=faiss.SearchParametersIVF(nprobe=nprobe))
        recall = calibration.recall(found)
        tried.append({"nprobe": nprobe, "recall_at_10": round(recall, 4)})
        if recall >= target:
            break
    return nprobe, recall, tried


def build(chunks: Chunks, *, n: int, dim: int, settings: BuildSettings,
          meta: dict | None = None, queries: np.ndarray | None = None,
          log: Callable[[str], None] = lambda _: None) -> VectorIndex:
    """The index `settings` ask for over the database `chunks` give (n unit rows of width dim):
    exact up to `exact_max_items`; above, the smallest approximate kind that reaches the recall
    target on held-back queries, tried on the training sample first (a kind that misses there
    cannot reach it on the whole), then confirmed on the whole database. The held-back queries
    are database items, each left out of its own answer, unless `queries` are given: queries
    as the index will be asked (another modality's), whose neighbours an index may find
    harder to reach than its own items'."""
    meta = dict(meta or {})
    began = time.perf_counter()
    if settings.kind == "flat" or (settings.kind == "auto" and n <= settings.exact_max_items):
        index = faiss.index_factory(dim, FLAT_FACTORY, faiss.METRIC_INNER_PRODUCT)
        ids = _fill(index, chunks)
        meta |= {"layout": {"kind": "flat"}, "nprobe": 1, "recall_at_10": 1.0,
                 "build_s": round(time.perf_counter() - began, 3)}
        return VectorIndex(index, ids, meta)
    sample, calibration = _sample_and_truth(chunks, n=n, settings=settings, given=queries)
    kinds = list(APPROXIMATE) if settings.kind == "auto" else [settings.kind]
    tried: list[dict] = []
    quantizer: faiss.Index | None = None  # one set of cells for every kind tried
    for kind in kinds:
        layout = layout_for(kind, n=n, dim=dim, nlist=settings.nlist,
                            train_sample=settings.train_sample)
        if kind == "ivf_pq" and len(sample) < PQ_CENTROIDS * MIN_POINTS_PER_CENTROID:
            if settings.kind == "auto":
                continue  # too few items to train 8-bit codebooks
            if len(sample) < PQ_CENTROIDS:
                raise DrclError(f"index.kind: ivf_pq needs at least {PQ_CENTROIDS} items to "
                                f"train its codes; the database has {n}")
        if len(sample) < layout.nlist:
            raise DrclError(f"index.nlist: {layout.nlist} cells need at least that many "
                            f"items to train on; the database has {n}")
        if quantizer is None:
            quantizer = _coarse_quantizer(sample, layout.nlist, settings.seed)
            log(f"{layout.nlist} cells trained on {len(sample)} items")
        index = _ivf(layout, quantizer, dim)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))  # the codes: cells are set
        if settings.kind == "auto" and kind != APPROXIMATE[-1]:
            screen = _screen_on_sample(index, sample, settings)
            tried.append({"kind": kind, "on": "sample", "recall_at_10": round(screen, 4)})
            log(f"{layout.describe()}: recall@10 {screen:.3f} on the training sample")
            if screen < settings.recall_at_10:
                continue
        ids = _fill(index, chunks)
        nprobe, recall, curve = _tune_nprobe(index, calibration, layout.nlist,
                                             settings.recall_at_10)
        tried.append({"kind": kind, "on": "database", "nprobe": curve})
        log(f"{layout.describe()}: recall@10 {recall:.3f} at nprobe {nprobe}")
        if recall >= settings.recall_at_10 or settings.kind != "auto":
            if recall < settings.recall_at_10:
                log(f"{kind} reaches recall@10 {recall:.3f}, below the target "
                    f"{settings.recall_at_10}; kept because index.kind names it")
            meta |= {"layout": {"kind": kind, "nlist": layout.nlist, "pq_m": layout.pq_m},
                     "nprobe": nprobe, "recall_at_10": round(recall, 4),
                     "recall_target": settings.recall_at_10,
                     "calibration_queries": len(calibration.slots),
                     "calibrated_on": "database items" if queries is None else "given queries",
                     "tried": tried,
                     "build_s": round(time.perf_counter() - began, 3)}
            return VectorIndex(index, ids, meta)
        del index
    raise DrclError(f"index.recall_at_10: no approximate index reaches {settings.recall_at_10} "
                    f"on this database (best tried: {tried[-1]}); lower the target or set "
                    "index.kind: flat")


def _coarse_quantizer(sample: np.ndarray, nlist: int, seed: int) -> faiss.Index:
    """The IVF cells: spherical k-means of the sample (unit rows, inner product)."""
    kmeans = faiss.Kmeans(sample.shape[1], nlist, niter=20, seed=seed, spherical=True,
                          max_points_per_centroid=256)
    kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
    quantizer = faiss.IndexFlatIP(sample.shape[1])
    quantizer.add(kmeans.centroids)
    return quantizer


def _ivf(layout: Layout, quantizer: faiss.Index, dim: int) -> faiss.Index:
    """An IVF index of `layout`'s codes over trained cells (which it then owns a copy of)."""
    quantizer = faiss.clone_index(quantizer)
    ip = faiss.METRIC_INNER_PRODUCT
    if layout.kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, dim, layout.nlist, ip)
    elif layout.kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, layout.nlist,
                                              faiss.ScalarQuantizer.QT_8bit, ip)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, layout.nlist, layout.pq_m, 8, ip)
    index.own_fields = True
    quantizer.this.disown()  # the index frees it
    return index


def _screen_on_sample(trained: faiss.Index, sample: np.ndarray, settings: BuildSettings
                      ) -> float:
    """Recall with every cell probed, on the training sample as the database: the codes'
    ceiling, optimistic (fewer items to tell apart than the whole holds)."""
    probe = faiss.clone_index(trained)
    probe.add_with_ids(sample, np.arange(len(sample), dtype=np.int64))
    small = BuildSettings(train_sample=0, calibration_queries=min(
        SCREEN_QUERIES, settings.calibration_queries, len(sample)), seed=settings.seed + 1)
    _, calibration = _sample_and_truth(lambda: [(sample, [""] * len(sample))], n=len(sample),
                                       settings=small)
    _, found = probe.search(calibration.queries, min(RECALL_K + 1, len(sample)),
                            params=faiss.SearchParametersIVF(nprobe=probe.nlist))
    return calibration.recall(found)


def array_chunks(values: np.ndarray, ids: Sequence[str], size: int = 65536) -> Chunks:
    """An in-memory database as chunks."""
    def read() -> Iterator[tuple[np.ndarray, Sequence[str]]]:
        for s in range(0, len(values), size):
            yield values[s:s + size], ids[s:s + size]
    return read
