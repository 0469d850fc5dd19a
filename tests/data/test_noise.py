"""Label noise as a data step: exact rates, the documented draws, clean test labels, the clean
labels kept apart from training, and every bad setting refused with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drcl.config import parse_params
from drcl.data.dataset import SPLITS, load_manifest, load_modality
from drcl.data.noise import clean_labels, flip_map
from drcl.data.prepare import prepare_dataset
from drcl.errors import DrclError

CLASSES = 7
ROOT = Path(__file__).resolve().parents[2]


def write_source(path: Path, *, paired: bool, multi_label: bool = False, n: int = 700) -> Path:
    """Two views of n/2 train, n/4 val and n/4 test items; paired views share their ids."""
    rng = np.random.default_rng(1)
    arrays: dict[str, np.ndarray] = {}
    sizes = {"train": n // 2, "val": n // 4, "test": n // 4}
    labels = {s: (rng.random((k, CLASSES)) < 0.3).astype(np.uint8) if multi_label
              else np.arange(k) % CLASSES for s, k in sizes.items()}
    for view, dim in (("image", 4), ("text", 3)):
        for split, k in sizes.items():
            arrays[f"{view}.{split}.features"] = rng.normal(size=(k, dim))
            arrays[f"{view}.{split}.labels"] = labels[split]
            prefix = "item" if paired else view
            arrays[f"{view}.{split}.ids"] = np.asarray([f"{prefix}-{split}-{i}" for i in range(k)])
    np.savez(path, **arrays)
    return path


def prepare(tmp_path: Path, noise: dict, *, paired: bool = True, multi_label: bool = False,
            seed: int = 0, out: str = "ds") -> Path:
    source = write_source(tmp_path / "source.npz", paired=paired, multi_label=multi_label)
    params = parse_params({"seed": seed, "data": {"source": "npz", "path": str(source),
                                                  "noise": noise}})
    prepare_dataset(params, out_dir=tmp_path / out)
    return tmp_path / out


def ids_of(labels: np.ndarray) -> np.ndarray:
    return labels.argmax(1)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_noise_moves_exactly_that_share_to_other_classes(tmp_path, rate):
    ds = prepare(tmp_path, {"kind": "symmetric", "rate": rate})
    realised = load_manifest(ds).noise["realised"]
    for modality in ("image", "text"):
        data = load_modality(ds, modality)
        clean = clean_labels(ds, modality)
        for split in ("train", "val"):
            noisy, truth = ids_of(data.split(split).labels), ids_of(clean[split])
            changed = noisy != truth
            assert changed.sum() == round(rate * len(truth))  # never a draw that keeps the label
            assert realised[modality][split] == pytest.approx(changed.mean(), abs=1e-6)
        assert "test.clean_labels" not in np.load(ds / f"{modality}.npz").files


def test_symmetric_draws_are_uniform_over_the_other_classes(tmp_path):
    ds = prepare(tmp_path, {"kind": "symmetric", "rate": 0.8})
    data, clean = load_modality(ds, "image"), clean_labels(ds, "image")
    offsets = (ids_of(data.train.labels) - ids_of(clean["train"])) % CLASSES
    counts = np.bincount(offsets[offsets > 0], minlength=CLASSES)[1:]
    expected = counts.sum() / (CLASSES - 1)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 20.5  # 6 categories, 5 degrees of freedom: p > 0.001 under uniformity


def test_test_labels_stay_clean(tmp_path):
    source_dir = tmp_path / "clean"
    source_dir.mkdir()
    ds_clean = prepare(source_dir, {"kind": "none"})
    ds = prepare(tmp_path, {"kind": "symmetric", "rate": 0.6})
    for modality in ("image", "text"):
        np.testing.assert_array_equal(load_modality(ds, modality).test.labels,
                                      load_modality(ds_clean, modality).test.labels)
        assert clean_labels(ds_clean, modality) is None
    assert load_manifest(ds_clean).noise is None


def test_asymmetric_noise_follows_one_fixed_flip(tmp_path):
    ds = prepare(tmp_path, {"kind": "asymmetric", "rate": 0.4})
    flip = flip_map(CLASSES, 0)
    assert (flip != np.arange(CLASSES)).all() and sorted(flip) == list(range(CLASSES))
    assert load_manifest(ds).noise["flip"] == flip.tolist()
    data, clean = load_modality(ds, "text"), clean_labels(ds, "text")
    noisy, truth = ids_of(data.train.labels), ids_of(clean["train"])
    moved = noisy != truth
    np.testing.assert_array_equal(noisy[moved], flip[truth[moved]])
    for c in range(CLASSES):
        members = truth == c
        assert moved[members].sum() == round(0.4 * members.sum())


def test_shared_scope_gives_an_items_modalities_one_label(tmp_path):
    ds = prepare(tmp_path, {"kind": "symmetric", "rate": 0.4, "scope": "shared"})
    image, text = load_modality(ds, "image"), load_modality(ds, "text")
    np.testing.assert_array_equal(image.train.ids, text.train.ids)
    np.testing.assert_array_equal(image.train.labels, text.train.labels)
    assert (ids_of(image.train.labels) != ids_of(clean_labels(ds, "image")["train"])).mean() \
        == pytest.approx(0.4, abs=0.01)
    per = prepare(tmp_path, {"kind": "symmetric", "rate": 0.4}, out="per")
    assert not np.array_equal(load_modality(per, "image").train.labels,
                              load_modality(per, "text").train.labels)


def test_multi_label_noise_flips_bits(tmp_path):
    ds = prepare(tmp_path, {"kind": "symmetric", "rate": 0.2}, multi_label=True)
    data, clean = load_modality(ds, "image"), clean_labels(ds, "image")
    flipped = (data.train.labels != clean["train"]).mean()
    assert flipped == pytest.approx(0.2, abs=0.03)
    assert load_manifest(ds).noise["unit"] == "label bits"


def test_the_draw_follows_the_seed(tmp_path):
    a = prepare(tmp_path, {"kind": "symmetric", "rate": 0.4}, out="a")
    b = prepare(tmp_path, {"kind": "symmetric", "rate": 0.4}, out="b")
    c = prepare(tmp_path, {"kind": "symmetric", "rate": 0.4}, seed=1, out="c")
    for split in SPLITS:
        np.testing.assert_array_equal(load_modality(a, "image").split(split).labels,
                                      load_modality(b, "image").split(split).labels)
    assert not np.array_equal(load_modality(a, "image").train.labels,
                              load_modality(c, "image").train.labels)


@pytest.mark.parametrize(("noise", "paired", "multi_label", "message"), [
    ({"kind": "symmetric", "rate": 1.0}, True, False,
     "data.noise.rate: Input should be less than 1"),
    ({"kind": "symmetric", "rate": -0.1}, True, False,
     "data.noise.rate: Input should be greater than or equal to 0"),
    ({"kind": "uniform", "rate": 0.2}, True, False, "data.noise.kind: Input should be"),
    ({"kind": "symmetric", "rate": 0.2, "scope": "paired"}, True, False,
     "data.noise.scope: Input should be"),
    ({"rate": 0.2}, True, False, "rate 0.2 with kind none injects nothing"),
    ({"kind": "symmetric", "rate": 0.2, "scope": "shared"}, False, False,
     "data.noise.scope: shared gives an item's modalities one noisy label, but source is not "
     "paired"),
    ({"kind": "asymmetric", "rate": 0.2}, True, True,
     "data.noise.kind: asymmetric flips one class into another; source is multi-label"),
])
def test_bad_noise_settings_are_one_line(tmp_path, noise, paired, multi_label, message):
    with pytest.raises(DrclError) as caught:
        prepare(tmp_path, noise, paired=paired, multi_label=multi_label)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "ds").exists()  # nothing half-written


def test_only_measurement_reads_the_clean_labels():
    """Training, selection and promotion never see the clean labels: load_modality leaves them
    on disk, and no module but the noise step's own names them."""
    allowed = {"data/noise.py", "data/dataset.py", "data/prepare.py",
               "stages/train.py"}  # the train stage's record of the corrected labels' accuracy
    readers = {str(p.relative_to(ROOT / "src/drcl")) for p in (ROOT / "src/drcl").rglob("*.py")
               if "clean_labels" in p.read_text()}
    assert readers <= allowed, readers - allowed
