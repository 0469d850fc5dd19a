"""Tensors plus string metadata in safetensors files: safe to load, and byte-reproducible.

safetensors writes its metadata map in no fixed order, so the same weights could give files
with different bytes (and DVC would see a change). The metadata is therefore stored as one
sorted JSON string under a single key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from drcl.atomic import atomic_path
from drcl.errors import DrclError

_KEY = "drcl"
CHECKSUM = "tensors_sha256"
"""Metadata key: the hash of the tensors' names, shapes, dtypes and bytes, checked on load."""
LOAD_ERRORS = (KeyError, OSError, RuntimeError, ValueError, SafetensorError)


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """One hash of every tensor, in name order: flipped bytes anywhere change it."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path,
                 metadata: dict[str, str]) -> None:
    """Write contiguous CPU copies of `tensors` with `metadata` and their checksum,
    atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in metadata.items()} | {CHECKSUM: tensors_checksum(state)}
    packed = {_KEY: json.dumps(meta, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=packed)


def read_tensor_metadata(path: str | Path) -> dict[str, str]:
    """The metadata written by save_tensors (raises SafetensorError on a foreign file)."""
    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata() or {}
    return json.loads(raw[_KEY]) if _KEY in raw else dict(raw)


def load_tensors(path: str | Path, *, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a file written by save_tensors, checksum verified; any damage
    is one DrclError naming the file (`what` says what the file should be)."""
    path = Path(path)
    try:
        meta = read_tensor_metadata(path)
        tensors = load_file(str(path))
    except LOAD_ERRORS as exc:
        raise DrclError(f"{path}: not a valid {what} ({_first_line(exc)})") from None
    expected = meta.get(CHECKSUM)
    if expected is not None and tensors_checksum(tensors) != expected:
        raise DrclError(f"{path}: the {what}'s tensors do not match their checksum; the file is "
                        "damaged (restore it, e.g. `dvc checkout`, or train it again)")
    return tensors, meta


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
