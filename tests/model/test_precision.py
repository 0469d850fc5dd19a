"""Mixed precision: what `precision` resolves to, and that bf16 changes the arithmetic only."""

import pytest
import torch

from drcl import runtime
from drcl.config import parse_params
from drcl.errors import DrclError
from drcl.extract.extractors import make_extractor
from drcl.model import Encoder, EncoderSpec, embed, load_encoder, save_encoder
from drcl.prior import learn_candidate, orthogonal_init
from drcl.runtime import compute_dtype
from drcl.train import train_encoder

CPU = torch.device("cpu")


def test_fp32_and_tf32_are_float32_on_a_cpu_and_bf16_is_bf16():
    assert compute_dtype("fp32", CPU) is None
    assert compute_dtype("tf32", CPU) is None
    assert compute_dtype("bf16", CPU) is torch.bfloat16


@pytest.mark.parametrize(("fast", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_takes_bf16_only_where_it_is_fast(monkeypatch, fast, expected):
    monkeypatch.setattr(runtime, "bf16_is_fast", lambda device: fast)
    assert compute_dtype("auto", CPU) is expected


def test_an_unknown_precision_is_refused_by_key():
    with pytest.raises(DrclError, match=r"precision: .*'fp32'.*'bf16'"):
        parse_params({"precision": "fp16"})


def test_bf16_encoder_keeps_float32_weights_and_unit_float32_outputs():
    torch.manual_seed(0)
    spec = EncoderSpec("img", input_dim=32, hidden_dim=64, common_dim=16)
    full = Encoder(spec)
    half = Encoder(spec, compute_dtype=torch.bfloat16)
    half.load_state_dict(full.state_dict())
    x = torch.randn(50, 32)
    a, b = full(x), half(x)
    assert b.dtype == torch.float32
    assert torch.allclose(b.norm(dim=1), torch.ones(50), atol=1e-6)
    assert (a * b).sum(dim=1).min() > 0.99  # the same directions, to bf16's ~3 digits
    assert not torch.equal(a, b)  # and bf16 did run
    b.sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in half.parameters())


def test_a_bf16_embedding_of_a_saved_encoder(tmp_path):
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec("img", input_dim=8, hidden_dim=16, common_dim=4))
    save_encoder(encoder, tmp_path / "img.safetensors")
    loaded = load_encoder(tmp_path / "img.safetensors", compute_dtype=torch.bfloat16)
    assert all(t.dtype == torch.float32 for t in loaded.state_dict().values())
    x = torch.randn(20, 8)
    cos = (embed(encoder, x) * embed(loaded, x)).sum(dim=1)
    assert cos.min() > 0.99


def test_bf16_training_is_reproducible_and_as_good(tiny_params, synthetic_modality):
    data = synthetic_modality("img", dim=7, sizes=(90, 30, 30), classes=3, signal=2.0, seed=0)
    w = orthogonal_init(16, 3, seed=0)
    params = {"train.epochs": 6, "model.standardize": False}
    full = train_encoder(data, w, params=tiny_params(**params), device=CPU)
    runs = [train_encoder(data, w, params=tiny_params(**params, precision="bf16"), device=CPU)
            for _ in range(2)]
    for a, b in zip(runs[0].encoder.state_dict().values(), runs[1].encoder.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert all(t.dtype == torch.float32 for t in runs[0].encoder.state_dict().values())
    assert runs[0].history != full.history  # the arithmetic differs...
    assert runs[0].history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"],
                                                            rel=0.05)  # ...the result hardly


def test_bf16_spl_learns_a_float32_prior(tiny_params, synthetic_modality):
    data = synthetic_modality("img", dim=7, sizes=(90, 30, 30), classes=3, signal=2.0, seed=0)
    params = tiny_params(**{"train.epochs": 3, "model.standardize": False}, precision="bf16")
    candidate = learn_candidate(data, orthogonal_init(16, 3, seed=0), params=params, device=CPU)
    assert candidate.prior_best.dtype == torch.float32
    assert 0 < candidate.best_score <= 1


def test_features_of_another_precision_are_cached_apart():
    for name in ("minilm", "efficientnet_lite0"):
        full = make_extractor(name, image_size=224, batch_size=8, device="cpu")
        half = make_extractor(name, image_size=224, batch_size=8, device="cpu",
                              compute_dtype=torch.bfloat16)
        assert half.fingerprint == full.fingerprint + "-bfloat16"


def test_bf16_on_a_gpu_without_it_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    cuda = torch.device("cuda")
    with pytest.raises(DrclError, match=r"^precision: bf16 requested but Tesla T4 has no bf16 "
                                        r"support; use fp32 or tf32$"):
        compute_dtype("bf16", cuda)
    assert compute_dtype("auto", cuda) is None  # auto falls back to float32 there
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert compute_dtype("tf32", cuda) is None and torch.backends.cuda.matmul.allow_tf32 is True
    compute_dtype("fp32", cuda)  # and back off
    assert torch.backends.cuda.matmul.allow_tf32 is False
