"""SPL: the orthogonal start, the quality score, and the choice of the best-scoring modality."""

import pytest
import torch

from drcl.model import Encoder, EncoderSpec
from drcl.prior import Candidate, learn_candidate, orthogonal_init, quality_score, select_prior


def test_orthogonal_init_has_orthonormal_columns_and_is_seeded():
    w = orthogonal_init(16, 5, seed=3)
    assert w.shape == (16, 5)
    assert torch.allclose(w.T @ w, torch.eye(5), atol=1e-5)
    assert torch.equal(w, orthogonal_init(16, 5, seed=3))
    assert not torch.equal(w, orthogonal_init(16, 5, seed=4))


def test_quality_score_brute_force():
    torch.manual_seed(0)
    enc = Encoder(EncoderSpec(modality="m", input_dim=4, hidden_dim=8, common_dim=6))
    w = torch.randn(6, 3)
    x = torch.randn(10, 4)
    y = torch.eye(3)[torch.arange(10) % 3]
    expected = 0.0
    for i in range(10):
        with torch.no_grad():
            p = torch.softmax(enc(x[i:i + 1]) @ w, dim=1)[0]
        expected += sum(float(y[i, c] * p[c]) for c in range(3))
    expected /= 10
    assert quality_score(enc, w, x, y, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_spl_picks_the_modality_with_the_best_score(tiny_params, synthetic_modality):
    params = tiny_params(**{"train.epochs": 8})
    strong = synthetic_modality("strong", dim=6, sizes=(60, 20, 20), classes=3, signal=4.0, seed=1)
    noise = synthetic_modality("noise", dim=6, sizes=(60, 20, 20), classes=3, signal=0.0, seed=2)
    result = select_prior([noise, strong], num_classes=3, params=params,
                          device=torch.device("cpu"))
    scores = result.summary()["scores"]
    assert result.chosen == "strong"
    assert scores["strong"] == max(scores.values())
    assert scores["strong"] > scores["noise"]
    assert torch.equal(result.prior, result.candidates["strong"].prior_best)
    # every candidate starts from the same W0
    w0 = orthogonal_init(16, 3, seed=params.seed)
    assert result.prior.shape == w0.shape
    assert not torch.equal(result.prior, w0)


def test_spl_choice_follows_the_scores(monkeypatch, tiny_params, synthetic_modality):
    """The choice is the argmax of S_k, whatever the modality order."""
    params = tiny_params()
    scores = {"a": 0.4, "b": 0.9, "c": 0.7}

    def fake_candidate(data, w0, *, params, device):
        return Candidate(modality=data.name, best_score=scores[data.name], best_epoch=1,
                         prior_best=w0 + scores[data.name], prior_last=w0 - 1)

    monkeypatch.setattr("drcl.prior.learn_candidate", fake_candidate)
    mods = [synthetic_modality(m, dim=3, sizes=(6, 3, 3), classes=3, signal=1, seed=0)
            for m in scores]
    result = select_prior(mods, num_classes=3, params=params, device=torch.device("cpu"))
    assert result.chosen == "b"
    w0 = orthogonal_init(16, 3, seed=params.seed)
    assert torch.equal(result.prior, w0 + 0.9)
    last = select_prior(mods, num_classes=3, params=tiny_params(**{"prior.spl_snapshot": "last"}),
                        device=torch.device("cpu"))
    assert torch.equal(last.prior, w0 - 1)


def test_snapshot_best_is_w_at_the_best_epoch(tiny_params, synthetic_modality):
    params = tiny_params(**{"train.epochs": 6, "prior.lr": 5e-2})
    data = synthetic_modality("m", dim=5, sizes=(40, 10, 10), classes=4, signal=1.0, seed=5)
    w0 = orthogonal_init(16, 4, seed=0)
    cand = learn_candidate(data, w0, params=params, device=torch.device("cpu"))
    best = max(cand.history, key=lambda h: h["score"])
    assert cand.best_epoch == best["epoch"]
    assert cand.best_score == pytest.approx(best["score"])
    assert len(cand.history) == 6
    # replaying the same seed to the best epoch gives the best snapshot
    replay = learn_candidate(data, w0, params=tiny_params(**{"train.epochs": cand.best_epoch,
                                                             "prior.lr": 5e-2}),
                             device=torch.device("cpu"))
    assert torch.allclose(replay.prior_last, cand.prior_best)
    if cand.best_epoch != 6:
        assert not torch.equal(cand.prior_best, cand.prior_last)


def test_orthogonal_baseline_skips_spl(tiny_params):
    params = tiny_params(**{"prior.method": "orthogonal"})
    result = select_prior([], num_classes=3, params=params, device=torch.device("cpu"))
    assert result.chosen is None and result.candidates == {}
    assert torch.equal(result.prior, orthogonal_init(16, 3, seed=0))


@pytest.mark.parametrize("split", ["train", "val"])
def test_quality_score_reads_the_configured_split(monkeypatch, tiny_params, synthetic_modality,
                                                  split):
    import drcl.prior as prior_module

    seen = []
    original = prior_module.quality_score

    def spy(encoder, prior, features, labels, *, batch_size):
        seen.append((features.clone(), labels.clone()))
        return original(encoder, prior, features, labels, batch_size=batch_size)

    monkeypatch.setattr(prior_module, "quality_score", spy)
    data = synthetic_modality("m", dim=5, sizes=(40, 12, 10), classes=4, signal=1.0, seed=2)
    params = tiny_params(**{"train.epochs": 2, "prior.score_split": split})
    learn_candidate(data, orthogonal_init(16, 4, seed=0), params=params,
                    device=torch.device("cpu"))
    expected = getattr(data, split)
    assert len(seen) == 2
    for features, labels in seen:
        assert torch.equal(features, torch.as_tensor(expected.features))
        assert torch.equal(labels, torch.as_tensor(expected.labels))
