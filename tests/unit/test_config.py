"""params.yaml schema: defaults, and every kind of bad value rejected with the key's name."""

import re
from pathlib import Path

import pytest
import yaml

from drcl.config import Params, load_params, parse_params
from drcl.errors import DrclError

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "uci_mfeat"
    assert params.data.modalities == ["fou", "fac", "kar", "pix", "zer", "mor"]
    assert params.prior.method == "spl" and params.prior.spl_snapshot == "best"


def test_no_default_names_a_data_sets_modalities():
    """Switching data sets needs only data.modalities: nothing else names a modality."""
    params = load_params(ROOT / "params.yaml")
    assert params.model.standardize == "auto"
    assert params.model.standardize_per_modality == {}
    assert params.train.lr_per_modality == {} and params.extract.extractors == {}
    other = parse_params({**yaml.safe_load((ROOT / "params.yaml").read_text()),
                          "data": {"source": "npz", "path": "scene.npz",
                                   "modalities": ["view0", "view1", "view2"]}})
    assert other.model.standardize_for("view0") == "auto"


def test_standardize_settings():
    p = parse_params({"model": {"standardize": False, "standardize_per_modality": {"a": True,
                                                                                  "b": "auto"}}})
    assert [p.model.standardize_for(m) for m in "abc"] == [True, "auto", False]


def test_defaults_follow_the_method():
    p = Params()
    assert (p.train.alpha, p.train.beta, p.train.mixup.g) == (0.1, 0.1, 0.9)
    assert p.train.mse_reduction == "mean" and p.train.use_fa and p.train.use_mrr
    assert p.prior.lr == 5e-4


@pytest.mark.parametrize(("raw", "key"), [
    ({"trian": {}}, "trian: unknown key"),
    ({"train": {"lr": -1e-3}}, "train.lr"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"mixup": {"kind": "cutmix"}}}, "train.mixup.kind"),
    ({"train": {"mixup": {"g": 1.5}}}, "train.mixup.g"),
    ({"train": {"lr_per_modality": {"img": -1}}}, "train.lr_per_modality.img"),
    ({"prior": {"method": "random"}}, "prior.method"),
    ({"prior": {"spl_snapshot": "first"}}, "prior.spl_snapshot"),
    ({"prior": {"score_split": "test"}}, "prior.score_split"),
    ({"model": {"common_dim": 0}}, "model.common_dim"),
    ({"model": {"standardise": True}}, "model.standardise: unknown key"),
    ({"device": "gpu"}, "device"),
    ({"data": {"source": "npz"}}, "data.path is required"),
    ({"data": {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}}, "sum to 1"),
    ({"data": {"modalities": ["a", "a"]}}, "data.modalities"),
    ({"data": {"modalities": ["a"]}, "train": {"lr_per_modality": {"b": 1e-3}}},
     "train.lr_per_modality names b, not in data.modalities [a]"),
    ({"model": {"standardize": "maybe"}},
     "model.standardize: expected auto, true or false, got 'maybe'"),
    ({"model": {"standardize": 1}}, "model.standardize: expected auto, true or false, got 1"),
    ({"model": {"standardize_per_modality": {"img": "maybe"}}},
     "model.standardize_per_modality: img: expected auto, true or false, got 'maybe'"),
    ({"data": {"modalities": ["view0", "view1"]},
      "model": {"standardize_per_modality": {"fou": False, "view1": True}}},
     "model.standardize_per_modality names fou, not in data.modalities [view0, view1]"),
])
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(DrclError) as err:
        parse_params(raw)
    message = str(err.value)
    assert key in message
    assert "\n" not in message


def test_checks_that_need_the_data():
    with pytest.raises(DrclError, match="model.common_dim: 8 is smaller than the number of cl"):
        parse_params({"model": {"common_dim": 8}}, num_classes=10)
    with pytest.raises(DrclError, match=r"names zz, not in the data set \[img, txt\]"):
        parse_params({"train": {"lr_per_modality": {"zz": 1e-3}}}, modalities=["img", "txt"])
    assert parse_params({"model": {"common_dim": 10}}, num_classes=10).model.common_dim == 10


def test_file_errors(tmp_path):
    with pytest.raises(DrclError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 0\ntrain: [unclosed\n")
    with pytest.raises(DrclError, match=r"params.yaml:3:1: not valid YAML \(expected ',' or ']'"):
        load_params(bad)
    bad.write_text(yaml.safe_dump({"train": {"batch_size": -5}}))
    with pytest.raises(DrclError, match=rf"{bad.name}: train.batch_size"):
        load_params(bad)


@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"correction": {"method": "partial_ot", "mass_start": 0.9, "mass_end": 0.5}}},
     "mass_end 0.5 < mass_start 0.9; the trusted share grows over training"),
    ({"train": {"epochs": 5, "correction": {"method": "partial_ot", "warmup": 5}}},
     "correction.warmup: 5 warm-up epochs leave none of train.epochs 5"),
    ({"train": {"correction": {"method": "partial_ot", "cost": "others"}}},
     "train.correction.cost: Input should be 'own' or 'cross_modal'"),
    ({"train": {"label_loss": "mae"}}, "train.label_loss: Input should be 'gce' or 'ce'"),
])
def test_bad_correction_settings_are_one_line(raw, message):
    with pytest.raises(DrclError) as caught:
        parse_params(raw)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_per_modality_settings_override_the_shared_ones_for_one_modality():
    params = parse_params({"train": {"lr": 1e-3, "lr_per_modality": {"b": 5e-3},
                                     "per_modality": {"a": {"lr": 2e-3, "mixup": {"g": 0.5}},
                                                      "b": {"alpha": 0.4}}}})
    a, b, c = (params.train.for_modality(m) for m in "abc")
    assert (a.lr, a.mixup.g, a.mixup.kind, a.alpha) == (2e-3, 0.5, "fixed", 0.1)
    assert (b.lr, b.alpha) == (5e-3, 0.4)  # lr_per_modality where the entry names no lr
    assert c == params.train


@pytest.mark.parametrize(("per_modality", "message"), [
    ({"a": {"lrr": 1}}, "train.per_modality: a.lrr: unknown key"),
    ({"a": {"mixup": {"g": 2}}}, "train.per_modality: a.mixup.g: Input should be less than"),
    ({"a": {"per_modality": {}}}, "a.per_modality: not settable per modality"),
    ({"a": 3}, "train.per_modality.a: Input should be a valid dictionary"),
    ({"a": {"hidden_dim": 0}}, "train.per_modality: a.hidden_dim: Input should be greater than"),
])
def test_bad_per_modality_settings_name_the_key(per_modality, message):
    with pytest.raises(DrclError, match=re.escape(message)):
        parse_params({"train": {"per_modality": per_modality}})


def test_per_modality_names_must_be_modalities():
    with pytest.raises(DrclError, match="train.per_modality names c, not in"):
        parse_params({"data": {"modalities": ["a", "b"]},
                      "train": {"per_modality": {"c": {"lr": 1e-3}}}})


@pytest.mark.parametrize(("tune", "message"), [
    ({"trials": 0}, "tune.trials: Input should be greater than or equal to 1"),
    ({"space": {}}, "tune.space: empty"),
    ({"space": {"model.hidden_dim": {"low": 1, "high": 2}}},
     "tune.space: model.hidden_dim: unknown key"),
    ({"space": {"train.lr": {"low": 1e-3, "high": 1e-3}}},
     "tune.space.train.lr: empty or inverted range"),
    ({"space": {"train.lr": {"low": 1e-2}}}, "expected low and high"),
    ({"space": {"train.lr": {"choices": []}}}, "choices: empty"),
    ({"space": {"train.epochs": {"low": 1, "high": 2.5}}}, "whole-number low and high"),
    ({"space": {"train.mixup.g": {"low": 0.5, "high": 1.5}}},
     "train.mixup.g: 1.5 is not a value it takes"),
    ({"space": {"train.lr": {"low": 1e-4, "high": 1e-2}}, "timeout_s": 0},
     "tune.timeout_s: Input should be greater than 0"),
    ({"study": "a b"}, "tune.study: String should match pattern"),
    ({"space": {"train.hidden_dim": {"choices": [0, 16]}}},
     "train.hidden_dim: 0 is not a value it takes"),
])
def test_bad_search_settings_name_the_key(tune, message):
    with pytest.raises(DrclError, match=re.escape(message)):
        parse_params({"tune": tune})


def test_a_width_below_one_names_its_key():
    with pytest.raises(DrclError, match=re.escape(
            "train.hidden_dim: Input should be greater than or equal to 1")):
        parse_params({"train": {"hidden_dim": 0}})
