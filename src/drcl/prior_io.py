"""The frozen prior W on disk: a safetensors file whose checksum ties encoders to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from drcl.atomic import atomic_path
from drcl.errors import DrclError


def prior_checksum(prior: torch.Tensor) -> str:
    """Encoders are comparable only when trained against the same W: this names a W."""
    return hashlib.sha256(prior.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def save_prior(prior: torch.Tensor, path: str | Path, **metadata: str) -> None:
    meta = {k: str(v) for k, v in metadata.items()} | {"sha256": prior_checksum(prior)}
    with atomic_path(path) as tmp:
        save_file({"W": prior.detach().cpu().float().contiguous()}, str(tmp), metadata=meta)


def load_prior(path: str | Path) -> tuple[torch.Tensor, dict[str, str]]:
    """W (d x C) and its metadata; no pickle involved."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: prior not found (run `drcl prior` first)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        prior = load_file(str(path))["W"]
    except (KeyError, OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise DrclError(f"{path}: not a valid prior file ({exc})") from None
    if prior.ndim != 2:
        raise DrclError(f"{path}: W must be 2-D (common_dim x classes), got {tuple(prior.shape)}")
    return prior, meta
