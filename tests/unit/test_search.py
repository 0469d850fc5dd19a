"""Chunked top-k against a brute-force ranking, feature files, and the two output formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drcl.errors import DrclError
from drcl.nearest import top_k
from drcl.search import SearchResult, read_features


def brute_force(queries: torch.Tensor, database: torch.Tensor, k: int):
    """Every score, then a stable sort: ties keep database order."""
    scores = queries @ database.T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), order


@pytest.mark.parametrize(("n_queries", "n_db", "k", "max_block"), [
    (7, 50, 5, 64),  # several query blocks and database chunks
    (3, 20, 50, 16),  # k beyond the database: everything, ranked
    (1, 1000, 10, 2**24),  # one block, one chunk
])
def test_chunked_top_k_equals_brute_force(n_queries, n_db, k, max_block):
    gen = torch.Generator().manual_seed(n_db)
    queries = torch.nn.functional.normalize(torch.randn(n_queries, 8, generator=gen), dim=1)
    database = torch.nn.functional.normalize(torch.randn(n_db, 8, generator=gen), dim=1)
    scores, indices = top_k(queries, database, k=k, max_block_elements=max_block)
    want_scores, want_indices = brute_force(queries, database, min(k, n_db))
    assert torch.equal(indices, want_indices)
    assert torch.allclose(scores, want_scores, atol=1e-6)


def test_ties_are_ordered_by_database_index_whatever_the_chunking():
    database = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.6, 0.8]] * 4)
    query = torch.tensor([[1.0, 0.0]])
    for max_block in (2, 3, 7, 2**24):
        _, indices = top_k(query, database, k=6, max_block_elements=max_block)
        assert indices.tolist() == [[0, 2, 3, 5, 7, 8]]


def test_read_features_npy_and_npz_with_ids(tmp_path):
    np.save(tmp_path / "q.npy", np.ones((3, 4)))
    plain = read_features(tmp_path / "q.npy")
    assert plain.values.dtype == np.float32 and plain.ids == ["0", "1", "2"]
    np.savez(tmp_path / "db.npz", vectors=np.zeros((2, 4)), ids=np.array(["a", "b"]))
    named = read_features(tmp_path / "db.npz", key="vectors")
    assert named.ids == ["a", "b"] and named.values.shape == (2, 4)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.npy", None, "no such features file"),
    ("q.csv", "1,2\n", "must be a .npy or .npz file"),
    ("q.npy", np.ones(4), "non-empty numeric (rows, width) matrix"),
    ("q.npy", np.ones((0, 4)), "non-empty numeric"),
    ("q.npy", np.array([[1.0, np.nan]]), "NaN or infinite"),
    ("q.npz", {"other": np.ones((2, 2))}, "no array 'features'; it has ['other']"),
    ("q.npz", {"features": np.ones((2, 2)), "ids": np.array(["x"])}, "1 ids for 2 rows"),
    ("q.npy", b"not numpy", "q.npy: not readable as a features file (not a numpy file)"),
    ("q.npy", b"", "q.npy: not readable as a features file (EOFError"),
    ("q.npz", b"", "q.npz: not readable as a features file (EOFError"),
    ("q.npz", "truncated", "q.npz: not readable as a features file (BadZipFile"),
    ("q.npz", "flipped", "q.npz: not readable as a features file (BadZipFile: Bad CRC-32"),
    ("q.npy", "truncated", "q.npy: not readable as a features file (ValueError: Failed to read"),
])
def test_bad_feature_files_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content in ("truncated", "flipped"):  # a good file, then damaged
        if path.suffix == ".npz":
            np.savez(path, features=np.arange(4000.0).reshape(1000, 4))
        else:
            np.save(path, np.arange(4000.0).reshape(1000, 4))
        data = bytearray(path.read_bytes())
        if content == "truncated":
            data = data[:len(data) // 2]
        else:
            data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DrclError) as err:
        read_features(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_table_and_json_agree():
    result = SearchResult("image", "text", "3", [("q1", [("t9", 0.91), ("t2", 0.5)])])
    assert json.loads(result.to_json()) == {
        "query_modality": "image", "database_modality": "text", "champion_set": "3",
        "results": [{"query": "q1", "matches": [{"rank": 1, "id": "t9", "score": 0.91},
                                                {"rank": 2, "id": "t2", "score": 0.5}]}]}
    assert result.to_table().splitlines() == ["query  rank  id  score",
                                              "q1     1     t9  0.9100",
                                              "q1     2     t2  0.5000"]


def test_search_needs_feature_queries_or_class_texts(tmp_path):
    from drcl.config import parse_params
    from drcl.errors import DrclError
    from drcl.search import search

    params = parse_params({})
    for kwargs in ({}, {"query_modality": "image", "queries": tmp_path / "q.npy",
                        "class_texts": ["cat"]}):
        with pytest.raises(DrclError, match=r"^search: give --query-modality and --queries, "
                                            "or --class-text$"):
            search(params, database=tmp_path / "db.npy", **{"query_modality": None,
                                                            "queries": None} | kwargs)


@pytest.mark.parametrize("qe_k", [0, 3])
def test_shards_searched_and_merged_answer_as_the_whole(qe_k):
    from drcl.rerank import Rerank
    from drcl.search import ranked_in
    from drcl.vector_index import flat_index

    gen = torch.Generator().manual_seed(3)
    database = torch.nn.functional.normalize(torch.randn(90, 8, generator=gen), dim=1).numpy()
    queries = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=1)
    ids = [f"i{n}" for n in range(90)]
    setting = Rerank(qe_k=qe_k, alpha=3.0)
    whole = ranked_in([flat_index(database, ids)], queries, setting, k=7)
    shards = [flat_index(database[s:s + 30], ids[s:s + 30]) for s in (0, 30, 60)]
    merged = ranked_in(shards, queries, setting, k=7)
    assert [[i for i, _ in row] for row in merged] == [[i for i, _ in row] for row in whole]
    for got, want in zip(merged, whole, strict=True):
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
