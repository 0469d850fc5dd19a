"""prepare on the generic .npz source: round trip, label forms, and every bad input refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from drcl.config import DataParams, Params
from drcl.data.dataset import SPLITS, file_sha256, load_manifest, load_modality, source_file
from drcl.data.prepare import prepare_dataset
from drcl.errors import DrclError

Arrays = dict[str, np.ndarray]
MODALITIES = ("image", "text")


def test_round_trip(npz_arrays: Arrays, write_npz, npz_params, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0), out_dir=out)

    assert manifest == load_manifest(out)
    assert manifest.name == "toy"
    assert manifest.classes == ["0", "1", "2"]
    assert manifest.multi_label is False
    assert list(manifest.modalities) == ["image", "text"]
    for modality in MODALITIES:
        info = manifest.modalities[modality]
        assert info.dim == npz_arrays[f"{modality}.train.features"].shape[1]
        assert info.sizes == {s: len(npz_arrays[f"{modality}.{s}.features"]) for s in SPLITS}
        assert info.sha256 == file_sha256(out / f"{modality}.npz")
        data = load_modality(out, modality)
        for split in SPLITS:
            part = data.split(split)
            raw_x = npz_arrays[f"{modality}.{split}.features"]
            raw_y = npz_arrays[f"{modality}.{split}.labels"].ravel()
            assert part.features.dtype == np.float32
            np.testing.assert_allclose(part.features, raw_x.astype(np.float32))
            assert part.labels.shape == (len(raw_x), 3)
            assert part.labels.dtype == np.float32
            np.testing.assert_array_equal(part.labels.sum(axis=1), 1)
            np.testing.assert_array_equal(part.labels.argmax(axis=1), raw_y - 1)  # 1-based -> 0


def _prepare_labels(arrays: Arrays, write_npz, npz_params, tmp_path: Path,
                    make: Callable[[np.ndarray], np.ndarray]):
    """Replace every labels array by ``make(0-based ids)`` and prepare."""
    for key in [k for k in arrays if k.endswith(".labels")]:
        arrays[key] = make(arrays[key].ravel() - 1)
    return prepare_dataset(Params(data=npz_params(write_npz(arrays)), seed=0),
                           out_dir=tmp_path / "ds")


@pytest.mark.parametrize("make", [
    pytest.param(lambda ids: ids, id="flat-0-based"),
    pytest.param(lambda ids: ids.reshape(1, -1) + 1, id="row-1-based"),
    pytest.param(lambda ids: ids.reshape(-1, 1), id="column-0-based"),
    pytest.param(lambda ids: (ids + 1).astype(np.float64), id="float-whole-1-based"),
    pytest.param(lambda ids: np.eye(3, dtype=np.uint8)[ids], id="one-hot-matrix"),
])
def test_single_label_forms(make, npz_arrays, write_npz, npz_params, tmp_path) -> None:
    expected = {k: v.ravel() - 1 for k, v in npz_arrays.items() if k.endswith(".labels")}
    manifest = _prepare_labels(npz_arrays, write_npz, npz_params, tmp_path, make)
    assert manifest.multi_label is False
    assert manifest.num_classes == 3
    for modality in MODALITIES:
        data = load_modality(tmp_path / "ds", modality)
        for split in SPLITS:
            np.testing.assert_array_equal(data.split(split).labels.argmax(axis=1),
                                          expected[f"{modality}.{split}.labels"])


def test_multi_hot(npz_arrays, write_npz, npz_params, tmp_path) -> None:
    def multi(ids: np.ndarray) -> np.ndarray:
        hot = np.eye(4, dtype=np.int64)[ids]
        hot[::2, 3] = 1  # every other item also carries class 3
        return hot

    expected = multi(npz_arrays["image.train.labels"].ravel() - 1)
    manifest = _prepare_labels(npz_arrays, write_npz, npz_params, tmp_path, multi)
    assert manifest.multi_label is True
    assert manifest.classes == ["0", "1", "2", "3"]
    stored = np.load(tmp_path / "ds" / "image.npz")["train.labels"]
    assert stored.dtype == np.uint8
    train = load_modality(tmp_path / "ds", "image").train.labels
    np.testing.assert_array_equal(train, expected)


def test_base_is_decided_over_the_whole_data_set(npz_arrays, write_npz, npz_params,
                                                 tmp_path) -> None:
    """0-based ids where one split lacks class 0: read alone it would look 1-based."""
    for key in [k for k in npz_arrays if k.endswith(".labels")]:
        npz_arrays[key] = npz_arrays[key].ravel() - 1
    npz_arrays["text.val.labels"] = np.array([1, 2, 2, 1])
    prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0), out_dir=tmp_path / "ds")
    val = load_modality(tmp_path / "ds", "text").val.labels
    np.testing.assert_array_equal(val.argmax(axis=1), [1, 2, 2, 1])


def test_class_names_from_the_file(npz_arrays, write_npz, npz_params, tmp_path) -> None:
    npz_arrays["classes"] = np.array(["cat", "dog", "owl", "eel"])
    # 1..3 with 4 named classes is not 1-based (max != 4): ids are kept as they are, so
    # "cat" (0) has no item, which is refused
    with pytest.raises(DrclError, match=r"1 of 4 classes occur in no split of any modality "
                                        r"\(cat\)"):
        prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0),
                        out_dir=tmp_path / "ds")
    npz_arrays["text.val.labels"] = npz_arrays["text.val.labels"].copy()
    npz_arrays["text.val.labels"][0] = 0  # one cat
    manifest = prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0),
                               out_dir=tmp_path / "ds")
    assert manifest.classes == ["cat", "dog", "owl", "eel"]
    train = load_modality(tmp_path / "ds", "image").train.labels
    np.testing.assert_array_equal(train.argmax(axis=1), npz_arrays["image.train.labels"].ravel())


def _set(key: str, value: object) -> Callable[[Arrays], None]:
    def edit(arrays: Arrays) -> None:
        arrays[key] = value(arrays[key]) if callable(value) else value
    return edit


def _drop(key: str) -> Callable[[Arrays], None]:
    return lambda arrays: arrays.pop(key)


def _with_nan(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[2, 1] = x[4, 0] = np.nan
    return x


def _with_inf(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[0, 0] = np.inf
    return x


def _multi_hot_labels(arrays: Arrays, width: int = 3) -> None:
    for key in [k for k in arrays if k.endswith(".labels")]:
        arrays[key] = np.eye(width, dtype=np.int64)[arrays[key].ravel() % width]


def _bad_multi_hot_value(arrays: Arrays) -> None:
    _multi_hot_labels(arrays)
    arrays["text.test.labels"][1, 2] = 2


def _multi_hot_width_differs(arrays: Arrays) -> None:
    _multi_hot_labels(arrays)
    arrays["text.val.labels"] = np.eye(4, dtype=np.int64)[[0, 1, 2, 3]]


def _mixed_label_forms(arrays: Arrays) -> None:
    arrays["text.val.labels"] = np.eye(3, dtype=np.int64)[[0, 1, 2, 0]]


# (id, edit of the valid arrays, fragments the one-line message must contain)
def _shared_id_labelled_twice(arrays: Arrays) -> None:
    """Both modalities name their items `<split>-<row>`, so they share ids; one shared item
    gets another class in one modality."""
    for key in [k for k in arrays if k.endswith(".features")]:
        split = key.split(".")[1]
        arrays[key.replace(".features", ".ids")] = np.asarray(
            [f"{split}-{r}" for r in range(len(arrays[key]))])
    labels = arrays["text.train.labels"].copy()
    labels[0] = labels[0] % 3 + 1
    arrays["text.train.labels"] = labels


BAD_INPUTS = [
    ("missing-key", _drop("image.val.labels"), ["'image.val.labels'", "image.val.features"]),
    ("nan-features", _set("image.train.features", _with_nan),
     ["image.train.features", "2 NaN", "row 2, column 1"]),
    ("inf-features", _set("text.val.features", _with_inf), ["text.val.features", "1 NaN or inf"]),
    ("float32-overflow", _set("text.val.features", lambda x: x * 1e300), ["text.val.features"]),
    ("nan-labels", _set("image.test.labels", lambda y: np.where(y == 2, np.nan, y)),
     ["image.test.labels", "NaN"]),
    ("negative-id", _set("image.test.labels", lambda y: y - 2), ["image.test.labels", ">= 0"]),
    ("non-integer-id", _set("text.train.labels", lambda y: y + 0.5),
     ["text.train.labels", "whole numbers", "first 1.5 at row 0"]),
    ("id-out-of-range", lambda a: (a.update(classes=np.array(["a", "b"]))),
     ["labels", "out of range for 2 classes"]),
    ("labels-3d", _set("image.val.labels", lambda y: y.reshape(-1, 1, 1)),
     ["image.val.labels", "shape (6, 1, 1)"]),
    ("length-mismatch", _set("image.train.labels", lambda y: y[:-1]),
     ["image.train.labels", "11 labels for 12 feature rows"]),
    ("empty-split", lambda a: a.update({"text.test.features": np.zeros((0, 3)),
                                        "text.test.labels": np.zeros(0, np.int64)}),
     ["text.test.features", "no rows"]),
    ("width-differs", _set("image.val.features", lambda x: x[:, :4]),
     ["image.val.features", "4 feature columns", "image.train.features", "'image'"]),
    ("features-1d", _set("text.train.features", lambda x: x[:, 0]),
     ["text.train.features", "2-D numeric"]),
    ("features-text", _set("text.train.features", lambda x: x.astype(str)),
     ["text.train.features", "2-D numeric"]),
    ("labels-text", _set("text.train.labels", lambda y: y.astype(str)),
     ["text.train.labels", "numeric"]),
    ("pickled-object", _set("image.train.features", lambda x: x.astype(object)),
     ["image.train.features", "pickle"]),
    ("unexpected-key", _set("image.training.features", np.zeros((2, 2))),
     ["'image.training.features'"]),
    ("bad-modality-name", lambda a: a.update({
        k.replace("text", "te xt"): a.pop(k) for k in [k for k in a if k.startswith("text")]}),
     ["toy.npz:te xt.train.features", "'te xt'"]),
    ("multi-hot-not-0-1", _bad_multi_hot_value,
     ["text.test.labels", "0 or 1", "found 2 at row 1, column 2"]),
    ("multi-hot-width", _multi_hot_width_differs, ["text.val.labels", "4 columns"]),
    ("mixed-label-forms", _mixed_label_forms, ["text.val.labels", "one form"]),
    ("classes-not-str", _set("classes", np.arange(3)), ["toy.npz:classes", "str"]),
    ("classes-not-unique", _set("classes", np.array(["a", "a", "b"])),
     ["toy.npz:classes", "unique"]),
    ("no-modality", lambda a: a.clear(), ["toy.npz", "no key"]),
    ("one-class-to-train", _set("text.train.labels", lambda y: np.ones_like(y)),
     ["modality 'text'", "training split holds one class only"]),
    ("shared-id-two-labels", _shared_id_labelled_twice,
     ["modalities 'image' and 'text'", "1 shared id(s)", "'train-0'"]),
]


@pytest.mark.parametrize("old_dataset", [False, True], ids=["fresh", "over-old"])
@pytest.mark.parametrize(("edit", "fragments"),
                         [pytest.param(edit, fragments, id=i) for i, edit, fragments in BAD_INPUTS])
def test_bad_input_is_refused_and_nothing_written(edit, fragments, old_dataset, npz_arrays,
                                                  write_npz, npz_params, folder_snapshot,
                                                  tmp_path) -> None:
    out = tmp_path / "ds"
    if old_dataset:
        prepare_dataset(Params(data=npz_params(write_npz(npz_arrays, "old")), seed=0), out_dir=out)
    before = folder_snapshot(out) if old_dataset else None
    source = source_file(out)
    source_before = source.read_bytes() if old_dataset else None
    edit(npz_arrays)
    path = write_npz(npz_arrays)

    with pytest.raises(DrclError) as caught:
        prepare_dataset(Params(data=npz_params(path), seed=0), out_dir=out)

    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    if old_dataset:
        assert folder_snapshot(out) == before
        assert source.read_bytes() == source_before  # the provenance still names the old data
    else:
        assert not out.exists() and not source.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["old.npz", "toy.npz", "ds", source.name] if old_dataset else ["toy.npz"])  # no temp


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(DrclError, match="nope.npz: npz file not found"):
        prepare_dataset(Params(seed=0,
                               data=DataParams(source="npz", path=missing)),
                        out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_not_an_npz_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(DrclError, match=r"junk.npz: not readable as an .npz feature file "
                                        r"\(not a numpy file\)$"):
        prepare_dataset(Params(seed=0,
                               data=DataParams(source="npz", path=path)),
                        out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_data_modalities_selects_and_orders(npz_arrays, write_npz, tmp_path: Path) -> None:
    path = write_npz(npz_arrays)
    one = DataParams(source="npz", path=path, modalities=["text"])
    manifest = prepare_dataset(Params(seed=0, data=one), out_dir=tmp_path / "one")
    assert list(manifest.modalities) == ["text"]
    assert not (tmp_path / "one" / "image.npz").exists()
    both = DataParams(source="npz", path=path, modalities=["text", "image"])
    manifest = prepare_dataset(Params(seed=0, data=both), out_dir=tmp_path / "both")
    assert list(manifest.modalities) == ["text", "image"]


def test_data_modalities_unknown_is_refused(npz_arrays, write_npz, tmp_path: Path) -> None:
    params = DataParams(source="npz", path=write_npz(npz_arrays), modalities=["image", "audio"])
    expected = (r"^data.modalities \[image, audio\] names audio, which toy lacks "
                r"\(it has image, text\)$")
    with pytest.raises(DrclError, match=expected):
        prepare_dataset(Params(data=params, seed=0), out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_items_keep_their_ids(npz_arrays, write_npz, npz_params, tmp_path) -> None:
    """Given ids travel into the data set; items named in two modalities make it paired."""
    for modality in MODALITIES:
        for split in SPLITS:
            n = len(npz_arrays[f"{modality}.{split}.features"])
            npz_arrays[f"{modality}.{split}.ids"] = np.asarray(
                [f"doc-{split}-{i}" for i in range(n)]) if modality == "text" else \
                np.arange(n) + {"train": 0, "val": 1000, "test": 2000}[split]
    manifest = prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0),
                               out_dir=tmp_path / "a")
    assert manifest.paired is False  # integer ids of images, doc-... ids of texts: none shared
    data = load_modality(tmp_path / "a", "text")
    assert list(data.val.ids[:2]) == ["doc-val-0", "doc-val-1"]
    assert load_modality(tmp_path / "a", "image").test.ids[0] == "2000"
    for split in SPLITS:  # the texts now name the images' items
        n = len(npz_arrays[f"text.{split}.features"])
        npz_arrays[f"text.{split}.ids"] = npz_arrays[f"image.{split}.ids"][:n]
    assert prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0),
                           out_dir=tmp_path / "b").paired is True


def test_unnamed_items_are_numbered_per_split(npz_arrays, write_npz, npz_params, tmp_path):
    manifest = prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0),
                               out_dir=tmp_path / "ds")
    assert manifest.paired is False
    data = load_modality(tmp_path / "ds", "image")
    assert list(data.train.ids[:2]) == ["train/0", "train/1"]
    assert data.test.ids[-1] == f"test/{len(data.test) - 1}"


@pytest.mark.parametrize(("ids", "message"), [
    (lambda n: np.asarray(["x"] * n), r"toy.npz:image.train.ids: modality 'image' repeats 1 id"),
    (lambda n: np.arange(n + 1), r"toy.npz:image.train.ids: ids must be strings or whole numbers, "
                                 r"one per feature row"),
    (lambda n: np.ones(n) / 3, r"ids must be strings or whole numbers"),
    (lambda n: np.asarray([""] + ["a"] * (n - 1)), r"modality 'image' has an empty id"),
])
def test_bad_ids_are_refused(npz_arrays, write_npz, npz_params, tmp_path, ids, message) -> None:
    npz_arrays["image.train.ids"] = ids(len(npz_arrays["image.train.features"]))
    with pytest.raises(DrclError, match=message):
        prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0),
                        out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_classes_that_never_occur_are_refused(npz_arrays, write_npz, npz_params, tmp_path):
    """Labels 1..3 and one 99: taken as ids they would make 100 classes, 96 of them empty."""
    npz_arrays["image.test.labels"] = npz_arrays["image.test.labels"].copy()
    npz_arrays["image.test.labels"][0] = 99
    with pytest.raises(DrclError, match=r"^toy: 96 of 100 classes occur in no split of any "
                                        r"modality \(0, 4, 5, .* \.\.\.\); labels must use"):
        prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0),
                        out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_a_damaged_prepared_file_names_itself(npz_arrays, write_npz, npz_params, tmp_path):
    prepare_dataset(Params(data=npz_params(write_npz(npz_arrays)), seed=0), out_dir=tmp_path / "ds")
    file = tmp_path / "ds" / "image.npz"
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(DrclError, match=r"image.npz: not readable as a prepared modality file "
                                        r"\(BadZipFile"):
        load_modality(tmp_path / "ds", "image", verify=False)
    with pytest.raises(DrclError, match=r"image.npz: checksum differs from manifest.json"):
        load_modality(tmp_path / "ds", "image")
