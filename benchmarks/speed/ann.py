"""Search at scale: each kind of drcl index against exact search, 100k to 10M items of width 512.

    python benchmarks/speed/ann.py synthetic --sizes 100000 1000000 10000000
    python benchmarks/speed/ann.py wikipedia --sizes 100000 1000000 10000000
    python benchmarks/speed/ann.py breakeven            # exact or approximate, 5k to 100k items
    python benchmarks/speed/ann.py --report             # the tables of RESULTS.md

Databases (unit rows, width 512, made a chunk at a time so none is ever whole in memory):
- `synthetic`: items drawn around 200 class centres, cosine about 0.74 to their centre (as
  trained encoders place a class); queries drawn the same way, none in the database;
- `wikipedia`: a trained set's text embeddings of the Wikipedia benchmark (SIFT+LDA features,
  the default params, seed 0; all 2866 articles), tiled with small perturbations (cosine about
  0.97 to the original) to reach the size; the queries are the set's image embeddings of the
  test split, the real cross-modal queries. The data set's release folder is read from
  data/wikipedia (or --wikipedia).
Per size and kind: `drcl.vector_index.build` as `drcl index` runs it (params `index` defaults:
recall@10 target 0.95 on 1000 held-back database items), then: build time, bytes on disk, the
resident memory of a fresh process that loads the file and answers queries (its peak less that
of the same process before loading), recall@10 of 1000 queries against exact search, and
latency (p50/p99) and queries/s for one query at a time and for batches of 100. Kinds beyond
`auto` are forced (index.kind, --kinds) where they fit in memory: flat (exact) and ivf_flat hold 4
bytes a dimension, 20 GB at 10M, more than this machine has.
For `wikipedia` also MAP of the test queries, exact against through the index: MAP@all over the
test split's own texts (the product's evaluation), every kind forced onto that small database,
items the index does not return ranked last; and MAP@100 over the tiled database.
Results: benchmarks/speed/ann-DATA.json (one entry per size, written after each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DIM = 512
CHUNK = 250_000
CLASSES = 200
QUERIES = 1000
K = 10

from drcl.vector_index import BuildSettings, VectorIndex, build  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Synthetic:
    """Items around class centres; chunk c is the same every time it is read."""

    name = "synthetic"

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.centres = unit(np.random.default_rng(seed).standard_normal((CLASSES, DIM)))
        self.spread = 0.04  # per dimension: cosine about 0.74 to the centre

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, CLASSES, count)
        noise = rng.standard_normal((count, DIM), dtype=np.float32) * self.spread
        return unit(self.centres[labels] + noise), labels

    def chunks(self) -> Iterator[tuple[np.ndarray, list[str]]]:
        for c, start in enumerate(range(0, self.n, CHUNK)):
            values, _ = self._draw(np.random.default_rng([1, c]), min(CHUNK, self.n - start))
            yield values, [str(i) for i in range(start, start + len(values))]

    def queries(self) -> np.ndarray:
        return self._draw(np.random.default_rng([2]), QUERIES)[0]


class Wikipedia:
    """A trained set's text embeddings tiled with perturbations; its image test queries."""

    name = "wikipedia"

    def __init__(self, n: int, trained: dict) -> None:
        self.n = n
        self.base = trained["text_all"]
        self.base_labels = trained["text_all_labels"]
        self.trained = trained
        self.spread = 0.01  # per dimension: cosine about 0.97 to the original

    def labels_of(self, rows: np.ndarray) -> np.ndarray:
        return self.base_labels[rows % len(self.base)]

    def chunks(self) -> Iterator[tuple[np.ndarray, list[str]]]:
        for c, start in enumerate(range(0, self.n, CHUNK)):
            rows = np.arange(start, min(self.n, start + CHUNK))
            rng = np.random.default_rng([3, c])
            noise = rng.standard_normal((len(rows), DIM), dtype=np.float32) * self.spread
            copy = rows >= len(self.base)  # the first tile is the data set itself
            values = self.base[rows % len(self.base)] + noise * copy[:, None]
            yield unit(values), [str(i) for i in rows]

    def queries(self) -> np.ndarray:
        return self.trained["image_test"]


def train_wikipedia(release: Path, cache: Path) -> dict:
    """One trained set (default params, seed 0) embedded; cached, it takes minutes."""
    if cache.is_file():
        with np.load(cache) as npz:
            return dict(npz)
    sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
    from run import PriorCache, base_params, prepare, with_overrides

    from drcl.model import embed
    from drcl.runtime import resolve_device
    from drcl.train import train_encoder

    with tempfile.TemporaryDirectory() as tmp:
        raw = base_params("wikipedia_lda")
        raw["data"]["path"] = str(release)
        modalities, _ = prepare("wikipedia_lda", raw, Path(tmp))
        params = with_overrides(raw, {}, 0)
        device = resolve_device(params.device)
        prior = PriorCache().get(modalities, params, device, modalities[0].train.labels.shape[1])
        out = {}
        for data in modalities:
            encoder = train_encoder(data, prior.prior, params=params, device=device).encoder
            splits = {s: getattr(data, s) for s in ("train", "val", "test")}
            emb = {s: embed(encoder, d.features, device=device).cpu().numpy()
                   for s, d in splits.items()}
            out[f"{data.name}_test"] = unit(emb["test"])
            out[f"{data.name}_test_labels"] = splits["test"].labels.argmax(1)
            out[f"{data.name}_all"] = unit(np.concatenate([emb[s] for s in splits]))
            out[f"{data.name}_all_labels"] = np.concatenate(
                [splits[s].labels.argmax(1) for s in splits])
    np.savez(cache, **out)
    return out


def exact_top(data, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    start = 0
    for values, _ in data.chunks():
        d, i = faiss.knn(queries, values, min(k, len(values)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, i + start)
        start += len(values)
    heap.finalize()
    return heap.D, heap.I


def latencies(index: VectorIndex, queries: np.ndarray) -> dict:
    def timed(batch: int, count: int) -> dict:
        times = []
        for s in range(0, batch * (count + 3), batch):
            q = queries[s % len(queries):s % len(queries) + batch]
            start = time.perf_counter()
            index.search(q, K)
            times.append(time.perf_counter() - start)
        times = sorted(times[3:])  # three to warm up
        return {"p50_ms": 1000 * statistics.median(times),
                "p99_ms": 1000 * times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
                "queries_per_s": batch * len(times) / sum(times)}
    return {"one": timed(1, 1000), "batch_100": timed(100, 20)}


LOAD_SCRIPT = """
import sys, time, numpy as np
from pathlib import Path
from drcl.vector_index import VectorIndex

def rss(field):
    line = next(x for x in open('/proc/self/status') if x.startswith(field))
    return int(line.split()[1])

q = np.load(sys.argv[2])
before = rss('VmRSS:')
start = time.perf_counter()
index = VectorIndex.load(Path(sys.argv[1]))
loaded = time.perf_counter() - start
for row in q[:200]:
    index.search(row[None], 10)
print(before, rss('VmRSS:'), rss('VmHWM:'), loaded)
"""


def served_memory(path: Path, queries: np.ndarray) -> dict:
    """A fresh process that loads the file and answers 200 queries: its resident memory
    (after, and at its peak, which includes reading the file) less what it held before."""
    qfile = path.with_suffix(".queries.npy")
    np.save(qfile, queries)
    out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(path), str(qfile)],
                         check=True, capture_output=True, text=True).stdout.split()
    before, after, peak, loaded = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    return {"index_mb": (after - before) / 1024, "index_peak_mb": (peak - before) / 1024,
            "process_peak_mb": peak / 1024, "load_s": loaded}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth,
                                                                           strict=True)]))


def average_precision(relevant: np.ndarray, total: int) -> float:
    """AP of one ranked list of relevance flags; `total` relevant items in the database."""
    hits = np.flatnonzero(relevant)
    if total == 0:
        return 0.0
    return float(np.sum(np.arange(1, len(hits) + 1) / (hits + 1)) / total)


def map_at(index: VectorIndex, queries: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
           k: int) -> float:
    """MAP@k (k = the database: MAP@all) of the queries through the index; items it does not
    return are ranked after those it does, in database order."""
    _, slots = index.search(queries, k)
    out = []
    for row, label in zip(slots, q_labels, strict=True):
        got = row[row >= 0]
        if k >= len(db_labels):
            rest = np.setdiff1d(np.arange(len(db_labels)), got, assume_unique=True)
            got = np.concatenate([got, rest])
        relevant = db_labels[got] == label
        total = int((db_labels == label).sum()) if k >= len(db_labels) else min(
            k, int((db_labels == label).sum()))
        out.append(average_precision(relevant[:k], total))
    return float(np.mean(out))


def kinds_for(n: int, asked: list[str]) -> list[str]:
    """Flat and full IVF codes hold 4 bytes a dimension: 20 GB at 10M, beyond this machine."""
    return [k for k in asked if n <= 2_000_000 or k not in ("flat", "ivf_flat")]


def one_size(data, n: int, work: Path, kinds: list[str]) -> dict:
    queries = data.queries()
    start = time.perf_counter()
    truth_s, truth = exact_top(data, queries, K)
    entry = {"n": n, "dim": DIM, "exact_s": time.perf_counter() - start, "kinds": {}}
    if data.name == "wikipedia":
        _, top100 = exact_top(data, queries, 100)
        q_labels = data.trained["image_test_labels"]
        entry["map_at_100_exact"] = float(np.mean([
            average_precision(data.labels_of(row) == label, 100) for row, label in
            zip(top100, q_labels, strict=True)]))
    for kind in kinds_for(n, kinds):
        if kind in entry["kinds"].get("auto", {}).get("layout", {}).values():
            continue  # the kind `auto` chose: measured already
        settings = BuildSettings(kind=kind)
        start = time.perf_counter()
        index = build(data.chunks, n=n, dim=DIM, settings=settings,
                      log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
        built_s = time.perf_counter() - start
        path = work / f"{data.name}-{n}-{kind}.npz"
        index.save(path)
        _, found = index.search(queries, K)
        row = {"layout": index.meta["layout"], "nprobe": index.nprobe,
               "calibration_recall_at_10": index.meta.get("recall_at_10"),
               "build_s": built_s, "disk_mb": path.stat().st_size / 2**20,
               "recall_at_10": recall(found, truth), **latencies(index, queries)}
        if data.name == "wikipedia":
            row["map_at_100"] = map_at(index, queries, q_labels, data.labels_of(
                np.arange(n)), 100)
        del index
        row.update(served_memory(path, queries))
        path.unlink()
        entry["kinds"][kind] = row
        print(f"{data.name} {n:,} {kind}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return entry


def map_all_small(trained: dict) -> dict:
    """MAP@all over the test split's texts, exact and through each approximate kind forced
    onto it (the recall target met on its own held-back items, as `drcl index` would)."""
    from drcl.metrics import mean_average_precision

    db, db_labels = trained["text_test"], trained["text_test_labels"]
    q, q_labels = trained["image_test"], trained["image_test_labels"]
    ids = [str(i) for i in range(len(db))]
    onehot = np.eye(int(db_labels.max()) + 1, dtype=np.float32)
    out = {"n": len(db), "exact_drcl_metrics": float(mean_average_precision(
        q, onehot[q_labels], db, onehot[db_labels]))}
    for kind in ("flat", "ivf_flat", "ivf_sq8", "ivf_pq"):
        settings = BuildSettings(kind=kind, nlist=16, train_sample=len(db),
                                 calibration_queries=200)
        index = build(lambda: [(db, ids)], n=len(db), dim=DIM, settings=settings)
        out[kind] = {"map_all": map_at(index, q, q_labels, db_labels, len(db)),
                     "nprobe": index.nprobe, "nlist": index.layout.nlist}
    return out


def breakeven(work: Path) -> dict:
    """Exact against the approximate index `auto` would build, for one query, 5k to 100k."""
    out = []
    for n in (5_000, 10_000, 20_000, 50_000, 100_000):
        data = Synthetic(n)
        queries = data.queries()
        _, truth = exact_top(data, queries, K)
        row = {"n": n}
        for kind in ("flat", "auto"):
            start = time.perf_counter()
            index = build(data.chunks, n=n, dim=DIM,
                          settings=BuildSettings(kind=kind, exact_max_items=0))
            built = time.perf_counter() - start
            _, found = index.search(queries, K)
            row[kind] = {"build_s": built, "recall_at_10": recall(found, truth),
                         "layout": index.meta["layout"], "nprobe": index.nprobe,
                         **latencies(index, queries)}
        out.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {"breakeven": out}


def environment() -> dict:
    return {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
            "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
            "load_1min": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", choices=("synthetic", "wikipedia", "breakeven"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--wikipedia", type=Path, default=ROOT / "data" / "wikipedia")
    parser.add_argument("--kinds", nargs="+", default=["flat", "auto", "ivf_flat", "ivf_sq8",
                                                          "ivf_pq"])
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        print(report())
        return
    out_path = HERE / f"ann-{args.data}.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results["environment"] = environment()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.data == "breakeven":
            results.update(breakeven(work))
            out_path.write_text(json.dumps(results, indent=1))
            return
        trained = None
        if args.data == "wikipedia":
            trained = train_wikipedia(args.wikipedia, HERE / ".wikipedia-embeddings.npz")
            results["map_all_test_split"] = map_all_small(trained)
            print(json.dumps(results["map_all_test_split"]), file=sys.stderr, flush=True)
        for n in args.sizes:
            data = Synthetic(n) if trained is None else Wikipedia(n, trained)
            results[str(n)] = one_size(data, n, work, args.kinds)
            results[str(n)]["environment"] = environment()
            out_path.write_text(json.dumps(results, indent=1))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB",
          file=sys.stderr)


def report() -> str:
    lines = []
    path = HERE / "ann-breakeven.json"
    if path.is_file():
        lines += ["### exact or approximate (synthetic, one query)", "",
                  "| items | exact p50 / p99 ms | approximate (auto) | its recall@10 | "
                  "p50 / p99 ms | build s, exact / approximate |", "|---|---|---|---|---|---|"]
        for row in json.loads(path.read_text())["breakeven"]:
            flat, auto = row["flat"], row["auto"]
            lines.append(
                f"| {row['n']:,} | {flat['one']['p50_ms']:.2f} / {flat['one']['p99_ms']:.2f} | "
                f"{auto['layout']['kind']} nlist {auto['layout']['nlist']} nprobe "
                f"{auto['nprobe']} | {auto['recall_at_10']:.3f} | {auto['one']['p50_ms']:.2f} / "
                f"{auto['one']['p99_ms']:.2f} | {flat['build_s']:.1f} / {auto['build_s']:.0f} |")
        lines.append("")
    for name in ("synthetic", "wikipedia"):
        path = HERE / f"ann-{name}.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        lines += [f"### {name}", "", "| items | kind | nprobe | build s | disk MB | memory MB | "
                  "recall@10 | one query p50 / p99 ms | one query q/s | batch of 100 p50 ms | "
                  "batch q/s |" + (" MAP@100 (exact) |" if name == "wikipedia" else ""),
                  "|---" * (11 + (name == "wikipedia")) + "|"]
        for key, entry in results.items():
            if not key.isdigit():
                continue
            for kind, row in entry["kinds"].items():
                layout = row["layout"]
                shown = kind if kind != "auto" else f"auto: {layout['kind']}"
                if layout["kind"] != "flat":
                    shown += f" (nlist {layout['nlist']})"
                extra = ""
                if name == "wikipedia":
                    m = row.get("map_at_100")
                    extra = (f" {m:.4f} ({entry['map_at_100_exact']:.4f}) |" if m is not None
                             else " – |")
                lines.append(
                    f"| {int(key):,} | {shown} | {row['nprobe']} | {row['build_s']:.0f} | "
                    f"{row['disk_mb']:,.0f} | {row['index_mb']:,.0f} | "
                    f"{row['recall_at_10']:.3f} | {row['one']['p50_ms']:.2f} / "
                    f"{row['one']['p99_ms']:.2f} | {row['one']['queries_per_s']:,.0f} | "
                    f"{row['batch_100']['p50_ms']:.1f} | "
                    f"{row['batch_100']['queries_per_s']:,.0f} |" + extra)
        lines.append("")
        if "map_all_test_split" in results:
            small = results["map_all_test_split"]
            lines += [f"MAP@all over the test split's {small['n']} texts: exact "
                      f"{small['exact_drcl_metrics']:.4f} (drcl.metrics); " + "; ".join(
                          f"{k} {v['map_all']:.4f}" + (f" (nprobe {v['nprobe']} of "
                                                       f"{v['nlist']})" if v["nlist"] else "")
                          for k, v in small.items() if isinstance(v, dict)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
