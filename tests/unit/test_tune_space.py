"""How a search's values map onto the train settings: the first trial is the settings a
modality trains with now (the model's width where the train group names none), save a key whose
value the space cannot hold; found values nest into `train.per_modality`."""

from __future__ import annotations

import pytest

from drcl.config import SearchRange, parse_params
from drcl.tune import current_values, first_trial, nested, with_override

SPACE = {"train.lr": SearchRange(low=1e-3, high=1e-2, log=True),
         "train.hidden_dim": SearchRange(choices=[16, 48]),
         "train.mixup.g": SearchRange(low=0.6, high=1.0)}


def params(**train):
    return parse_params({"model": {"hidden_dim": 32}, "train": {"lr": 3e-4, **train}})


def test_the_current_values_take_the_models_width_and_per_modality_overrides():
    p = params(per_modality={"b": {"lr": 5e-3, "hidden_dim": 48}})
    assert current_values(p, "a", SPACE) == {"train.lr": 3e-4, "train.hidden_dim": 32,
                                             "train.mixup.g": 0.9}
    assert current_values(p, "b", SPACE) == {"train.lr": 5e-3, "train.hidden_dim": 48,
                                             "train.mixup.g": 0.9}


def test_the_first_trial_leaves_out_a_value_outside_the_choices_only():
    p = params(per_modality={"b": {"hidden_dim": 48}})
    # lr 3e-4 lies below the range: a trial may hold it (Optuna warns); 32 is no choice
    assert first_trial(p, "a", SPACE) == {"train.lr": 3e-4, "train.mixup.g": 0.9}
    assert first_trial(p, "b", SPACE)["train.hidden_dim"] == 48


def test_found_values_nest_into_one_modalitys_train_settings():
    found = nested({"train.hidden_dim": 48, "train.mixup.g": 0.8, "train.lr": 1e-3})
    assert found == {"hidden_dim": 48, "mixup": {"g": 0.8}, "lr": 1e-3}
    p = with_override(params(), "a", found)
    assert p.train.for_modality("a").hidden_dim == 48
    assert p.train.for_modality("a").mixup.g == pytest.approx(0.8)
    assert p.train.for_modality("b").hidden_dim is None  # the others keep the model's
