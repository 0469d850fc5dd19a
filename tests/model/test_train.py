"""RSC training: mixup, model selection, small modalities, options, reproducibility."""

import pytest
import torch

from drcl.errors import DrclError
from drcl.prior import orthogonal_init
from drcl.train import mix, train_encoder

CPU = torch.device("cpu")


@pytest.fixture
def data(synthetic_modality):
    return synthetic_modality("img", dim=7, sizes=(90, 30, 30), classes=3, signal=2.0, seed=0)


def test_mix_is_a_convex_combination_with_a_permuted_partner():
    f = torch.arange(12.0).reshape(4, 3)
    y = torch.eye(4)
    gen = torch.Generator().manual_seed(0)
    fm, ym = mix(f, y, weight=0.9, generator=gen)
    partner = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fm, 0.9 * f + 0.1 * f[partner])
    assert torch.allclose(ym, 0.9 * y + 0.1 * y[partner])
    assert torch.allclose(ym.sum(dim=1), torch.ones(4))


def test_training_lowers_validation_loss_and_keeps_the_best_epoch(tiny_params, data):
    result = train_encoder(data, orthogonal_init(16, 3, seed=0),
                           params=tiny_params(**{"train.epochs": 8}), device=CPU)
    history = result.history
    assert [h["epoch"] for h in history] == list(range(1, 9))
    best = min(history, key=lambda h: h["val_loss"])
    assert result.best_epoch == best["epoch"]
    assert result.best_val_loss == pytest.approx(best["val_loss"])
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_selected_weights_are_those_of_the_best_epoch(tiny_params, data):
    w = orthogonal_init(16, 3, seed=0)
    full = train_encoder(data, w, params=tiny_params(**{"train.epochs": 8, "train.lr": 1e-2}),
                         device=CPU)
    replay = train_encoder(data, w, params=tiny_params(**{"train.epochs": full.best_epoch,
                                                          "train.lr": 1e-2}), device=CPU)
    for a, b in zip(full.encoder.state_dict().values(), replay.encoder.state_dict().values(),
                    strict=True):
        assert torch.allclose(a, b)


def test_modality_smaller_than_the_batch_still_trains(tiny_params, synthetic_modality):
    data = synthetic_modality("img", dim=7, sizes=(10, 30, 30), classes=3, signal=2.0,
                              seed=0)
    params = tiny_params(**{"train.batch_size": 256, "train.epochs": 2})
    w = orthogonal_init(16, 3, seed=0)
    frozen = tiny_params(**{"train.batch_size": 256, "train.epochs": 1, "train.lr": 1e-12})
    before = train_encoder(data, w, params=frozen, device=CPU).encoder.state_dict()
    after = train_encoder(data, w, params=params, device=CPU).encoder.state_dict()
    changed = [k for k in after if k.startswith("net") and not torch.allclose(before[k], after[k])]
    assert changed, "no optimisation step was taken"


def test_seeded_runs_are_reproducible(tiny_params, data):
    w = orthogonal_init(16, 3, seed=0)
    a = train_encoder(data, w, params=tiny_params(), device=CPU)
    b = train_encoder(data, w, params=tiny_params(), device=CPU)
    assert a.history == b.history
    for x, y in zip(a.encoder.state_dict().values(), b.encoder.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    c = train_encoder(data, w, params=tiny_params(seed=1), device=CPU)
    assert c.history != a.history


@pytest.mark.parametrize("overrides", [
    {"train.use_fa": False},
    {"train.use_mrr": False},
    {"train.mixup.kind": "beta", "train.mixup.beta_a": 0.5},
    {"train.mse_reduction": "sum"},
    {"train.lr_per_modality": {"img": 1e-2}},
])
def test_options_train_and_change_the_run(tiny_params, data, overrides):
    w = orthogonal_init(16, 3, seed=0)
    base = train_encoder(data, w, params=tiny_params(), device=CPU)
    other = train_encoder(data, w, params=tiny_params(**overrides), device=CPU)
    assert other.history != base.history
    if overrides.get("train.use_mrr") is False:
        assert all(h["train_structure"] == 0 and h["train_mse"] == 0 for h in other.history)
    if overrides.get("train.mse_reduction") == "sum":
        # a per-sample sum over d is d times the element mean
        ratio = other.history[0]["train_mse"] / base.history[0]["train_mse"]
        assert 16 * 0.5 < ratio < 16 * 2


def test_prior_with_other_classes_is_rejected(tiny_params, data):
    with pytest.raises(DrclError, match="classes"):
        train_encoder(data, orthogonal_init(16, 4, seed=0), params=tiny_params(), device=CPU)


def test_target_map_is_the_mean_reciprocal_rank_of_the_true_class(tiny_params, data):
    from drcl.train import prior_pseudo_inverse, target_map

    torch.manual_seed(0)
    w = orthogonal_init(16, 3, seed=0)
    enc = train_encoder(data, w, params=tiny_params(**{"train.epochs": 1}), device=CPU).encoder
    x = torch.as_tensor(data.val.features)
    y = torch.as_tensor(data.val.labels)
    w_pinv = prior_pseudo_inverse(w)
    with torch.no_grad():
        f = enc(x)
    expected = 0.0
    for i in range(len(x)):
        sims = [float(f[i] @ w_pinv[c] / w_pinv[c].norm()) for c in range(3)]
        true = int(y[i].argmax())
        rank = 1 + sum(1 for c in range(3) if sims[c] > sims[true] or (sims[c] == sims[true]
                                                                     and c < true))
        expected += 1 / rank
    expected /= len(x)
    assert target_map(enc, x, y, w_pinv, batch_size=7) == pytest.approx(expected, rel=1e-6)


def test_target_map_selection_keeps_the_best_scoring_epoch(tiny_params, data):
    params = tiny_params(**{"train.epochs": 6, "train.selection": "target_map",
                            "train.lr": 1e-2})
    result = train_encoder(data, orthogonal_init(16, 3, seed=0), params=params, device=CPU)
    scores = [h["val_target_map"] for h in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    assert result.best_score == pytest.approx(max(scores))


def test_standardisation_is_the_setting_or_the_probes_choice(tiny_params, data):
    w = orthogonal_init(16, 3, seed=0)
    runs = {setting: train_encoder(data, w, params=tiny_params(**{"model.standardize": setting}),
                                   device=CPU) for setting in (True, False, "auto")}
    assert runs[True].history != runs[False].history
    assert runs[True].standardization.how == runs[False].standardization.how == "params"
    auto = runs["auto"].standardization
    assert auto.how == "auto" and auto.gain is not None and auto.stderr is not None
    # the probe only decides: training then runs exactly as with that setting
    assert runs["auto"].history == runs[auto.standardize].history
    override = tiny_params(**{"model.standardize": "auto",
                              "model.standardize_per_modality": {"img": not auto.standardize}})
    assert train_encoder(data, w, params=override, device=CPU).history == \
        runs[not auto.standardize].history


def test_a_loss_that_becomes_nan_stops_with_the_modality_and_epoch(tiny_params, data):
    from dataclasses import replace

    import numpy as np

    from drcl.data.dataset import Split

    huge = replace(data, train=Split(data.train.features * np.float32(3e38), data.train.labels))
    with pytest.raises(DrclError, match=r"^train@img: the loss became NaN or infinite at epoch 1"):
        train_encoder(huge, orthogonal_init(16, 3, seed=0),
                      params=tiny_params(**{"model.standardize": False}), device=CPU)


def test_a_per_modality_setting_trains_as_the_shared_one_would(tiny_params, data):
    """train.per_modality.<m> is the shared key, for m alone: the same weights either way."""
    w = orthogonal_init(16, 3, seed=0)
    shared = train_encoder(data, w, params=tiny_params(**{
        "train.lr": 1e-2, "train.alpha": 0.3, "train.mixup.g": 0.7}), device=CPU)
    own = train_encoder(data, w, params=tiny_params(**{"train.per_modality": {
        "img": {"lr": 1e-2, "alpha": 0.3, "mixup": {"g": 0.7}},
        "other": {"lr": 1e-5}}}), device=CPU)
    assert own.history == shared.history
    for x, y in zip(own.encoder.state_dict().values(), shared.encoder.state_dict().values(),
                    strict=True):
        assert torch.equal(x, y)


def test_each_epoch_reports_its_validation_target_map(tiny_params, data):
    seen = []
    result = train_encoder(data, orthogonal_init(16, 3, seed=0), params=tiny_params(),
                           device=CPU, on_epoch=lambda e, v: seen.append((e, v)))
    assert [e for e, _ in seen] == list(range(1, 6))
    assert [v for _, v in seen] == [h["val_target_map"] for h in result.history]
    with pytest.raises(KeyboardInterrupt):  # a pruner stops training by raising
        train_encoder(data, orthogonal_init(16, 3, seed=0), params=tiny_params(), device=CPU,
                      on_epoch=lambda e, v: (_ for _ in ()).throw(KeyboardInterrupt()))
