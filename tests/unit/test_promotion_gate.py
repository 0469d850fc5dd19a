"""The promotion gate alone: each threshold, the gain on common directions, no champion yet."""

from __future__ import annotations

import pytest

from drcl.config import PromotionParams
from drcl.errors import DrclError
from drcl.promotion import decide

RULES = PromotionParams(min_mean_map=0.5, min_direction_map=0.3, min_gain=0.01)
GOOD = {"a->b": 0.8, "b->a": 0.7}


def test_first_set_needs_only_the_floors():
    decision = decide(GOOD, None, RULES, gain_required=True)
    assert decision.promoted and decision.gain is None and decision.mean_map == pytest.approx(0.75)


@pytest.mark.parametrize(("candidate", "champion", "reason"), [
    ({"a->b": 0.45, "b->a": 0.45}, None, "mean MAP@all 0.4500 < promotion.min_mean_map 0.5"),
    ({"a->b": 0.95, "b->a": 0.25}, None, "MAP@all b->a 0.2500 < promotion.min_direction_map"),
    (GOOD, {"a->b": 0.8, "b->a": 0.695}, "gain +0.0025 over the champions on 2 direction(s)"),
    (GOOD, {"a->b": 0.9, "b->a": 0.9}, "gain -0.1500"),
])
def test_each_threshold_fails_alone(candidate, champion, reason):
    decision = decide(candidate, champion, RULES, gain_required=True)
    assert not decision.promoted
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith(reason)


def test_gain_is_measured_on_common_directions_only():
    candidate = GOOD | {"a->c": 0.6, "c->a": 0.6}
    decision = decide(candidate, {"a->b": 0.7, "b->a": 0.7}, RULES, gain_required=True)
    assert decision.promoted and decision.compared_on == ("a->b", "b->a")
    assert decision.gain == pytest.approx(0.05)


def test_a_new_modality_has_nothing_to_gain_over():
    candidate = {"a->c": 0.6, "c->a": 0.6}
    champion = {}  # the champions exist but cannot be measured on the new directions
    assert decide(candidate, champion, RULES, gain_required=False).promoted
    refused = decide(candidate, champion, RULES, gain_required=True)
    assert refused.reasons == ("no direction in common with the champions to measure the "
                               "gain on",)


def test_nothing_to_measure_is_an_error():
    with pytest.raises(DrclError, match="no direction to evaluate"):
        decide({}, None, RULES, gain_required=False)


CHANCE = {"a->b": 0.25, "b->a": 0.25}


def test_on_noisy_labels_the_floors_give_way_to_chance():
    noisy = {"a->b": 0.31, "b->a": 0.27}  # far below the floors, as noisy labels measure
    assert not decide(noisy, None, RULES, gain_required=True).promoted
    decision = decide(noisy, None, RULES, gain_required=True, chance=CHANCE)
    assert decision.promoted and decision.reasons == ()
    at_chance = decide({"a->b": 0.31, "b->a": 0.25}, None, RULES, gain_required=True,
                       chance=CHANCE)
    assert at_chance.reasons == ("MAP@all b->a 0.2500 (chance 0.2500) not above chance on "
                                 "noisy labels",)
    # the gain over the champions, measured on the same labels, still decides
    worse = decide(noisy, {"a->b": 0.33, "b->a": 0.29}, RULES, gain_required=True,
                   chance=CHANCE)
    assert worse.reasons == ("gain -0.0200 over the champions on 2 direction(s) < "
                             "promotion.min_gain 0.01",)
