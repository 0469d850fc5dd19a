"""The encoder: shape, unit outputs, initialisation, and safe round trips through safetensors."""

import math

import numpy as np
import pytest
import torch

from drcl.errors import DrclError
from drcl.model import Encoder, EncoderSpec, embed, input_statistics, load_encoder, save_encoder

SPEC = EncoderSpec(modality="img", input_dim=9, hidden_dim=12, common_dim=5)


def test_layers_and_unit_rows():
    enc = Encoder(SPEC)
    linears = [m for m in enc.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(9, 12), (12, 12), (12, 5)]
    assert linears[-1].bias is None
    out = enc(torch.randn(7, 9))
    assert out.shape == (7, 5)
    assert torch.allclose(out.norm(dim=1), torch.ones(7), atol=1e-6)


def test_last_layer_uniform_in_input_width_bound():
    torch.manual_seed(0)
    enc = Encoder(EncoderSpec(modality="m", input_dim=4, hidden_dim=300, common_dim=200))
    weight = enc.net[-1].weight
    bound = 1 / math.sqrt(4)
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.9 * bound  # spread over the whole range, not the default init


def test_standardisation_statistics():
    x = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    mean, std = input_statistics(x, standardize=True)
    assert mean.tolist() == [2.0, 5.0]
    assert std.tolist() == [1.0, 1.0]  # constant column keeps std 1 instead of dividing by 0
    mean, std = input_statistics(x, standardize=False)
    assert mean.tolist() == [0.0, 0.0] and std.tolist() == [1.0, 1.0]


def test_save_load_round_trip(tmp_path):
    mean, std = torch.arange(9.0), torch.full((9,), 2.0)
    enc = Encoder(SPEC, mean=mean, std=std)
    path = tmp_path / "enc.safetensors"
    save_encoder(enc, path, prior_sha256="abc")
    back = load_encoder(path)
    assert back.spec == SPEC
    x = torch.randn(4, 9)
    assert torch.equal(embed(enc, x), embed(back, x))
    assert torch.equal(back.input_mean, mean)


def test_embed_batches_match_one_pass():
    enc = Encoder(SPEC)
    x = torch.randn(50, 9)
    assert torch.allclose(embed(enc, x, batch_size=7), embed(enc, x, batch_size=100), atol=1e-6)


def test_load_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DrclError, match="not found"):
        load_encoder(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DrclError, match="bad.safetensors"):
        load_encoder(bad)


def test_saved_files_are_byte_reproducible(tmp_path):
    """Same weights and metadata give the same bytes, so DVC sees no change on a rerun."""
    torch.manual_seed(0)
    enc = Encoder(SPEC)
    meta = {f"key{i}": str(i) for i in range(20)}
    save_encoder(enc, tmp_path / "a.safetensors", **meta)
    save_encoder(enc, tmp_path / "b.safetensors", **dict(reversed(meta.items())))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
