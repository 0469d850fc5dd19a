"""Re-ranking against a brute force over the full similarity matrix and hand values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drcl.rerank import Rerank, augment_database, candidates, choose, expand_queries


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.from_numpy(np.random.default_rng(seed).normal(size=(rows, dim)))
                       .float(), dim=1)


def _brute_dba(db: torch.Tensor, k: int, alpha: float) -> torch.Tensor:
    sims = db @ db.T
    out = []
    for i in range(len(db)):
        others = [j for j in np.argsort(-sims[i].numpy(), kind="stable") if j != i][:k]
        total = db[i].clone()
        for j in others:
            total += max(float(sims[i, j]), 0.0) ** alpha * db[j]
        out.append(total / total.norm())
    return torch.stack(out)


def _brute_qe(q: torch.Tensor, db: torch.Tensor, k: int, alpha: float) -> torch.Tensor:
    sims = q @ db.T
    out = []
    for i in range(len(q)):
        total = q[i].clone()
        for j in np.argsort(-sims[i].numpy(), kind="stable")[:k]:
            total += max(float(sims[i, j]), 0.0) ** alpha * db[j]
        out.append(total / total.norm())
    return torch.stack(out)


@pytest.mark.parametrize(("k", "alpha"), [(1, 1.0), (3, 3.0), (10, 2.0)])
def test_database_augmentation_is_the_brute_force(k, alpha):
    db = _unit(40, 8, 0)
    got = augment_database(db, k=k, alpha=alpha, max_block_elements=64)  # many small blocks
    assert torch.allclose(got, _brute_dba(db, k, alpha), atol=1e-5)


@pytest.mark.parametrize(("k", "alpha"), [(1, 1.0), (5, 3.0)])
def test_query_expansion_is_the_brute_force(k, alpha):
    db, q = _unit(50, 6, 1), _unit(7, 6, 2)
    got = expand_queries(q, db, k=k, alpha=alpha, max_block_elements=32)
    assert torch.allclose(got, _brute_qe(q, db, k, alpha), atol=1e-5)


def test_hand_values():
    db = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    # item 0's nearest other item is 1 (cosine 0.6): (1, 0) + 0.6 * (0.6, 0.8), normalised
    got = augment_database(db, k=1, alpha=1.0)
    want = torch.tensor([1.36, 0.48]) / torch.tensor([1.36, 0.48]).norm()
    assert torch.allclose(got[0], want, atol=1e-6)
    # item 2's best other is 0 (cosine 0, weight 0): it stays where it was
    assert torch.allclose(got[2], db[2])
    q = expand_queries(torch.tensor([[0.0, 1.0]]), db, k=2, alpha=2.0)
    want = torch.tensor([0.0, 1.0]) + 0.64 * db[1] + 0.0 * db[0]
    assert torch.allclose(q[0], want / want.norm(), atol=1e-6)


def test_off_changes_nothing_and_comes_first():
    db = _unit(10, 4, 3)
    assert augment_database(db, k=0, alpha=3.0) is db
    assert expand_queries(db, db, k=0, alpha=3.0) is db
    listed = candidates([0, 5], [0, 2], [1.0, 3.0])
    assert listed[0] == Rerank(alpha=1.0) and listed[0].off
    assert len(listed) == 1 + 3 * 2 and len(set(listed)) == len(listed)


def test_choose_keeps_off_when_nothing_beats_it_and_takes_what_helps():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    classes = np.arange(60) % 4
    labels = {m: np.eye(4)[classes] for m in ("a", "b")}
    clustered = {m: centers[classes] + rng.normal(scale=2.0, size=(60, 16)) for m in labels}
    best, table = choose(clustered, labels, candidates([0, 5], [0, 5], [3.0]), multi_label=False)
    assert table[0]["dba_k"] == table[0]["qe_k"] == 0
    assert not best.off and max(r["map_all"] for r in table) > table[0]["map_all"]
    same = Rerank(alpha=1.0)  # equal to off in effect: a tie keeps the first
    first, table = choose(clustered, labels, [Rerank(), same], multi_label=False)
    assert first == Rerank() and table[0]["map_all"] == table[1]["map_all"]
