"""`model.standardize: auto`: the probe's score against brute force, the paired test by hand,
and the choice on data where the answer is known; test data and other modalities never count."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from drcl.data.dataset import ModalityData, Split
from drcl.standardization import (
    MIN_Z,
    choose_standardization,
    class_average_precision,
    paired_gain,
)

CPU = torch.device("cpu")


def brute_force_ap(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    out = []
    for s, y in zip(scores, labels, strict=True):
        if y.sum() == 0:
            continue
        order = sorted(range(len(s)), key=lambda c: (-s[c], c))
        hits, total = 0, 0.0
        for rank, c in enumerate(order, 1):
            if y[c]:
                hits += 1
                total += hits / rank
        out.append(total / float(y.sum()))
    return out


def test_class_average_precision_matches_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 6)).astype(np.float32)  # many ties
    labels = (rng.random((50, 6)) < 0.3).astype(np.float32)
    got = class_average_precision(torch.as_tensor(scores), torch.as_tensor(labels)).numpy()
    np.testing.assert_allclose(got, brute_force_ap(scores, labels), rtol=1e-12)


def test_class_average_precision_by_hand():
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.2, 0.7]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # row 0: true class ranked 2nd -> 1/2; row 1: ranks 2 and 3 (tie by index) -> (1/2 + 2/3)/2
    np.testing.assert_allclose(class_average_precision(scores, labels).numpy(),
                               [0.5, (0.5 + 2 / 3) / 2])


def test_paired_gain_by_hand():
    gain, stderr = paired_gain(np.array([1.0, 0.5, 0.75]), np.array([0.5, 0.5, 0.5]))
    assert gain == pytest.approx(0.25)
    assert stderr == pytest.approx(0.25 / np.sqrt(3))  # differences .5, 0, .25: sd 0.25
    assert paired_gain(np.array([]), np.array([])) == (0.0, 0.0)


def scaled_modality(*, informative_scale: float, noise_scale: float, seed: int = 0) -> ModalityData:
    """Two informative columns and eight noise columns, each group at its own scale."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 2)) * 3

    def split(n: int) -> Split:
        ids = np.arange(n) % 4
        informative = (centers[ids] + rng.normal(size=(n, 2))) * informative_scale
        noise = rng.normal(size=(n, 8)) * noise_scale
        features = np.hstack([informative, noise]).astype(np.float32)
        return Split(features, np.eye(4, dtype=np.float32)[ids])

    return ModalityData("m", train=split(240), val=split(200), test=split(80))


@pytest.mark.parametrize(("informative_scale", "noise_scale", "expected"), [
    (1e-3, 1.0, True),   # the signal is invisible next to the noise until standardised
    (1.0, 1e-3, False),  # standardising blows tiny noise up to the signal's size
])
def test_auto_standardises_when_it_clearly_helps(tiny_params, informative_scale, noise_scale,
                                                 expected):
    params = tiny_params(**{"model.standardize": "auto", "train.epochs": 20})
    data = scaled_modality(informative_scale=informative_scale, noise_scale=noise_scale)
    choice = choose_standardization(data, params, CPU)
    assert choice.how == "auto" and choice.standardize is expected
    assert (choice.gain >= MIN_Z * choice.stderr) is expected
    assert choice.as_dict()["standardized_score"] == choice.standardized_score
    assert set(choice.metrics()) == {"standardize.standardize", "standardize.raw_score",
                                     "standardize.standardized_score", "standardize.gain",
                                     "standardize.stderr"}


def test_the_choice_never_reads_test_data(tiny_params):
    params = tiny_params(**{"model.standardize": "auto"})
    data = scaled_modality(informative_scale=1e-3, noise_scale=1.0)
    spoiled = replace(data, test=Split(np.full_like(data.test.features, np.nan),
                                       np.zeros_like(data.test.labels)))
    assert choose_standardization(spoiled, params, CPU) == choose_standardization(data, params, CPU)


def test_a_setting_is_taken_as_given(tiny_params):
    data = scaled_modality(informative_scale=1e-3, noise_scale=1.0)
    params = tiny_params(**{"model.standardize": "auto",
                            "model.standardize_per_modality": {"m": False}})
    choice = choose_standardization(data, params, CPU)
    assert (choice.standardize, choice.how, choice.gain) == (False, "params", None)
    assert choice.as_dict() == {"standardize": False, "how": "params"}
