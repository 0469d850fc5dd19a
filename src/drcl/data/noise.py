"""Label noise at a known rate, injected by the `prepare` step to measure what noise costs.

- `symmetric`: exactly round(r n) items of a split get a label drawn uniformly from the other
  C - 1 classes, so the realised rate is r (up to rounding), never a draw that keeps the label;
- `asymmetric`: round(r n_c) items of each class c move to T(c), one fixed seeded flip: a cyclic
  shift along a seeded order of the classes, so no class maps to itself (above r = 0.5 the flip
  outnumbers the truth and no method can tell them apart);
- multi-label data (`symmetric` only): each label bit flips with probability r.

`per_modality` draws each modality apart (the literature's protocol); `shared` draws once per item
id and gives every modality that has the item the same noisy label (paired data: the web's case).
Training and validation labels are corrupted (a user has no clean validation set either); test
labels never are. The clean labels are saved beside the noisy ones as `<split>.clean_labels` for
measuring only: `clean_labels()` is their one reader, and nothing that trains, selects or
promotes calls it.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from drcl.array_files import load_npz
from drcl.config import NoiseParams
from drcl.data.dataset import ModalityData, Split, _decode_labels
from drcl.errors import DrclError

NOISY_SPLITS = ("train", "val")
_STREAM = 0x6E6F6973  # keeps the noise draws apart from every other use of the seed


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM, *(zlib.crc32(k.encode()) for k in keys)])


def flip_map(num_classes: int, seed: int) -> np.ndarray:
    """T for asymmetric noise: class order[i] -> order[i + 1], cyclically (no fixed point)."""
    order = _rng(seed, "flip").permutation(num_classes)
    target = np.empty(num_classes, dtype=np.int64)
    target[order] = np.roll(order, -1)
    return target


def check_noise(noise: NoiseParams, *, name: str, paired: bool, multi_label: bool) -> None:
    """What the data set must be for this noise; one line naming the key otherwise."""
    if noise.kind == "none":
        return
    if noise.scope == "shared" and not paired:
        raise DrclError(f"data.noise.scope: shared gives an item's modalities one noisy label, "
                        f"but {name} is not paired (no item id recurs across modalities); use "
                        "per_modality")
    if noise.kind == "asymmetric" and multi_label:
        raise DrclError(f"data.noise.kind: asymmetric flips one class into another; {name} is "
                        "multi-label: use symmetric (each label bit flips with probability "
                        "data.noise.rate)")


def corrupt(modalities: dict[str, ModalityData], noise: NoiseParams, *, seed: int,
            multi_label: bool, num_classes: int
            ) -> tuple[dict[str, ModalityData], dict[str, dict[str, np.ndarray]], dict]:
    """Noisy training and validation labels; returns the noisy data set, the clean labels it
    replaced ({modality: {split: labels}}) and the record for the manifest."""
    if noise.kind == "none":
        return modalities, {}, {"kind": "none"}
    flip = flip_map(num_classes, seed) if noise.kind == "asymmetric" else None
    noisy = {m: dict.fromkeys(NOISY_SPLITS) for m in modalities}
    for split in NOISY_SPLITS:
        parts = {m: modalities[m].split(split) for m in modalities}
        if noise.scope == "shared":
            drawn = _shared(parts, noise, seed, split, multi_label, num_classes, flip)
        else:
            drawn = {m: _draw(p.labels, noise.rate, _rng(seed, m, split), multi_label, flip)
                     for m, p in parts.items()}
        for m, labels in drawn.items():
            noisy[m][split] = labels
    out, clean, realised = {}, {}, {}
    for m, data in modalities.items():
        out[m] = replace(data, **{s: Split(data.split(s).features, noisy[m][s], data.split(s).ids)
                                  for s in NOISY_SPLITS})
        clean[m] = {s: data.split(s).labels for s in NOISY_SPLITS}
        realised[m] = {s: round(float(_changed(clean[m][s], noisy[m][s], multi_label)), 6)
                       for s in NOISY_SPLITS}
    record = {"kind": noise.kind, "rate": noise.rate, "scope": noise.scope,
              "unit": "label bits" if multi_label else "items", "realised": realised}
    if flip is not None:
        record["flip"] = [int(t) for t in flip]  # class c becomes flip[c]
    return out, clean, record


def _changed(clean: np.ndarray, noisy: np.ndarray, multi_label: bool) -> float:
    if clean.shape[0] == 0:
        return 0.0
    if multi_label:
        return float((clean != noisy).mean())
    return float((clean.argmax(1) != noisy.argmax(1)).mean())


def _onehot(ids: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((ids.shape[0], num_classes), dtype=np.float32)
    out[np.arange(ids.shape[0]), ids] = 1.0
    return out


def _draw(labels: np.ndarray, rate: float, rng: np.random.Generator, multi_label: bool,
          flip: np.ndarray | None) -> np.ndarray:
    """One modality's split, drawn on its own."""
    n, num_classes = labels.shape
    if multi_label:
        return np.logical_xor(labels > 0, rng.random((n, num_classes)) < rate).astype(np.float32)
    y = labels.argmax(1)
    out = y.copy()
    if flip is None:
        chosen = rng.permutation(n)[:round(rate * n)]
        out[chosen] = (y[chosen] + rng.integers(1, num_classes, chosen.size)) % num_classes
    else:
        for c in range(num_classes):
            members = np.flatnonzero(y == c)
            chosen = members[rng.permutation(members.size)[:round(rate * members.size)]]
            out[chosen] = flip[c]
    return _onehot(out, num_classes)


def _shared(parts: dict[str, Split], noise: NoiseParams, seed: int, split: str,
            multi_label: bool, num_classes: int,
            flip: np.ndarray | None) -> dict[str, np.ndarray]:
    """One draw per item id, applied to every modality that has the item."""
    rng = _rng(seed, "shared", split)
    ids = sorted(set().union(*(p.item_ids(split).tolist() for p in parts.values())))
    n = len(ids)
    if multi_label:
        masks = rng.random((n, num_classes)) < noise.rate
    else:
        chosen = np.zeros(n, dtype=bool)
        chosen[rng.permutation(n)[:round(noise.rate * n)]] = True
        offsets = rng.integers(1, num_classes, n)
    where = {item: row for row, item in enumerate(ids)}
    out = {}
    for m, part in parts.items():
        rows = np.asarray([where[i] for i in part.item_ids(split).tolist()], dtype=np.int64)
        if multi_label:
            out[m] = np.logical_xor(part.labels > 0, masks[rows]).astype(np.float32)
            continue
        y = part.labels.argmax(1)
        moved = (y + offsets[rows]) % num_classes if flip is None else flip[y]
        out[m] = _onehot(np.where(chosen[rows], moved, y), num_classes)
    return out


def clean_labels(path: str | Path, modality: str) -> dict[str, np.ndarray] | None:
    """The labels noise replaced, for measuring only (None when the data set has no noise)."""
    file = Path(path) / f"{modality}.npz"
    names, arrays = load_npz(file, [f"{s}.clean_labels" for s in NOISY_SPLITS] + ["classes"],
                             what="a prepared modality file")
    if f"{NOISY_SPLITS[0]}.clean_labels" not in arrays:
        return None
    num_classes = len(arrays["classes"])
    return {s: _decode_labels(arrays[f"{s}.clean_labels"], num_classes,
                              f"{file}:{s}.clean_labels") for s in NOISY_SPLITS}
