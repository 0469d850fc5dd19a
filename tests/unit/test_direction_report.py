"""The MAP table that evaluation and promotion share: one entry per direction, the mean first."""

from __future__ import annotations

import numpy as np
import pytest

from drcl.metrics import direction_report, evaluate_direction


def test_table_lists_each_direction_and_their_mean():
    rng = np.random.default_rng(0)
    embeddings = {m: rng.normal(size=(12, 4)) for m in ("a", "b", "c")}
    labels = {m: np.eye(3)[np.arange(12) % 3] for m in embeddings}
    tables, results = direction_report(embeddings, labels, k=5, multi_label=False)
    assert list(tables) == ["map_all", "map_at_5"]
    assert list(tables["map_all"]) == ["mean", "a->b", "a->c", "b->a", "b->c", "c->a", "c->b"]
    one = evaluate_direction(embeddings["b"], labels["b"], embeddings["c"], labels["c"], k=5)
    assert tables["map_all"]["b->c"] == one.map_all and results["b->c"].map_at_k == one.map_at_k
    values = [v for d, v in tables["map_at_5"].items() if d != "mean"]
    assert tables["map_at_5"]["mean"] == pytest.approx(sum(values) / len(values))

    chosen, _ = direction_report(embeddings, labels, k=5, multi_label=False,
                                 directions=[("c", "a")])
    assert chosen["map_all"] == {"mean": tables["map_all"]["c->a"],
                                 "c->a": tables["map_all"]["c->a"]}
