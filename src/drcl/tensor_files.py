"""Tensors plus string metadata in safetensors files: safe to load, and byte-reproducible.

safetensors writes its metadata map in no fixed order, so the same weights could give files
with different bytes (and DVC would see a change). The metadata is therefore stored as one
sorted JSON string under a single key.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from drcl.atomic import atomic_path

_KEY = "drcl"


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path,
                 metadata: dict[str, str]) -> None:
    """Write contiguous CPU copies of `tensors` with `metadata`, atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    packed = {_KEY: json.dumps({k: str(v) for k, v in metadata.items()}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=packed)


def read_tensor_metadata(path: str | Path) -> dict[str, str]:
    """The metadata written by save_tensors (raises SafetensorError on a foreign file)."""
    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata() or {}
    return json.loads(raw[_KEY]) if _KEY in raw else dict(raw)
