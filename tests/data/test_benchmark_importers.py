"""The importers of the field's benchmark files, on small files written here in each exact format
(MATLAB v5 with scipy, v7.3 and plain HDF5 with h5py), and the Wikipedia release on its real files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse

from drcl.config import DataParams, Params
from drcl.data.dataset import load_modality
from drcl.data.prepare import prepare_dataset
from drcl.data.sources import import_source
from drcl.errors import DrclError

ROOT = Path(__file__).resolve().parents[2]
REAL_WIKIPEDIA = ROOT.parent / "shared" / "data" / "wikipedia"

Arrays = dict[str, "np.ndarray | list[np.ndarray]"]


def write_v5(path: Path, arrays: Arrays) -> Path:
    """MATLAB v5; lists become 1 x n cell arrays, as MATLAB's ``{a, b, c}``."""
    converted = {}
    for key, value in arrays.items():
        if isinstance(value, list):
            cell = np.empty((1, len(value)), dtype=object)
            for i, item in enumerate(value):
                cell[0, i] = item
            value = cell
        converted[key] = value
    scipy.io.savemat(path, converted, format="5")
    return path


def write_v73(path: Path, arrays: Arrays) -> Path:
    """As MATLAB's ``save -v7.3``: a 512-byte MATLAB header, column-major (so transposed) arrays,
    cell arrays as object references into ``#refs#``."""
    with h5py.File(path, "w", userblock_size=512) as fh:
        for key, value in arrays.items():
            if isinstance(value, list):
                refs = fh.require_group("#refs#")
                handles = [refs.create_dataset(f"{key}{i}", data=np.asarray(cell).T).ref
                           for i, cell in enumerate(value)]
                data = np.array(handles, dtype=h5py.ref_dtype).reshape(len(handles), 1)
                fh.create_dataset(key, data=data).attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                fh.create_dataset(key, data=np.asarray(value).T)
    with path.open("r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(128))
    return path


def write_hdf5(path: Path, arrays: Arrays) -> Path:
    """As Python code writes the community's ``.h5py`` files: row-major, no header."""
    with h5py.File(path, "w") as fh:
        for key, value in arrays.items():
            fh.create_dataset(key, data=value)
    return path


MAT_WRITERS = {"v5": write_v5, "v7.3": write_v73}


def labelled(rng: np.random.Generator, n: int, dim: int, classes: int,
             base: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Features and class ids ``base..base+classes-1``, every class present when n allows."""
    ids = np.arange(n) % classes + base
    rng.shuffle(ids)
    return rng.normal(size=(n, dim)), ids


def prepare(tmp_path: Path, source: str, path: Path):
    out = tmp_path / "prepared"
    manifest = prepare_dataset(Params(data=DataParams(source=source, path=path), seed=0),
                               out_dir=out)
    return manifest, out


# --- wikipedia_deep (wiki.mat) ----------------------------------------------------------------

def wiki_arrays(rng: np.random.Generator, *, train: int = 30, test: int = 240) -> Arrays:
    arrays: Arrays = {}
    for split, n in (("train", train), ("test", test)):
        images, ids = labelled(rng, n, 6, 10)
        arrays[f"{split}_imgs_deep"] = images
        arrays[f"{split}_texts_doc"] = rng.normal(size=(n, 4))
        arrays[f"{split}_imgs_labels"] = ids.reshape(n, 1)  # a 1-based column, as in wiki.mat
    return arrays


@pytest.mark.parametrize("version", MAT_WRITERS)
def test_wikipedia_deep_cuts_validation_from_test(tmp_path, version):
    arrays = wiki_arrays(np.random.default_rng(0))
    path = MAT_WRITERS[version](tmp_path / "wiki.mat", arrays)
    manifest, out = prepare(tmp_path, "wikipedia_deep", path)
    assert manifest.num_classes == 10 and not manifest.multi_label
    assert {m: (i.dim, i.sizes) for m, i in manifest.modalities.items()} == {
        "image": (6, {"train": 30, "val": 231, "test": 9}),
        "text": (4, {"train": 30, "val": 231, "test": 9}),
    }
    image = load_modality(out, "image")
    np.testing.assert_allclose(image.val.features, arrays["test_imgs_deep"][:231], rtol=1e-6)
    np.testing.assert_allclose(image.test.features, arrays["test_imgs_deep"][231:], rtol=1e-6)
    # 1-based ids become 0-based one-hot rows
    assert (image.train.labels.argmax(1) == arrays["train_imgs_labels"].ravel() - 1).all()
    text = load_modality(out, "text")
    assert (text.test.labels == image.test.labels).all()  # both views share the image labels
    assert manifest.paired  # row i of each view is one article: one id in both
    assert text.val.ids[0] == image.val.ids[0] == "val/0"


def test_wikipedia_deep_needs_more_than_231_test_rows(tmp_path):
    path = write_v5(tmp_path / "wiki.mat", wiki_arrays(np.random.default_rng(0), test=200))
    with pytest.raises(DrclError, match=r"test_imgs_deep: 200 rows; the protocol splits it"):
        import_source(DataParams(source="wikipedia_deep", path=path))


@pytest.mark.parametrize("version", MAT_WRITERS)
def test_wrong_file_names_expected_and_found_keys(tmp_path, version):
    arrays = wiki_arrays(np.random.default_rng(0))
    arrays["test_texts"] = arrays.pop("test_texts_doc")
    path = MAT_WRITERS[version](tmp_path / "wiki.mat", arrays)
    with pytest.raises(DrclError) as err:
        import_source(DataParams(source="wikipedia_deep", path=path))
    message = str(err.value)
    assert "not a Wikipedia wiki.mat file: missing test_texts_doc" in message
    assert "expected keys train_imgs_deep, train_texts_doc" in message
    assert "found test_imgs_deep, test_imgs_labels, test_texts, train_imgs_deep" in message
    assert "\n" not in message


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "wiki.mat"
    junk.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DrclError, match="wiki.mat: not a readable MATLAB .mat or HDF5 file"):
        import_source(DataParams(source="wikipedia_deep", path=junk))
    with pytest.raises(DrclError, match="absent.mat: INRIA-Websearch .mat file not found"):
        import_source(DataParams(source="inria_websearch", path=tmp_path / "absent.mat"))


# --- nus_wide (.h5py) -------------------------------------------------------------------------

def test_nus_wide_hdf5_with_one_hot_labels(tmp_path):
    rng = np.random.default_rng(1)
    arrays: Arrays = {}
    sizes = {"train": 40, "valid": 12, "test": 15}
    for prefix, n in sizes.items():
        images, ids = labelled(rng, n, 8, 10, base=0)
        arrays[f"{prefix}_imgs_deep"] = images.astype(np.float32)
        arrays[f"{prefix}_texts"] = rng.normal(size=(n, 5)).astype(np.float32)
        arrays[f"{prefix}_imgs_labels"] = np.eye(10, dtype=np.float32)[ids]
    path = write_hdf5(tmp_path / "nus_wide_deep_doc2vec.h5py", arrays)
    manifest, out = prepare(tmp_path, "nus_wide", path)
    assert not manifest.multi_label and manifest.num_classes == 10
    assert manifest.modalities["image"].sizes == {"train": 40, "val": 12, "test": 15}
    assert manifest.modalities["text"].dim == 5
    text = load_modality(out, "text")
    # row-major HDF5 is read as written: no transposition
    np.testing.assert_allclose(text.val.features, arrays["valid_texts"])
    np.testing.assert_array_equal(text.val.labels, arrays["valid_imgs_labels"])


# --- inria_websearch (.mat, tr_/val_/te_) ----------------------------------------------------

@pytest.mark.parametrize("version", MAT_WRITERS)
def test_inria_websearch_row_labels(tmp_path, version):
    rng = np.random.default_rng(2)
    arrays: Arrays = {}
    for prefix, n in (("tr", 120), ("val", 30), ("te", 40)):
        images, ids = labelled(rng, n, 7, 100, base=0)
        arrays[f"{prefix}_img"], arrays[f"{prefix}_txt"] = images, rng.normal(size=(n, 3))
        arrays[f"{prefix}_img_lab"] = ids.reshape(1, n)  # a 0-based row vector
    path = MAT_WRITERS[version](tmp_path / "INRIA-Websearch.mat", arrays)
    manifest, out = prepare(tmp_path, "inria_websearch", path)
    assert manifest.num_classes == 100
    assert manifest.modalities["text"].sizes == {"train": 120, "val": 30, "test": 40}
    image = load_modality(out, "image")
    assert (image.test.labels.argmax(1) == arrays["te_img_lab"].ravel()).all()
    np.testing.assert_allclose(image.train.features, arrays["tr_img"], rtol=1e-6)


# --- xmedianet (.mat of 1 x 5 cell arrays) ---------------------------------------------------

@pytest.mark.parametrize("version", MAT_WRITERS)
def test_xmedianet_cells_become_five_modalities(tmp_path, version):
    rng = np.random.default_rng(3)
    dims, arrays = [9, 6, 5, 4, 3], {}
    sizes = {"train": [50, 45, 40, 30, 20], "valid": [10, 9, 8, 7, 6], "test": [12, 11, 10, 9, 8]}
    for prefix, counts in sizes.items():
        parts = [labelled(rng, n, d, 5) for n, d in zip(counts, dims, strict=True)]
        arrays[prefix] = [features for features, _ in parts]
        arrays[f"{prefix}_labels"] = [ids.reshape(1, -1) for _, ids in parts]
    path = MAT_WRITERS[version](tmp_path / "XMediaNet5View.mat", arrays)
    manifest, out = prepare(tmp_path, "xmedianet", path)
    assert list(manifest.modalities) == ["image", "text", "video", "audio", "3d"]
    assert not manifest.paired  # the media are separate items
    assert [i.dim for i in manifest.modalities.values()] == dims
    assert manifest.modalities["audio"].sizes == {"train": 30, "val": 7, "test": 9}
    video = load_modality(out, "video")
    np.testing.assert_allclose(video.val.features, arrays["valid"][2], rtol=1e-6)
    assert (video.val.labels.argmax(1) == arrays["valid_labels"][2].ravel() - 1).all()


def test_xmedianet_wrong_cell_count(tmp_path):
    rng = np.random.default_rng(3)
    arrays: Arrays = {}
    for prefix in ("train", "valid", "test"):
        arrays[prefix] = [rng.normal(size=(4, 3)) for _ in range(4)]
        arrays[f"{prefix}_labels"] = [np.arange(4).reshape(1, 4) for _ in range(4)]
    path = write_v5(tmp_path / "x.mat", arrays)
    with pytest.raises(DrclError, match=r"x.mat:train: expected a cell array of 5 matrices, "
                                        r"found a cell array of 4"):
        import_source(DataParams(source="xmedianet", path=path))


# --- xmedia (XMediaFeatures.mat) ---------------------------------------------------------------

XMEDIA = {"image": ("I_tr_CNN", "I_te_CNN", "trImgCat", "teImgCat", 8),
          "text": ("T_tr_BOW", "T_te_BOW", "trTxtCat", "teTxtCat", 12),
          "audio": ("A_tr", "A_te", "trAudCat", "teAudCat", 5),
          "3d": ("d3_tr", "d3_te", "tr3dCat", "te3dCat", 6),
          "video": ("V_tr_CNN", "V_te_CNN", "trVidCat", "teVidCat", 7)}


def xmedia_arrays(rng: np.random.Generator, *, sparse_text: bool) -> Arrays:
    arrays: Arrays = {}
    for modality, (tr, te, tr_lab, te_lab, dim) in XMEDIA.items():
        for key, lab, n in ((tr, tr_lab, 60), (te, te_lab, 24 if modality != "3d" else 20)):
            features, ids = labelled(rng, n, dim, 20)
            if modality == "text":  # bag-of-words counts
                features = rng.poisson(0.3, size=(n, dim)).astype(np.float64)
                if sparse_text:
                    features = scipy.sparse.csc_matrix(features)
            arrays[key], arrays[lab] = features, ids.reshape(n, 1)
    return arrays


@pytest.mark.parametrize("version", MAT_WRITERS)
def test_xmedia_halves_the_test_arrays(tmp_path, version):
    rng = np.random.default_rng(4)
    arrays = xmedia_arrays(rng, sparse_text=version == "v5")
    path = MAT_WRITERS[version](tmp_path / "XMediaFeatures.mat", arrays)
    manifest, out = prepare(tmp_path, "xmedia", path)
    assert manifest.num_classes == 20
    assert set(manifest.modalities) == set(XMEDIA)
    assert manifest.modalities["image"].sizes == {"train": 60, "val": 12, "test": 12}
    assert manifest.modalities["3d"].sizes == {"train": 60, "val": 10, "test": 10}
    text = load_modality(out, "text")
    dense = arrays["T_te_BOW"]
    dense = dense.toarray() if scipy.sparse.issparse(dense) else dense
    np.testing.assert_allclose(text.test.features, dense[:12])  # first half: test
    np.testing.assert_allclose(text.val.features, dense[12:])   # second half: validation
    assert (text.val.labels.argmax(1) == arrays["teTxtCat"].ravel()[12:] - 1).all()


def test_matlab_v73_sparse_matrix(tmp_path):
    """A sparse matrix saved by MATLAB -v7.3 is a group of data, ir, jc."""
    dense = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])
    csc = scipy.sparse.csc_matrix(dense)
    arrays = xmedia_arrays(np.random.default_rng(5), sparse_text=False)
    path = write_v73(tmp_path / "XMediaFeatures.mat", arrays)
    with h5py.File(path, "r+") as fh:
        del fh["A_tr"]
        group = fh.create_group("A_tr")
        group.attrs["MATLAB_sparse"] = dense.shape[0]
        for name, value in (("data", csc.data), ("ir", csc.indices), ("jc", csc.indptr)):
            group.create_dataset(name, data=value)
        del fh["trAudCat"]
        fh.create_dataset("trAudCat", data=np.array([[1, 2, 3, 4]]))
    audio = import_source(DataParams(source="xmedia", path=path)).modalities["audio"]["train"]
    np.testing.assert_array_equal(audio.features, dense)


# --- wikipedia_svcl (the release folder) -----------------------------------------------------

def write_release(folder: Path, rng: np.random.Generator, *, train: int = 24,
                  test: int = 240) -> Path:
    """A release folder in the real layout, with made-up ids and features."""
    folder.mkdir()
    names = ["art", "biology", "geography"]
    (folder / "categories.list").write_text("\n".join(names) + "\n")
    arrays = {}
    for split, suffix, n in (("trainset", "tr", train), ("testset", "te", test)):
        _, ids = labelled(rng, n, 1, len(names))
        lines = [f"t{split}{i}\ti{split}{i}\t{c}" for i, c in enumerate(ids)]
        (folder / f"{split}_txt_img_cat.list").write_text("\n".join(lines) + "\n")
        arrays[f"I_{suffix}"] = rng.random((n, 128))
        arrays[f"T_{suffix}"] = rng.dirichlet(np.ones(10), size=n)
    write_v5(folder / "raw_features.mat", arrays)
    return folder


def test_wikipedia_svcl_release_layout(tmp_path):
    root = write_release(tmp_path / "wikipedia", np.random.default_rng(6))
    manifest, out = prepare(tmp_path, "wikipedia_svcl", root)
    assert manifest.classes == ["art", "biology", "geography"]
    assert manifest.modalities["image"].sizes == {"train": 24, "val": 231, "test": 9}
    assert manifest.modalities["text"].dim == 10
    lines = (root / "testset_txt_img_cat.list").read_text().splitlines()
    categories = np.array([int(line.split("\t")[2]) for line in lines])
    text = load_modality(out, "text")
    assert (text.test.labels.argmax(1) == categories[231:] - 1).all()
    # a pair is one item, named by its text id in both modalities
    assert manifest.paired
    assert text.test.ids.tolist() == [line.split("\t")[0] for line in lines[231:]]
    assert load_modality(out, "image").test.ids.tolist() == text.test.ids.tolist()


def test_wikipedia_svcl_bad_list_line(tmp_path):
    root = write_release(tmp_path / "wikipedia", np.random.default_rng(6))
    listing = root / "trainset_txt_img_cat.list"
    listing.write_text(listing.read_text().replace("\t1\n", "\t11\n", 1))
    with pytest.raises(DrclError, match=r"trainset_txt_img_cat.list:\d+: expected 'text id"):
        import_source(DataParams(source="wikipedia_svcl", path=root))


@pytest.mark.skipif(not REAL_WIKIPEDIA.is_dir(),
                    reason=f"the real Wikipedia release is not at {REAL_WIKIPEDIA} "
                           "(../shared/data/wikipedia beside the repository)")
def test_wikipedia_svcl_real_files(tmp_path):
    manifest, out = prepare(tmp_path, "wikipedia_svcl", REAL_WIKIPEDIA)
    assert manifest.classes[:3] == ["art", "biology", "geography"] and manifest.num_classes == 10
    assert {m: (i.dim, i.sizes) for m, i in manifest.modalities.items()} == {
        "image": (128, {"train": 2173, "val": 231, "test": 462}),
        "text": (10, {"train": 2173, "val": 231, "test": 462}),
    }
    text = load_modality(out, "text")
    # class counts from the release's README
    assert text.train.labels.sum(0).astype(int).tolist() == [138, 272, 244, 248, 202, 178, 186,
                                                             144, 214, 347]
    test_all = np.concatenate([text.val.labels, text.test.labels]).sum(0).astype(int)
    assert test_all.tolist() == [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]
    np.testing.assert_allclose(text.train.features.sum(1), 1.0, atol=1e-4)  # LDA topic mixtures


def _sources() -> list[tuple[str, Callable[[Path], Path]]]:
    return [("nus_wide", lambda p: write_hdf5(p / "f.h5py", {"x": np.zeros(3)})),
            ("xmedia", lambda p: write_v5(p / "f.mat", {"x": np.zeros(3)}))]


@pytest.mark.parametrize(("source", "write"), _sources())
def test_every_importer_names_its_expected_keys(tmp_path, source, write):
    with pytest.raises(DrclError, match=r"missing .*; expected keys .*; found x$"):
        import_source(DataParams(source=source, path=write(tmp_path)))
