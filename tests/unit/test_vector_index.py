"""drcl.vector_index against brute force: exact search, the recall-target choice, add and remove
by id, the file, and each bad input's one line."""

from __future__ import annotations

import zipfile

import faiss
import numpy as np
import pytest

from drcl.config import IndexParams, parse_params
from drcl.errors import DrclError
from drcl.vector_index import (
    FORMAT,
    BuildSettings,
    Calibration,
    VectorIndex,
    array_chunks,
    build,
    default_nlist,
    flat_index,
    pq_subquantizers,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = 32, classes: int = 20, seed: int = 0) -> np.ndarray:
    """Items around class centres (the same centres whatever the seed), as trained encoders
    place them."""
    centres = unit(np.random.default_rng(12345).standard_normal((classes, dim)))
    rng = np.random.default_rng(seed)
    return unit(centres[rng.integers(0, classes, n)] + 0.15 * rng.standard_normal((n, dim)))


def brute_force(queries: np.ndarray, database: np.ndarray, k: int):
    """Every score, then a stable sort: ties keep database order."""
    scores = queries @ database.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


def ids_of(n: int, start: int = 0) -> list[str]:
    return [f"item-{i}" for i in range(start, start + n)]


def test_exact_search_is_brute_force_with_ties_in_database_order():
    database = unit(np.random.default_rng(1).standard_normal((300, 16)))
    database[[10, 50, 200]] = database[5]  # exact duplicates: equal scores
    queries = np.concatenate([database[5:6], unit(np.random.default_rng(2).standard_normal(
        (6, 16)))])
    index = flat_index(database, ids_of(300))
    scores, slots = index.search(queries, 12)
    want_scores, want_rows = brute_force(queries, database, 12)
    np.testing.assert_array_equal(slots, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert slots[0, :4].tolist() == [5, 10, 50, 200]
    assert index.id_of(int(slots[0, 1])) == "item-10"


def test_hand_recall():
    # query 0 is item 7: left out of both lists; the other query is held back from none
    calibration = Calibration(slots=np.array([7, 99]), queries=np.zeros((2, 2), np.float32),
                              exact=np.array([[7, 1, 2, 3], [4, 5, 6, 8]]))
    found = np.array([[1, 7, 9, 2], [4, 6, -1, 5]])
    assert calibration.recall(found, k=3) == pytest.approx((2 + 3) / 6)


def test_nlist_and_pq_sizes():
    assert default_nlist(1_000_000, 100_000) == 2048  # 4 sqrt(n) = 4000, trainable 2564
    assert default_nlist(1_000_000, 200_000) == 4096
    assert default_nlist(10_000, 100_000) == 256  # trainable: 10000 / 39
    assert default_nlist(100, 100_000) == 2
    assert pq_subquantizers(512) == 64 and pq_subquantizers(100) == 10


def test_small_databases_are_exact():
    database = clustered(500)
    index = build(array_chunks(database, ids_of(500)), n=500, dim=32,
                  settings=BuildSettings(exact_max_items=1000))
    assert index.meta["layout"] == {"kind": "flat"} and index.meta["recall_at_10"] == 1.0


@pytest.fixture(scope="module")
def approximate():
    """20k clustered items, above exact_max_items: the recall target picks the index."""
    database = clustered(20_000)
    index = build(array_chunks(database, ids_of(20_000), size=3000), n=20_000, dim=32,
                  settings=BuildSettings(recall_at_10=0.9, exact_max_items=1000,
                                         train_sample=10_000, calibration_queries=300))
    return database, index


def test_the_recall_target_is_met_on_fresh_queries(approximate):
    database, index = approximate
    assert index.layout.kind in ("ivf_sq8", "ivf_flat")  # PQ4 codes of 32-d: too coarse
    assert index.meta["recall_at_10"] >= 0.9
    assert any(t["kind"] == "ivf_pq" and t["on"] == "sample" for t in index.meta["tried"])
    queries = clustered(500, seed=7)  # not in the database
    _, want = brute_force(queries, database, 10)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, want, strict=True)])
    assert recall >= 0.85, recall  # 300 held-back queries estimate it within a few points
    fewer = VectorIndex(index.index, index.ids, {**index.meta, "nprobe": 1})
    _, coarse = fewer.search(queries, 10)
    worse = np.mean([len(set(f) & set(w)) / 10 for f, w in zip(coarse, want, strict=True)])
    assert worse < recall  # the chosen probes are what buys it


def test_a_forced_kind_is_kept_and_full_codes_probing_every_cell_are_exact():
    database = clustered(10_000)
    chunks = array_chunks(database, ids_of(10_000))
    said: list[str] = []
    forced = build(chunks, n=10_000, dim=32, settings=BuildSettings(
        kind="ivf_pq", recall_at_10=0.99, train_sample=10_000, calibration_queries=100),
        log=said.append)
    assert forced.layout.kind == "ivf_pq" and forced.meta["recall_at_10"] < 0.99
    assert said[-1].startswith("ivf_pq reaches recall@10 ") and "kept because index.kind" in \
        said[-1]
    exact = build(chunks, n=10_000, dim=32, settings=BuildSettings(
        kind="ivf_flat", recall_at_10=1.0, train_sample=10_000, calibration_queries=100,
        nlist=64))
    assert exact.meta["recall_at_10"] == 1.0 and exact.nprobe <= 64


def test_add_and_remove_by_id_without_a_rebuild(approximate, tmp_path):
    database, built = approximate
    built.save(tmp_path / "i.npz")
    index = VectorIndex.load(tmp_path / "i.npz")
    index.remove(["item-3", "item-19999"])
    assert index.size == 19_998
    _, found = index.search(database[[3]], 10)
    assert 3 not in found[0] and all(index.id_of(int(s)) for s in found[0])
    new = clustered(5, seed=9)
    index.add(new, ["new-0", "new-1", "new-2", "new-3", "item-3"])  # a removed id comes back
    _, found = index.search(new, 1)
    assert [index.id_of(int(s)) for s in found[:, 0]] == ["new-0", "new-1", "new-2", "new-3",
                                                          "item-3"]
    with pytest.raises(DrclError, match=r"^remove: id 'gone' is not in the index$"):
        index.remove(["item-5", "gone"])
    assert index.size == 20_003  # nothing removed by the refused call
    with pytest.raises(DrclError, match=r"^add: id 'new-1' is already in the index"):
        index.add(new[:1], ["new-1"])
    with pytest.raises(DrclError, match=r"^add: id 'x' is already in the index \(or given "
                                        r"twice\)"):
        index.add(new[:2], ["x", "x"])
    with pytest.raises(DrclError, match=r"^search: 16-d queries, but the index holds 32-d"):
        index.search(np.zeros((1, 16), np.float32), 3)
    index.save(tmp_path / "i.npz")
    again = VectorIndex.load(tmp_path / "i.npz")
    assert again.size == 20_003 and again.nprobe == built.nprobe
    np.testing.assert_array_equal(again.search(new, 5)[1], index.search(new, 5)[1])


def test_the_stored_vectors_come_back_with_the_matches():
    database = clustered(3000)
    for kind in ("flat", "ivf_flat"):
        index = build(array_chunks(database, ids_of(3000)), n=3000, dim=32,
                      settings=BuildSettings(kind=kind, recall_at_10=0.9, train_sample=3000,
                                             calibration_queries=100))
        scores, slots, vectors = index.search_and_reconstruct(database[:4], 3)
        np.testing.assert_allclose(vectors, database[slots], atol=1e-6)
        np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", database[:4], vectors),
                                   atol=1e-5)


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    index = flat_index(clustered(50), ids_of(50))
    index.save(tmp_path / "i.npz")
    before = (tmp_path / "i.npz").read_bytes()
    index.add(clustered(2, seed=3), ["a", "b"])

    def broken(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        index.save(tmp_path / "i.npz")
    assert (tmp_path / "i.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["i.npz"]


def test_unreadable_files_are_one_line(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DrclError, match=r"junk.npz: not a readable index \("):
        VectorIndex.load(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as zf:
        zf.writestr("index.faiss", b"\x00" * 10)
    with pytest.raises(DrclError, match=r"cut.npz: not a readable index"):
        VectorIndex.load(tmp_path / "cut.npz")
    index = flat_index(clustered(5), ids_of(5))
    index.save(tmp_path / "i.npz")
    assert index.meta["format"] == FORMAT
    with zipfile.ZipFile(tmp_path / "i.npz") as zf:
        assert sorted(zf.namelist()) == ["ids.npy", "index.faiss", "meta.npy"]
    with np.load(tmp_path / "i.npz") as npz:  # still an npz: ids and meta read with numpy
        assert [bytes(i).decode() for i in npz["ids"]] == ids_of(5)


@pytest.mark.parametrize(("value", "message"), [
    ({"recall_at_10": 0}, "index.recall_at_10: Input should be greater than 0"),
    ({"recall_at_10": 1.5}, "index.recall_at_10: Input should be less than or equal to 1"),
    ({"kind": "hnsw"}, "index.kind: Input should be 'auto', 'flat', 'ivf_flat', 'ivf_sq8' or "
                       "'ivf_pq'"),
    ({"nprobe": 3}, "index.nprobe: unknown key"),
])
def test_bad_index_params_are_one_line(value, message):
    with pytest.raises(DrclError, match=message):
        parse_params({"index": value})
    assert BuildSettings.from_params(IndexParams(), 0) == BuildSettings()  # one set of defaults
