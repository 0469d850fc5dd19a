"""Zero-shot protocol: which classes are held out, that nothing of them reaches training or
validation, that the test split keeps them, and the per-class-set evaluation tables."""

from __future__ import annotations

import numpy as np
import pytest

from drcl.config import DataParams, parse_params
from drcl.data.dataset import load_manifest, load_modality
from drcl.data.prepare import prepare_dataset
from drcl.data.zero_shot import choose_unseen, class_subset, hold_out, training_view
from drcl.errors import DrclError
from drcl.metrics import class_set_report, direction_report

CLASSES = ["cat", "dog", "car", "ship", "tree"]


def data(**kw) -> DataParams:
    return DataParams(source="npz", path="x.npz", **kw)


def test_named_classes_are_held_out_in_class_order():
    assert choose_unseen(CLASSES, data(unseen_classes=["ship", "cat"]), seed=0, name="d") == [0, 3]
    assert choose_unseen(CLASSES, data(), seed=0, name="d") == []


def test_a_drawn_count_follows_the_seed():
    draws = {tuple(choose_unseen(CLASSES, data(unseen_class_count=2), seed=s, name="d"))
             for s in range(20)}
    assert all(len(d) == 2 and list(d) == sorted(d) for d in draws)
    assert len(draws) > 3  # different seeds, different splits
    again = choose_unseen(CLASSES, data(unseen_class_count=2), seed=7, name="d")
    assert again == choose_unseen(CLASSES, data(unseen_class_count=2), seed=7, name="d")


def test_an_unknown_class_is_refused_with_the_names_the_data_has():
    with pytest.raises(DrclError, match=r"^data.unseen_classes: d has no class 'horse'; its "
                                        r"classes are cat, dog, car, ship, tree$"):
        choose_unseen(CLASSES, data(unseen_classes=["cat", "horse"]), seed=0, name="d")


@pytest.mark.parametrize("kw, key", [({"unseen_classes": CLASSES[:4]}, "data.unseen_classes"),
                                     ({"unseen_class_count": 4}, "data.unseen_class_count"),
                                     ({"unseen_class_count": 9}, "data.unseen_class_count")])
def test_fewer_than_two_seen_classes_are_refused(kw, key):
    with pytest.raises(DrclError, match=rf"^{key}: holding out \d of d's 5 classes leaves [01] "
                                        "seen; training needs at least two$"):
        choose_unseen(CLASSES, data(**kw), seed=0, name="d")


@pytest.mark.parametrize("raw, message", [
    ({"unseen_classes": ["a"], "unseen_class_count": 1}, "set one of the two"),
    ({"unseen_classes": ["a", "a"]}, "list each class once"),
    ({"unseen_classes": []}, "list each class once"),
    ({"unseen_class_count": 0}, "greater than or equal to 1"),
    ({"unseen_class_count": 1, "noise": {"kind": "symmetric", "rate": 0.2}},
     "run the two settings apart"),
])
def test_bad_settings_name_the_key(raw, message):
    with pytest.raises(DrclError, match="data") as err:
        parse_params({"data": {"source": "npz", "path": "x.npz", **raw}})
    assert message in str(err.value) and "\n" not in str(err.value)


def _labels(ids, classes=5):
    return np.eye(classes, dtype=np.float32)[ids]


def test_hold_out_removes_training_and_validation_items_only(synthetic_modality):
    mod = synthetic_modality("image", dim=4, sizes=(50, 20, 30), classes=5, signal=1, seed=0)
    held = hold_out({"image": mod}, [1, 3])["image"]
    for split in ("train", "val"):
        part = held.split(split)
        assert part.labels[:, [1, 3]].sum() == 0
        assert len(part) == int(mod.split(split).labels[:, [0, 2, 4]].sum())
    assert held.test is mod.test and held.unseen == (1, 3)
    view = training_view(held)
    assert view.train.labels.shape[1] == 3 and view.val.labels.shape[1] == 3
    np.testing.assert_array_equal(view.train.labels, held.train.labels[:, [0, 2, 4]])
    assert view.test.labels.shape[1] == 5 and training_view(view) is view


def test_multi_label_items_with_any_unseen_label_leave_training():
    from drcl.data.dataset import ModalityData, Split

    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=np.float32)
    split = Split(np.arange(8, dtype=np.float32).reshape(4, 2), labels)
    held = hold_out({"m": ModalityData("m", split, split, split)}, [1])["m"]
    np.testing.assert_array_equal(held.train.labels, labels[[0, 2]])


def test_class_subsets_against_a_loop():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
    rows, narrowed = class_subset(labels, np.array([0, 1]))
    expected = [i for i, row in enumerate(labels)
                if row.sum() > 0 and all(row[c] == 0 for c in (2,))]
    assert rows.tolist() == expected == [0, 1, 2]
    np.testing.assert_array_equal(narrowed, labels[[0, 1, 2]][:, [0, 1]])


def test_class_set_report_equals_the_report_of_the_subset_by_hand():
    rng = np.random.default_rng(0)
    ids = {m: rng.integers(0, 5, 40) for m in ("a", "b")}
    emb = {m: rng.normal(size=(40, 8)).astype(np.float32) for m in ids}
    labels = {m: _labels(ids[m]) for m in ids}
    got = class_set_report(emb, labels, [1, 4], k=5, multi_label=False)
    keep = {m: np.isin(ids[m], [1, 4]) for m in ids}
    by_hand, _ = direction_report({m: emb[m][keep[m]] for m in ids},
                                  {m: labels[m][keep[m]][:, [1, 4]] for m in ids},
                                  k=5, multi_label=False)
    for table in by_hand:
        assert got[table] == pytest.approx(by_hand[table])


def test_prepare_keeps_unseen_classes_out_of_training_and_in_the_test_split(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"classes": np.array(CLASSES)}
    for view in ("image", "text"):
        for split, n in (("train", 50), ("val", 25), ("test", 25)):
            arrays[f"{view}.{split}.features"] = rng.normal(size=(n, 3))
            arrays[f"{view}.{split}.labels"] = np.arange(n) % 5
    np.savez(tmp_path / "x.npz", **arrays)
    params = parse_params({"data": {"source": "npz", "path": str(tmp_path / "x.npz"),
                                    "unseen_classes": ["dog", "tree"],
                                    "class_text": {"car": "a road vehicle"}}})
    prepare_dataset(params, out_dir=tmp_path / "prepared")
    manifest = load_manifest(tmp_path / "prepared")
    assert manifest.unseen_classes == ["dog", "tree"] and manifest.unseen_ids == [1, 4]
    assert manifest.class_texts() == ["cat", "dog", "a road vehicle", "ship", "tree"]
    for view in ("image", "text"):
        mod = load_modality(tmp_path / "prepared", view)
        assert mod.unseen == (1, 4)
        for split in ("train", "val"):
            assert mod.split(split).labels[:, [1, 4]].sum() == 0
            assert len(mod.split(split)) == {"train": 30, "val": 15}[split]
        assert mod.test.labels[:, [1, 4]].sum() == 10  # test keeps every class


def test_a_class_text_for_a_class_the_data_lacks_is_refused(tmp_path):
    arrays = {"classes": np.array(CLASSES)}
    for split in ("train", "val", "test"):
        arrays[f"m.{split}.features"] = np.ones((10, 2))
        arrays[f"m.{split}.labels"] = np.arange(10) % 5
    np.savez(tmp_path / "x.npz", **arrays)
    params = parse_params({"data": {"source": "npz", "path": str(tmp_path / "x.npz"),
                                    "class_text": {"horse": "an animal"}}})
    with pytest.raises(DrclError, match=r"^data.class_text: x has no class 'horse'; its "
                                        "classes are cat, dog, car, ship, tree$"):
        prepare_dataset(params, out_dir=tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


def test_a_split_left_without_seen_items_is_refused(synthetic_modality):
    mod = synthetic_modality("image", dim=4, sizes=(10, 5, 5), classes=5, signal=1, seed=0)
    with pytest.raises(DrclError, match="^data.unseen_classes: modality 'image' has no train "
                                        "item of a seen class left$"):
        hold_out({"image": mod}, [0, 1, 2, 3, 4])
