"""A deployment's model config is checked key by key, and a bad one names the key."""

from __future__ import annotations

import pytest

from drcl.errors import DrclError
from drcl.serving.package import MODEL_CONFIG
from drcl.serving.schema import ServingConfig, serving_config


def test_the_saved_defaults_are_the_schemas():
    assert serving_config(MODEL_CONFIG, source="x") == ServingConfig()
    assert serving_config(None, source="x") == ServingConfig()


def test_an_override_keeps_the_rest():
    got = serving_config({**MODEL_CONFIG, "precision": "bf16", "indexes": "db.npz"}, source="x")
    assert (got.precision, got.device, got.allowed_indexes()) == ("bf16", "auto", ["db.npz"])


@pytest.mark.parametrize(("raw", "message"), [
    ({"precision": "fp16"}, "cfg: precision: Input should be 'fp32', 'tf32', 'bf16' or 'auto'"),
    ({"device": "tpu"}, "cfg: device: String should match pattern"),
    ({"max_top_k": 0}, "cfg: max_top_k: Input should be greater than or equal to 1"),
    ({"max_index_mb": 0}, "cfg: max_index_mb: Input should be greater than 0"),
    ({"indexes": 3}, "cfg: indexes"),
    ({"devcie": "cpu"}, "cfg: devcie: unknown key"),
    ("cpu", "cfg: expected a JSON object of settings (device, precision"),
])
def test_bad_settings_are_one_line_naming_the_key(raw, message):
    with pytest.raises(DrclError) as err:
        serving_config(raw, source="cfg")
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
