"""Label correction by partial OT: the trusted-mass schedule, hand-made plans, and a noisy data
set whose kept labels come out more accurate than the noise, without reading the clean ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drcl.config import CorrectionParams
from drcl.correction import correct_labels, trusted_mass
from drcl.errors import DrclError


class Logits(torch.nn.Module):
    """Stands in for an encoder: the features are the logits (with an identity prior)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_trusted_mass_grows_after_the_warm_up():
    cfg = CorrectionParams(method="partial_ot", warmup=2, mass_start=0.4, mass_end=0.8)
    masses = [trusted_mass(e, 7, cfg) for e in range(1, 8)]
    assert masses[:2] == [None, None]
    assert masses[2:] == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8])
    assert trusted_mass(5, 7, CorrectionParams()) is None  # method none


def logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    return torch.log(torch.tensor(probabilities))


GIVEN = torch.eye(2)[[0, 0, 1, 1]]
# item 0 is surely class 0, item 1 surely class 1 (its label 0 is wrong), item 2 surely
# class 1, item 3 unsure
POSTERIORS = logits_for([[0.99, 0.01], [0.01, 0.99], [0.01, 0.99], [0.5, 0.5]])


def test_selection_keeps_the_surest_items_that_agree_with_their_labels():
    cfg = CorrectionParams(method="partial_ot", eps=0.01)
    found = correct_labels(Logits(), POSTERIORS, GIVEN, torch.eye(2), mass=0.5, cfg=cfg,
                           batch_size=2)
    assert found.kept.tolist() == [True, False, True, False]
    assert torch.equal(found.labels, GIVEN) and found.changed == 0.0


def test_relabelling_gives_the_plans_class():
    cfg = CorrectionParams(method="partial_ot", eps=0.01, relabel=True)
    found = correct_labels(Logits(), POSTERIORS, GIVEN, torch.eye(2), mass=0.75, cfg=cfg,
                           batch_size=4)
    assert found.kept.tolist() == [True, True, True, False]
    assert found.labels.argmax(1)[:3].tolist() == [0, 1, 1]
    assert found.changed == pytest.approx(1 / 3)


def noisy_modality(synthetic_modality, rate: float, seed: int = 0):
    """A separable 4-class modality whose training labels are wrong at `rate`."""
    from dataclasses import replace

    from drcl.data.dataset import Split

    data = synthetic_modality("image", dim=8, sizes=(400, 80, 80), classes=4, signal=2.5,
                              seed=seed)
    rng = np.random.default_rng(seed)
    y = data.train.labels.argmax(1)
    wrong = rng.permutation(len(y))[:round(rate * len(y))]
    noisy = y.copy()
    noisy[wrong] = (y[wrong] + rng.integers(1, 4, wrong.size)) % 4
    train = Split(data.train.features, np.eye(4, dtype=np.float32)[noisy])
    return replace(data, train=train), y


def test_kept_labels_are_more_accurate_than_the_noise(synthetic_modality, tiny_params):
    from drcl.prior import orthogonal_init
    from drcl.train import train_encoder

    data, truth = noisy_modality(synthetic_modality, rate=0.4)
    params = tiny_params(**{"train.epochs": 12, "train.correction.method": "partial_ot",
                            "train.correction.warmup": 4})
    seen = []

    def observe(epoch, corrected):
        used = corrected.labels.argmax(1).numpy()
        kept = corrected.kept.numpy()
        seen.append((used[kept] == truth[kept]).mean())
        return {"accuracy": float(seen[-1])}

    result = train_encoder(data, orthogonal_init(16, 4, seed=0), params=params,
                           device=torch.device("cpu"), observe=observe)
    assert len(seen) == 8 and all(math.isfinite(a) for a in seen)
    assert min(seen) > 0.6 + 0.15  # the given labels are 0.6 right
    record = result.history[-1]
    assert {"correction_mass", "correction_kept", "correction_changed", "accuracy"} <= set(record)
    assert record["correction_mass"] == pytest.approx(0.9)


def test_multi_label_data_is_refused(synthetic_modality, tiny_params):
    from dataclasses import replace

    from drcl.data.dataset import Split
    from drcl.prior import orthogonal_init
    from drcl.train import train_encoder

    data = synthetic_modality("tags", dim=4, sizes=(20, 8, 8), classes=3, signal=1.0, seed=0)
    labels = data.train.labels.copy()
    labels[0] = 1.0
    data = replace(data, train=Split(data.train.features, labels))
    params = tiny_params(**{"train.epochs": 3, "train.correction.method": "partial_ot",
                            "train.correction.warmup": 1})
    with pytest.raises(DrclError, match="train.correction.method: partial_ot assigns one class "
                                        "per item; modality 'tags' is multi-label"):
        train_encoder(data, orthogonal_init(16, 3, seed=0), params=params,
                      device=torch.device("cpu"))


def test_partners_are_matched_by_item_id_and_averaged_with_the_own_posterior():
    from drcl.correction import partners_of

    found = {"image": (np.asarray(["a", "b"]), np.asarray([[0.9, 0.1], [0.5, 0.5]])),
             "text": (np.asarray(["b", "c"]), np.asarray([[0.2, 0.8], [0.6, 0.4]])),
             "audio": (np.asarray(["b"]), np.asarray([[0.0, 1.0]]))}
    partners = partners_of(found, "image", np.asarray(["a", "b"]), torch.device("cpu"))
    assert partners.count.tolist() == [0.0, 2.0]
    torch.testing.assert_close(partners.total, torch.tensor([[0.0, 0.0], [0.2, 1.8]]))
    blended = partners.blend(torch.tensor([[0.9, 0.1], [0.5, 0.5]]))
    torch.testing.assert_close(blended, torch.tensor([[0.9, 0.1], [0.7 / 3, 2.3 / 3]]))
