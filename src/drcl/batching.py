"""Mini-batches drawn from tensors already on the device: no data loader on the hot path."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from drcl.data.dataset import Split

T = TypeVar("T")


def split_tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of a split as float32 tensors on `device`."""
    return (torch.as_tensor(split.features, dtype=torch.float32, device=device),
            torch.as_tensor(split.labels, dtype=torch.float32, device=device))


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator,
                     device: torch.device) -> list[torch.Tensor]:
    """Index batches of one epoch. The batch is clamped to n and the partial last batch kept,
    so a modality smaller than the batch size still trains."""
    order = torch.randperm(n, generator=generator).to(device)
    return list(torch.split(order, max(1, min(batch_size, n))))


def ordered_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Contiguous slices for evaluation passes."""
    step = max(1, min(batch_size, n))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def progress(items: Iterable[T], *, desc: str, total: int | None = None) -> Iterable[T]:
    """A progress bar on a terminal, silent otherwise."""
    return tqdm(items, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty())
