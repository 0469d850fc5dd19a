"""The encoder: shape, unit outputs, initialisation, and safe round trips through safetensors."""

import math

import numpy as np
import pytest
import torch

from drcl.errors import DrclError
from drcl.model import (
    Encoder,
    EncoderSpec,
    adam,
    embed,
    input_statistics,
    load_encoder,
    save_encoder,
)

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


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "flipped":  # a byte of the tensor data, past the header
        data[-40] ^= 0x01
    elif how == "header":
        data[12] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("how", "message"), [
    ("flipped", "the encoder file's tensors do not match their checksum; the file is damaged"),
    ("truncated", "not a valid encoder file"),
    ("header", "not a valid encoder file"),
])
def test_a_damaged_encoder_file_is_refused_by_name(tmp_path, how, message):
    path = tmp_path / "img.safetensors"
    save_encoder(Encoder(SPEC), path)
    load_encoder(path)
    _damage(path, how)
    with pytest.raises(DrclError) as err:
        load_encoder(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_non_finite_weights_are_refused(tmp_path):
    enc = Encoder(SPEC)
    with torch.no_grad():
        enc.net[0].weight[0, 0] = float("inf")
    save_encoder(enc, tmp_path / "inf.safetensors")  # the checksum matches: the values are bad
    with pytest.raises(DrclError, match="inf.safetensors: the encoder holds NaN or infinite"):
        load_encoder(tmp_path / "inf.safetensors")


def test_a_damaged_prior_is_refused(tmp_path):
    from drcl.prior_io import load_prior, save_prior

    save_prior(torch.eye(4)[:, :3], tmp_path / "prior.safetensors", method="orthogonal")
    assert load_prior(tmp_path / "prior.safetensors")[0].shape == (4, 3)
    _damage(tmp_path / "prior.safetensors", "flipped")
    with pytest.raises(DrclError, match="prior.safetensors: the prior file's tensors do not match"):
        load_prior(tmp_path / "prior.safetensors")


def test_the_fused_adam_makes_the_per_tensor_loops_update():
    torch.manual_seed(0)
    spec = EncoderSpec("img", input_dim=6, hidden_dim=8, common_dim=4)
    fused, loop = Encoder(spec), Encoder(spec)
    loop.load_state_dict(fused.state_dict())
    opt_fused = adam(fused.parameters(), lr=1e-2)
    opt_loop = torch.optim.Adam(loop.parameters(), lr=1e-2, betas=(0.5, 0.999), foreach=False)
    assert opt_fused.defaults["fused"] and opt_fused.defaults["betas"] == (0.5, 0.999)
    x = torch.randn(16, 6)
    for _ in range(5):
        for model, opt in ((fused, opt_fused), (loop, opt_loop)):
            opt.zero_grad()
            model(x)[:, 0].sum().backward()
            opt.step()
    for a, b in zip(fused.parameters(), loop.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
