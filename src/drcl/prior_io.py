"""The frozen prior W on disk: a safetensors file whose checksum ties encoders to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from drcl.errors import DrclError
from drcl.tensor_files import load_tensors, save_tensors


def prior_checksum(prior: torch.Tensor) -> str:
    """Encoders are comparable only when trained against the same W: this names a W."""
    return hashlib.sha256(prior.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def save_prior(prior: torch.Tensor, path: str | Path, *,
               extra: dict[str, torch.Tensor] | None = None, **metadata: str) -> None:
    """Write W with its checksum and provenance, atomically; `extra` tensors ride along (the
    semantic prior's class embeddings and isometry, which give a new class its column)."""
    meta = {k: str(v) for k, v in metadata.items()} | {"sha256": prior_checksum(prior)}
    save_tensors({"W": prior.float(), **{k: v.float() for k, v in (extra or {}).items()}},
                 path, meta)


def load_prior(path: str | Path) -> tuple[torch.Tensor, dict[str, str]]:
    """W (d x C) and its metadata; no pickle involved."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: prior not found (run `drcl prior` first)")
    tensors, meta = load_tensors(path, what="prior file")
    if "W" not in tensors:
        raise DrclError(f"{path}: not a valid prior file (no tensor 'W')")
    prior = tensors["W"]
    if prior.ndim != 2:
        raise DrclError(f"{path}: W must be 2-D (common_dim x classes), got {tuple(prior.shape)}")
    if not torch.isfinite(prior).all():
        raise DrclError(f"{path}: the prior holds NaN or infinite values")
    return prior, meta
