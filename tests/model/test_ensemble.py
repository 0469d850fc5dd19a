"""Seed ensembles: one file, one encoder to everything that loads it, the normalised mean of
its members' embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drcl.ensemble import mean_embedding, member_seed
from drcl.errors import DrclError
from drcl.model import Encoder, EncoderSpec, Ensemble, embed, load_encoder, save_encoder
from drcl.tensor_files import load_tensors, save_tensors

SPEC = EncoderSpec(modality="image", input_dim=6, hidden_dim=8, common_dim=4)


def _member(seed: int) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(SPEC, mean=torch.randn(6), std=torch.rand(6) + 0.5)


def test_the_mean_is_normalised_and_by_hand():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0]])  # normalised first: (0, 1)
    assert torch.allclose(mean_embedding([a, b]), torch.tensor([[1.0, 1.0]]) / 2 ** 0.5)
    assert torch.allclose(mean_embedding([a]), a)
    with pytest.raises(ValueError):
        mean_embedding([])


def test_an_ensemble_embeds_as_the_mean_of_its_members_and_round_trips(tmp_path):
    members = [_member(s) for s in (1, 2, 3)]
    ensemble = Ensemble(members)
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    want = F.normalize(torch.stack([embed(m, x) for m in members]).mean(0), dim=1)
    assert torch.allclose(embed(ensemble, x), want, atol=1e-6)
    save_encoder(ensemble, tmp_path / "e.safetensors", prior_sha256="abc")
    loaded = load_encoder(tmp_path / "e.safetensors")
    assert isinstance(loaded, Ensemble) and len(loaded.members) == 3 and loaded.spec == SPEC
    assert torch.allclose(embed(loaded, x), want, atol=1e-6)
    single = tmp_path / "s.safetensors"
    save_encoder(members[0], single)
    assert isinstance(load_encoder(single), Encoder)  # files of one encoder load as before


def test_a_damaged_member_count_is_one_line(tmp_path):
    path = tmp_path / "e.safetensors"
    save_encoder(Ensemble([_member(1), _member(2)]), path)
    state, meta = load_tensors(path, what="encoder file")
    for bad in ("3", "x", "-1", "100000"):
        save_tensors(state, path, meta | {"ensemble": bad})
        with pytest.raises(DrclError, match=r"not a valid encoder file"):
            load_encoder(path)


def test_members_differ_in_seed_and_nearby_runs_share_none():
    seeds = {(s, j): member_seed(s, j) for s in range(20) for j in range(8)}
    assert all(member_seed(s, 0) == s for s in range(20))
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2 ** 31 for v in seeds.values())
