"""The per-modality encoder: an MLP into the common space with unit-length outputs."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from drcl.ensemble import mean_embedding
from drcl.errors import DrclError
from drcl.runtime import autocast
from drcl.tensor_files import load_tensors, read_tensor_metadata, save_tensors


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild an encoder from its weights."""

    modality: str
    input_dim: int
    hidden_dim: int
    common_dim: int


class Encoder(nn.Module):
    """Standardise -> Linear -> ReLU -> Linear -> ReLU -> Linear (no bias) -> L2-normalise.

    The input statistics are buffers, so a saved encoder takes raw features. With a
    `compute_dtype` (bf16) the three matmuls run under autocast; the weights, the
    standardisation and the unit-length output stay float32, so losses downstream are float32.
    """

    def __init__(self, spec: EncoderSpec, *, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None,
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.compute_dtype = compute_dtype
        self.register_buffer("input_mean", torch.zeros(spec.input_dim) if mean is None else mean)
        self.register_buffer("input_std", torch.ones(spec.input_dim) if std is None else std)
        self.net = nn.Sequential(
            nn.Linear(spec.input_dim, spec.hidden_dim),
            nn.ReLU(),
            nn.Linear(spec.hidden_dim, spec.hidden_dim),
            nn.ReLU(),
            nn.Linear(spec.hidden_dim, spec.common_dim, bias=False),
        )
        bound = 1.0 / math.sqrt(spec.input_dim)
        nn.init.uniform_(self.net[-1].weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        with autocast(x.device, self.compute_dtype):
            z = self.net(x)
        return nn.functional.normalize(z.float(), dim=1)


MAX_MEMBERS = 32  # train.ensemble's bound


class Ensemble(nn.Module):
    """Encoders of one modality trained from different seeds (drcl.ensemble), embedding as
    the normalised mean of their unit embeddings. Saved and loaded as one file, so it is
    registered, checked, served and searched as one encoder."""

    def __init__(self, members: Sequence[Encoder]) -> None:
        super().__init__()
        if not members or len({m.spec for m in members}) != 1:
            raise DrclError("an ensemble needs one or more encoders of one spec")
        self.members = nn.ModuleList(members)
        self.spec = members[0].spec
        self.compute_dtype = members[0].compute_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_embedding([member(x) for member in self.members])


def adam(parameters: Iterable[torch.Tensor], *, lr: float) -> torch.optim.Adam:
    """The method's optimiser: Adam with betas (0.5, 0.999). Fused into one kernel over all
    parameters on CPU and CUDA (the same update; the per-tensor loop cost a 4096-wide encoder's
    CPU step 150 ms against 20 ms)."""
    params = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), fused=fused or None)


def input_statistics(features: np.ndarray, *,
                     standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std of the training split (identity when standardising is off)."""
    dim = features.shape[1]
    if not standardize:
        return torch.zeros(dim), torch.ones(dim)
    x = torch.as_tensor(features, dtype=torch.float64)
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean.float(), std.float()


@torch.no_grad()
def embed(encoder: Encoder | Ensemble, features: np.ndarray | torch.Tensor, *,
          batch_size: int = 4096, device: torch.device | None = None) -> torch.Tensor:
    """Embed features in batches (bounded memory); returns unit rows on `device`."""
    device = device or next(encoder.parameters()).device
    encoder.eval()
    x = torch.as_tensor(features, dtype=torch.float32)
    out = [encoder(x[i:i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, encoder.spec.common_dim, device=device)


def save_encoder(encoder: Encoder | Ensemble, path: str | Path, **extra_metadata: str) -> None:
    """Write weights and spec as safetensors, atomically (an ensemble: every member's weights
    in the one file, and how many there are)."""
    metadata = {k: str(v) for k, v in asdict(encoder.spec).items()} | extra_metadata
    if isinstance(encoder, Ensemble):
        metadata["ensemble"] = str(len(encoder.members))
    save_tensors(encoder.state_dict(), path, metadata)


def load_encoder(path: str | Path, *, device: torch.device | str = "cpu",
                 compute_dtype: torch.dtype | None = None) -> Encoder | Ensemble:
    """Rebuild an encoder (or a seed ensemble) from a safetensors file (no pickle: safe to
    load); its weights stay float32, `compute_dtype` only sets how it embeds."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: encoder weights not found")
    state, meta = load_tensors(path, what="encoder file")
    try:
        spec = EncoderSpec(modality=meta["modality"], input_dim=int(meta["input_dim"]),
                           hidden_dim=int(meta["hidden_dim"]), common_dim=int(meta["common_dim"]))
        members = int(meta.get("ensemble", "0"))
        if not 0 <= members <= MAX_MEMBERS:
            raise ValueError(f"ensemble of {members} members")
        encoder: Encoder | Ensemble = Encoder(spec, compute_dtype=compute_dtype) \
            if members == 0 else Ensemble([Encoder(spec, compute_dtype=compute_dtype)
                                           for _ in range(members)])
        encoder.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DrclError(f"{path}: not a valid encoder file ({str(exc).splitlines()[0]})") \
            from None
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise DrclError(f"{path}: the encoder holds NaN or infinite weights")
    return encoder.to(device)


def pack_ensemble(members: Sequence[Path], dest: Path) -> Path:
    """One file of an ensemble from its members' own files (a Kubeflow run trains members in
    tasks of their own), with the first member's provenance: what `drcl train` writes."""
    if len(members) == 1:
        shutil.copyfile(members[0], dest)
        return dest
    loaded = [load_encoder(p) for p in members]
    if any(isinstance(e, Ensemble) for e in loaded):
        raise DrclError(f"{members[0]}: ensemble members must be single encoders")
    spec_keys = set(asdict(loaded[0].spec))
    extra = {k: v for k, v in read_metadata(members[0]).items() if k not in spec_keys}
    save_encoder(Ensemble(loaded), dest, **extra)  # type: ignore[arg-type]
    return dest


def read_metadata(path: str | Path) -> dict[str, str]:
    """The spec and provenance stored beside an encoder's weights."""
    return read_tensor_metadata(path)
