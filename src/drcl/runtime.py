"""Device choice and seeding, so runs are reproducible and use the GPU when there is one."""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch

from drcl.errors import DrclError


def resolve_device(name: str) -> torch.device:
    """Map the `device` param to a torch device; `auto` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DrclError(f"device: {name!r} requested but no CUDA device is available")
    return device


def stage_seed(seed: int, *names: str) -> int:
    """A seed per stage and modality, independent of which other modalities exist."""
    key = "/".join(names).encode()
    return (seed * 1_000_003 + zlib.crc32(key)) % (2**31 - 1)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
