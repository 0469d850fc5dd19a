"""Device, precision and seeding, so runs are reproducible and use the hardware they are given."""

from __future__ import annotations

import contextlib
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


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 matmuls run natively: CUDA with bf16 (Ampere or newer), a CPU with AVX-512 BF16 or
    AMX. Elsewhere torch emulates bf16, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # torch's own CPU feature probes (private: absent means no)
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolved_precision(precision: str, device: torch.device) -> str:
    """What `precision` means on `device`: `auto` becomes bf16 where bf16 is fast, else fp32;
    tf32 is fp32 on anything but CUDA."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision == "tf32" and device.type != "cuda":
        return "fp32"
    return precision


def compute_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the `precision` param on `device` (None: float32 throughout).

    `auto` is bf16 where it is fast and float32 elsewhere; `tf32` is float32 storage with TF32
    matmuls on CUDA (plain float32 on a CPU). TF32 is a process-wide switch of torch, so it is
    set here for the process, on or off, every time a stage asks.
    """
    precision = resolved_precision(precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise DrclError(f"precision: bf16 requested but {torch.cuda.get_device_name(device)} "
                            "has no bf16 support; use fp32 or tf32")
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device: torch.device | str,
             dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`'s kind, or nothing at all for float32 (dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


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
