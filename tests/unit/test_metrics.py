"""Retrieval metrics against a per-query brute-force loop, hand-worked examples and tie rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drcl import metrics
from drcl.errors import DrclError
from drcl.metrics import evaluate_direction, mean_average_precision

NQ, ND, DIM, CLASSES = 23, 37, 8, 5


# --- brute-force references: one query at a time, in plain Python ---------------------------

def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1.0)) @ (b / np.where(nb > 0, nb, 1.0)).T


def _relevance_in_rank_order(query, query_labels, database, database_labels) -> list[list[bool]]:
    sim = _cosine(query, database)
    out = []
    for i in range(len(query)):
        order = np.argsort(-sim[i], kind="stable")
        out.append([bool(query_labels[i] @ database_labels[j] > 0) for j in order])
    return out


def reference_map(query, query_labels, database, database_labels, k, multi_label) -> float:
    aps = []
    for rel in _relevance_in_rank_order(query, query_labels, database, database_labels):
        hits, total = 0, 0.0
        for r, is_rel in enumerate(rel[:k], start=1):
            if is_rel:
                hits += 1
                total += hits / r
        if hits == 0:
            if not multi_label:
                aps.append(0.0)
            continue
        aps.append(total / hits)
    return float(np.mean(aps)) if aps else 0.0


def reference_pr(query, query_labels, database, database_labels, ranks):
    recall, precision = [], []
    for rel in _relevance_in_rank_order(query, query_labels, database, database_labels):
        n_rel = sum(rel)
        hits = [sum(rel[:r]) for r in ranks]
        precision.append([h / r for h, r in zip(hits, ranks, strict=True)])
        recall.append([h / n_rel if n_rel else 0.0 for h in hits])
    return np.mean(recall, axis=0), np.mean(precision, axis=0)


# --- data with many exact ties ----------------------------------------------------------------

def tied_embeddings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows with 0, 1 or 4 entries of +-s (s a power of two), some rows duplicated.

    Normalised entries are 0, +-1 or +-1/2, so every cosine is a multiple of 1/4 and exact in
    float32 and float64 alike: scores tie exactly, and the reference ranks them as the code does.
    """
    x = np.zeros((n, DIM))
    for i in range(n):
        nnz = rng.choice([0, 1, 4], p=[0.1, 0.3, 0.6])
        cols = rng.choice(DIM, size=nnz, replace=False)
        x[i, cols] = rng.choice([-1.0, 1.0], size=nnz) * 2.0 ** rng.integers(0, 3)
    x[rng.choice(n, size=n // 4)] = x[rng.choice(n, size=n // 4)]
    return x.astype(np.float32)


def make_data(seed: int, multi_label: bool, *, all_relevant: bool = False):
    """Tied embeddings; single-label queries may carry a class absent from the database."""
    rng = np.random.default_rng(seed)
    q, db = tied_embeddings(rng, NQ), tied_embeddings(rng, ND)
    if multi_label:
        ql = (rng.random((NQ, CLASSES)) < 0.3).astype(np.float32)
        dl = (rng.random((ND, CLASSES)) < 0.3).astype(np.float32)
    else:
        eye = np.eye(CLASSES, dtype=np.float32)
        db_classes = np.arange(ND) % (CLASSES - 1)  # the last class is never in the database
        ql = eye[rng.integers(0, CLASSES - 1 if all_relevant else CLASSES, size=NQ)]
        dl = eye[rng.permutation(db_classes)]
    return q, ql, db, dl


BLOCKS = [(1024, 2**24), (1, 2**24), (7, 2**24), (1024, ND * 5), (1024, 1)]


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize(("query_chunk", "max_block_elements"), BLOCKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_map_matches_brute_force_with_ties(multi_label, query_chunk, max_block_elements, seed):
    q, ql, db, dl = make_data(seed, multi_label)
    expected_all = reference_map(q, ql, db, dl, ND, multi_label)
    for k in (1, 5, ND - 1, ND, 1000):
        res = evaluate_direction(q, ql, db, dl, k=k, multi_label=multi_label,
                                 query_chunk=query_chunk, max_block_elements=max_block_elements)
        assert res.k == min(k, ND)
        assert res.map_all == pytest.approx(expected_all, abs=1e-9)
        assert res.map_at_k == pytest.approx(reference_map(q, ql, db, dl, k, multi_label),
                                             abs=1e-9)
        assert mean_average_precision(q, ql, db, dl, k=k, multi_label=multi_label,
                                      query_chunk=query_chunk,
                                      max_block_elements=max_block_elements) == res.map_at_k
    assert mean_average_precision(q, ql, db, dl, multi_label=multi_label,
                                  query_chunk=query_chunk) == pytest.approx(expected_all,
                                                                            abs=1e-9)


def test_map_matches_brute_force_on_continuous_data():
    rng = np.random.default_rng(3)
    q, db = rng.normal(size=(40, 16)), rng.normal(size=(60, 16))
    ql = np.eye(4)[rng.integers(0, 4, size=40)]
    dl = np.eye(4)[rng.integers(0, 4, size=60)]
    res = evaluate_direction(q, ql, db, dl, k=10, query_chunk=6)
    assert res.map_all == pytest.approx(reference_map(q, ql, db, dl, 60, False), abs=1e-9)
    assert res.map_at_k == pytest.approx(reference_map(q, ql, db, dl, 10, False), abs=1e-9)


def test_blocks_are_bounded(monkeypatch):
    seen = []
    original = metrics._rank_block

    def spy(query, *args):
        seen.append(tuple(query.shape))
        return original(query, *args)

    monkeypatch.setattr(metrics, "_rank_block", spy)
    q, ql, db, dl = make_data(0, False)
    evaluate_direction(q, ql, db, dl, max_block_elements=ND * 5)
    assert sorted(rows for rows, _ in seen) == [3, 5, 5, 5, 5]
    seen.clear()
    evaluate_direction(q, ql, db, dl, query_chunk=7)
    assert sorted(rows for rows, _ in seen) == [2, 7, 7, 7]
    seen.clear()
    evaluate_direction(q, ql, db, dl, max_block_elements=1)
    assert [rows for rows, _ in seen] == [1] * NQ


# --- worked by hand ---------------------------------------------------------------------------

def hand_example():
    # query (1, 0), class 0. Database and cosine to the query:
    #   item 0 (0, 1)   cos  0      class 1
    #   item 1 (1, 0)   cos  1      class 0  relevant
    #   item 2 (1, 1)   cos  0.707  class 1
    #   item 3 (-1, 0)  cos -1      class 0  relevant
    #   item 4 (1, -2)  cos  0.447  class 0  relevant
    # ranking 1, 2, 4, 0, 3 -> relevant at ranks 1, 3, 5; hits at ranks 1..5: 1, 1, 2, 2, 3
    # AP@all = (1/1 + 2/3 + 3/5) / 3 = 34/45; AP@3 = (1/1 + 2/3) / 2 = 5/6; AP@2 = AP@1 = 1
    # precision@1..5 = 1, 1/2, 2/3, 1/2, 3/5; recall@1..5 = 1/3, 1/3, 2/3, 2/3, 1
    query = np.array([[1.0, 0.0]])
    database = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [1.0, -2.0]])
    eye = np.eye(2)
    return query, eye[[0]], database, eye[[1, 0, 1, 0, 0]]


@pytest.mark.parametrize(("k", "expected"), [(1, 1.0), (2, 1.0), (3, 5 / 6), (5, 34 / 45)])
def test_hand_example_map(k, expected):
    q, ql, db, dl = hand_example()
    res = evaluate_direction(q, ql, db, dl, k=k, points=5)
    assert res.map_all == pytest.approx(34 / 45, abs=1e-12)
    assert res.map_at_k == pytest.approx(expected, abs=1e-12)
    assert mean_average_precision(q, ql, db, dl, k=k) == pytest.approx(expected, abs=1e-12)


def test_hand_example_pr_curve():
    q, ql, db, dl = hand_example()
    res = evaluate_direction(q, ql, db, dl, points=5)
    np.testing.assert_array_equal(res.ranks, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(res.precision, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1], rtol=0, atol=1e-12)
    res = evaluate_direction(q, ql, db, dl, points=3)
    np.testing.assert_array_equal(res.ranks, [1, 3, 5])
    np.testing.assert_allclose(res.precision, [1, 2 / 3, 3 / 5], rtol=0, atol=1e-12)


# --- ties are broken by database index --------------------------------------------------------

def _scores_with_ties() -> tuple[torch.Tensor, torch.Tensor]:
    # negatives, both zeros, ties, subnormals and the extremes of a cosine's float32 range
    special = [0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1.9999999, -1.9999999, 0.5, 0.5, -0.5, -0.5]
    rng = np.random.default_rng(0)
    scores = torch.tensor([special + rng.choice([-1.5, -1.0, 0.0, 0.25, 1.0], 30).tolist(),
                           rng.standard_normal(42).tolist()], dtype=torch.float32) + 0.0
    return scores, torch.as_tensor(rng.random((2, 42)) < 0.5)


def test_sort_keys_follow_the_scores_and_carry_the_relevance():
    scores, relevant = _scores_with_ties()
    keys = metrics._sort_keys(scores.clone(), relevant, torch.empty(2, 42, dtype=torch.int32))
    assert torch.equal(keys & 1, relevant.int())
    for row in range(2):
        s, key = scores[row][:, None], (keys[row] >> 1)
        assert torch.equal(s < s.T, key[:, None] < key[None, :])
        assert torch.equal(s == s.T, key[:, None] == key[None, :])


def test_index_tiebreak_reads_back_as_a_stable_descending_sort():
    scores, relevant = _scores_with_ties()
    keys = metrics._sort_keys(scores.clone(), relevant, torch.empty(2, 42, dtype=torch.int32))
    wide = metrics._sort_rows(metrics._index_tiebreak(keys)).flip(1)
    expected = torch.sort(scores, dim=1, descending=True, stable=True).indices
    assert torch.equal(41 - ((wide >> 1) & (2**31 - 1)), expected)
    assert torch.equal(wide & 1, relevant.gather(1, expected).long())


def test_only_rows_with_a_relevant_irrelevant_tie_are_ranked_again(monkeypatch):
    # query 0 (class 0): items 0 (class 1) and 2 (class 0) tie at cos 1 -> 0, 2, 1, 3 by index;
    # relevant 2 and 1 at ranks 2 and 3: AP (1/2 + 2/3) / 2 = 7/12.
    # query 1 (class 2): items 0, 1, 2 tie at cos 0 but none is relevant; item 3 ranks 1: AP 1.
    calls = []
    original = metrics._index_tiebreak
    monkeypatch.setattr(metrics, "_index_tiebreak",
                        lambda keys: calls.append(tuple(keys.shape)) or original(keys))
    query = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    database = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [2.0, 0, 0], [0, 0, 3.0]])
    eye = np.eye(3)
    res = evaluate_direction(query, eye[[0, 2]], database, eye[[1, 0, 0, 2]], k=4)
    assert calls == [(1, 4)]
    assert res.map_all == pytest.approx(19 / 24, abs=1e-12)


@pytest.mark.parametrize("multi_label", [False, True])
def test_ranking_with_the_index_in_the_key_from_the_start_gives_the_same_stats(multi_label):
    # a workspace switches to 64-bit keys once ties are the rule; both paths are exact
    q, ql, db, dl = make_data(2, multi_label)
    q, db = (torch.nn.functional.normalize(torch.as_tensor(x), dim=1) for x in (q, db))
    ql, dl = metrics._class_ids(torch.as_tensor(ql), torch.as_tensor(dl))
    pr = torch.as_tensor(metrics._pr_ranks(ND, 10))
    stats = []
    for wide in (False, True):
        work = metrics._Workspace(NQ, ND, torch.device("cpu"))
        work.wide = wide
        stats.append(metrics._rank_block(q, ql, db, dl, 5, pr, work))
    for field in ("gain_all", "gain_k", "hits_all", "hits_k", "hits_at_ranks"):
        torch.testing.assert_close(getattr(stats[0], field), getattr(stats[1], field),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("relevant_index", [0, 1])
def test_identical_rows_ranked_by_index(relevant_index):
    # items 0 and 1 point the same way (cos 1, a tie); item 2 is orthogonal (cos 0).
    # relevant item 0 -> relevance by rank 1, 0, 0 -> AP 1; relevant item 1 -> 0, 1, 0 -> AP 1/2
    query = np.array([[1.0, 0.0]])
    database = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    eye = np.eye(2)
    db_labels = eye[[1, 1, 1]]
    db_labels[relevant_index] = eye[0]
    expected = 1.0 if relevant_index == 0 else 0.5
    for chunk in (1, 1024):
        res = evaluate_direction(query, eye[[0]], database, db_labels, k=3, query_chunk=chunk)
        assert res.map_all == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("relevant_index", range(6))
def test_many_identical_rows(relevant_index):
    # six identical rows: the relevant one ranks at its index + 1, so AP = 1 / (index + 1)
    database = np.ones((6, 3))
    db_labels = np.zeros((6, 2))
    db_labels[:, 1] = 1.0
    db_labels[relevant_index] = [1.0, 0.0]
    ap = mean_average_precision(np.ones((1, 3)), np.array([[1.0, 0.0]]), database, db_labels)
    assert ap == pytest.approx(1.0 / (relevant_index + 1), abs=1e-12)


# --- queries with nothing relevant ------------------------------------------------------------

def no_hit_example():
    # both queries (1, 0); database item 0 (1, 0) cos 1, item 1 (1, 1) cos 0.707, item 2 (0, 1) 0
    # query 0 (class 0): relevant items 0, 1 -> ranks 1, 2 -> AP@all = AP@2 = 1
    # query 1 (class 1): relevant item 2 -> rank 3 -> AP@all = 1/3, nothing in the top 2
    # query 2 (class 2): nothing relevant anywhere
    queries = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    database = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    eye = np.eye(3)
    return queries, eye[[0, 1, 2]], database, eye[[0, 0, 1]]


def test_single_label_query_without_hits_scores_zero_and_counts():
    q, ql, db, dl = no_hit_example()
    res = evaluate_direction(q, ql, db, dl, k=2)
    assert res.map_all == pytest.approx((1 + 1 / 3 + 0) / 3, abs=1e-12)
    assert res.map_at_k == pytest.approx((1 + 0 + 0) / 3, abs=1e-12)


def test_multi_label_query_without_hits_is_skipped():
    q, ql, db, dl = no_hit_example()
    res = evaluate_direction(q, ql, db, dl, k=2, multi_label=True)
    assert res.map_all == pytest.approx((1 + 1 / 3) / 2, abs=1e-12)
    assert res.map_at_k == pytest.approx(1.0, abs=1e-12)


def test_multi_label_all_skipped_is_zero():
    q, ql, db, dl = no_hit_example()
    res = evaluate_direction(q[2:], ql[2:], db, dl, k=2, multi_label=True)
    assert res.map_all == 0.0
    assert res.map_at_k == 0.0


# --- precision-recall curve -------------------------------------------------------------------

@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("points", [1, 2, 5, 10, 100])
def test_pr_curve_matches_brute_force(multi_label, points):
    q, ql, db, dl = make_data(2, multi_label)
    res = evaluate_direction(q, ql, db, dl, multi_label=multi_label, points=points,
                             query_chunk=5)
    assert res.ranks.dtype == np.int64
    assert res.recall.dtype == np.float64 and res.precision.dtype == np.float64
    assert len(res.ranks) == len(res.recall) == len(res.precision) <= points
    assert np.all(np.diff(res.ranks) > 0) and res.ranks[-1] == ND
    if points >= 2:
        assert res.ranks[0] == 1
    recall, precision = reference_pr(q, ql, db, dl, res.ranks)
    np.testing.assert_allclose(res.recall, recall, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.precision, precision, rtol=0, atol=1e-9)


def test_pr_curve_end_point():
    q, ql, db, dl = make_data(4, False, all_relevant=True)
    res = evaluate_direction(q, ql, db, dl, points=10)
    assert res.recall[-1] == pytest.approx(1.0, abs=1e-12)
    fraction_relevant = ((ql @ dl.T) > 0).mean()
    assert res.precision[-1] == pytest.approx(fraction_relevant, abs=1e-12)


# --- inputs and devices -----------------------------------------------------------------------

def test_torch_inputs_match_numpy():
    q, ql, db, dl = make_data(5, True)
    expected = evaluate_direction(q, ql, db, dl, k=7, multi_label=True)
    tensors = [torch.from_numpy(a) for a in (q, ql, db, dl)]
    got = evaluate_direction(*tensors, k=7, multi_label=True, device="cpu")
    assert (got.map_all, got.map_at_k) == (expected.map_all, expected.map_at_k)
    np.testing.assert_array_equal(got.precision, expected.precision)


def test_embeddings_that_require_grad_are_accepted():
    q, ql, db, dl = hand_example()
    query = torch.tensor(q, requires_grad=True)
    res = evaluate_direction(query, ql, db, dl)
    assert res.map_all == pytest.approx(34 / 45, abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    q, ql, db, dl = make_data(6, False)
    cpu = evaluate_direction(q, ql, db, dl, k=9, query_chunk=4)
    gpu = evaluate_direction(q, ql, db, dl, k=9, query_chunk=4, device="cuda")
    assert gpu.map_all == pytest.approx(cpu.map_all, abs=1e-9)
    assert gpu.map_at_k == pytest.approx(cpu.map_at_k, abs=1e-9)
    np.testing.assert_allclose(gpu.precision, cpu.precision, rtol=0, atol=1e-9)


# --- errors -----------------------------------------------------------------------------------

def _args(nq=3, nd=4, dq=2, dd=2, cq=3, cd=3, nql=None, ndl=None):
    return (np.ones((nq, dq)), np.ones((nq if nql is None else nql, cq)),
            np.ones((nd, dd)), np.ones((nd if ndl is None else ndl, cd)))


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (_args(dd=3), {}, r"^database has width 3 but query has width 2"),
    (_args(nql=2), {}, r"^query_labels has 2 rows"),
    (_args(ndl=5), {}, r"^database_labels has 5 rows"),
    (_args(cd=4), {}, r"^database_labels has 4 classes but query_labels has 3"),
    (_args(nq=0), {}, r"^query is empty"),
    (_args(nd=0), {}, r"^database is empty"),
    (_args(), {"k": 0}, r"^k must be at least 1"),
    (_args(), {"points": 0}, r"^points must be at least 1"),
    ((np.ones(3), *_args()[1:]), {}, r"^query must be 2-D"),
    ((np.full((3, 2), np.nan), *_args()[1:]), {}, r"^query holds NaN or infinite values"),
    ((*_args()[:2], np.full((4, 2), np.inf), _args()[3]), {},
     r"^database holds NaN or infinite values"),
])
def test_errors(args, kwargs, match):
    with pytest.raises(DrclError, match=match) as info:
        evaluate_direction(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_mean_average_precision_rejects_bad_k():
    with pytest.raises(DrclError, match=r"^k must be at least 1"):
        mean_average_precision(*_args(), k=0)
    with pytest.raises(DrclError, match=r"^database is empty"):
        mean_average_precision(*_args(nd=0))


def test_chance_map_by_hand_and_against_random_rankings():
    queries = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    database = np.eye(3, dtype=np.float32)[[0, 0, 1, 2, 2, 2]]
    # shares of the database relevant to each query: 2/6, 1/6, 3/6, 3/6
    assert metrics.chance_map(queries, database, query_chunk=3) == pytest.approx(
        (2 / 6 + 1 / 6 + 3 / 6 + 3 / 6) / 4)
    multi = np.asarray([[1, 1, 0]], dtype=np.float32)  # relevant: shares any label
    assert metrics.chance_map(multi, database) == pytest.approx(3 / 6)
    # what a random order's MAP averages to, on a database of a few hundred items
    rng = np.random.default_rng(0)
    labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=400)]
    random_map = np.mean([mean_average_precision(
        rng.normal(size=(50, 8)).astype(np.float32), labels[:50],
        rng.normal(size=(400, 8)).astype(np.float32), labels) for _ in range(5)])
    assert metrics.chance_map(labels[:50], labels) == pytest.approx(random_map, abs=0.02)
