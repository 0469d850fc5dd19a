"""labels.normalize_labels: base and class count decided over the whole data set."""

from __future__ import annotations

import numpy as np
import pytest

from drcl.data.labels import LabelSource, label_layout, normalize_labels
from drcl.errors import DrclError


def _ids(*arrays: list[int]) -> list[LabelSource]:
    return [LabelSource(np.array(a), len(a), f"f.npz:part{i}") for i, a in enumerate(arrays)]


@pytest.mark.parametrize(("shape", "rows", "layout"), [
    ((4,), 4, "ids"), ((4, 1), 4, "ids"), ((1, 4), 4, "ids"), ((1, 1), 1, "ids"),
    ((4, 3), 4, "matrix"), ((4, 4), 4, "matrix"), ((3,), 4, None), ((4, 1, 1), 4, None),
])
def test_label_layout(shape, rows, layout) -> None:
    assert label_layout(shape, rows) == layout


def test_one_based_when_zero_never_occurs_and_max_is_the_class_count() -> None:
    result = normalize_labels(_ids([1, 2, 3], [2, 3]))
    assert (result.num_classes, result.multi_label) == (3, False)
    np.testing.assert_array_equal(result.matrices[1].argmax(axis=1), [1, 2])


def test_zero_in_any_part_makes_all_parts_zero_based() -> None:
    # Alone, [1, 2] would read as 1-based; together with the 0 elsewhere it is 0-based.
    result = normalize_labels(_ids([0, 1, 2], [1, 2]))
    assert result.num_classes == 3
    np.testing.assert_array_equal(result.matrices[1].argmax(axis=1), [1, 2])


def test_gaps_keep_ids_as_they_are() -> None:
    result = normalize_labels(_ids([1, 3], [3]))  # max 3 != 2 distinct ids: not 1-based
    assert result.num_classes == 4
    np.testing.assert_array_equal(result.matrices[0].argmax(axis=1), [1, 3])


def test_named_classes_fix_the_count_and_the_range() -> None:
    one_based = normalize_labels(_ids([1, 2], [2]), num_classes=2)
    assert one_based.matrices[0].argmax(axis=1).tolist() == [0, 1]
    assert normalize_labels(_ids([1, 2]), num_classes=5).num_classes == 5
    with pytest.raises(DrclError, match=r"f.npz:part1: class id 7 is out of range for 5 classes"):
        normalize_labels(_ids([0, 1], [7]), num_classes=5)


def test_one_hot_matrices_are_single_label_and_multi_hot_is_not() -> None:
    one_hot = np.eye(3)[[0, 2, 1]]
    single = normalize_labels([LabelSource(one_hot, 3, "a")])
    assert (single.num_classes, single.multi_label) == (3, False)
    multi_hot = np.array([[1, 1, 0], [0, 0, 0]])
    multi = normalize_labels([LabelSource(one_hot, 3, "a"), LabelSource(multi_hot, 2, "b")])
    assert multi.multi_label is True
    assert all(m.dtype == np.float32 for m in multi.matrices)
