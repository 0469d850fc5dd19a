"""The semantic prior: the isometry, the class columns, targets, and training on seen classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drcl.data.zero_shot import hold_out
from drcl.errors import DrclError
from drcl.prior import ClassSemantics, select_prior
from drcl.semantics import class_columns, isometry
from drcl.train import prior_pseudo_inverse, target_kind, target_matrix, train_encoder

CPU = torch.device("cpu")


@pytest.mark.parametrize("d, e", [(16, 6), (6, 16), (8, 8)])
def test_the_isometry_keeps_inner_products(d, e):
    p = isometry(d, e, seed=3).double()
    assert p.shape == (d, e)
    small = min(d, e)
    gram = p.T @ p if d >= e else p @ p.T
    torch.testing.assert_close(gram, torch.eye(small, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(isometry(d, e, seed=3), isometry(d, e, seed=3))


def unit_rows(n: int, e: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, e, generator=g), dim=1)


def test_class_columns_are_the_projected_texts_one_by_one():
    texts, p = unit_rows(5, 12), isometry(20, 12, seed=0)
    w = class_columns(texts, p)
    for c in range(5):
        v = p @ texts[c]
        torch.testing.assert_close(w[:, c], v / v.norm())
    # an isometry from a wider space: the columns' inner products are the texts'
    torch.testing.assert_close(w.T @ w, texts @ texts.T, atol=1e-5, rtol=0)


def test_the_semantic_prior_covers_the_seen_classes_and_a_new_class_needs_no_training(
        synthetic_modality, tiny_params):
    mod = synthetic_modality("image", dim=4, sizes=(40, 20, 20), classes=5, signal=2, seed=0)
    held = hold_out({"image": mod}, [1, 3])["image"]
    texts = unit_rows(5, 24)
    params = tiny_params(**{"prior.method": "semantic"})
    result = select_prior([held], num_classes=5, params=params, device=CPU,
                          semantics=ClassSemantics([str(c) for c in range(5)], texts))
    assert result.method == "semantic" and result.classes.tolist() == [0, 2, 4]
    assert result.prior.shape == (16, 3)
    # the unseen class's column, made later from its text alone, is the one it would have had
    full = select_prior([mod], num_classes=5, params=params, device=CPU,
                        semantics=ClassSemantics([str(c) for c in range(5)], texts))
    torch.testing.assert_close(class_columns(texts[[1]], result.projection)[:, 0],
                               full.prior[:, 1])
    with pytest.raises(DrclError, match="needs an embedded text for each of the 5 classes"):
        select_prior([held], num_classes=5, params=params, device=CPU)


@pytest.mark.parametrize("method", ["orthogonal", "spl"])
def test_the_other_priors_cover_the_seen_classes_only(synthetic_modality, tiny_params, method):
    mod = synthetic_modality("image", dim=4, sizes=(40, 20, 20), classes=5, signal=2, seed=0)
    held = hold_out({"image": mod}, [0])["image"]
    result = select_prior([held], num_classes=5, device=CPU,
                          params=tiny_params(**{"prior.method": method, "train.epochs": 2}))
    assert result.prior.shape == (16, 4) and result.classes.tolist() == [1, 2, 3, 4]


def test_class_targets_are_the_columns_and_equal_recast_ones_for_an_orthonormal_prior():
    w = torch.linalg.qr(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))[0]
    torch.testing.assert_close(target_matrix(w, "class"), w.T)
    torch.testing.assert_close(target_matrix(w, "recast"), w.T, atol=1e-5, rtol=0)
    skew = w + 0.5 * w[:, [0]]
    torch.testing.assert_close(target_matrix(skew, "recast"), prior_pseudo_inverse(skew))
    assert not torch.allclose(target_matrix(skew, "recast"), skew.T, atol=1e-3)


def test_auto_targets_follow_the_prior(tiny_params):
    assert target_kind(tiny_params(), "semantic") == "class"
    assert target_kind(tiny_params(), "spl") == "recast"
    assert target_kind(tiny_params(**{"train.targets": "recast"}), "semantic") == "recast"


def test_training_sees_only_the_seen_classes(synthetic_modality, tiny_params):
    mod = synthetic_modality("image", dim=4, sizes=(40, 20, 20), classes=5, signal=2, seed=0)
    held = hold_out({"image": mod}, [1, 3])["image"]
    w = class_columns(unit_rows(3, 24), isometry(16, 24, seed=0))
    result = train_encoder(held, w, params=tiny_params(), device=CPU, targets="class")
    assert result.best_epoch >= 1
    with pytest.raises(DrclError, match="W has 5 classes but modality 'image' has 3 in training"):
        train_encoder(held, torch.zeros(16, 5), params=tiny_params(), device=CPU)


def test_class_texts_are_embedded_once_and_cached(tmp_path, monkeypatch):
    from drcl.extract import class_texts
    from drcl.extract.extractors import MiniLM

    texts = ["a photograph of a cat", "sailing ship"]
    first = class_texts.embed_class_texts(texts, cache_dir=tmp_path)
    assert first.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    direct = MiniLM(batch_size=8, device="cpu").embed(texts)
    np.testing.assert_allclose(first, direct, atol=1e-5)

    def refuse(self, payloads):
        raise AssertionError("embedded again instead of read from the cache")

    monkeypatch.setattr(MiniLM, "embed", refuse)
    np.testing.assert_array_equal(class_texts.embed_class_texts(texts, cache_dir=tmp_path), first)
    with pytest.raises(DrclError, match="class 1 has an empty text"):
        class_texts.embed_class_texts(["x", "  "], cache_dir=tmp_path)


def test_class_queries_need_a_semantic_prior(tmp_path):
    from drcl.prior_io import save_prior
    from drcl.search import class_queries

    save_prior(torch.eye(4)[:, :2], tmp_path / "prior.safetensors", method="orthogonal")
    with pytest.raises(DrclError, match="^--class-text: the champion set's prior is "
                                        "'orthogonal'; only prior.method: semantic"):
        class_queries(tmp_path / "prior.safetensors", ["cat"], device=CPU)


def test_paired_text_targets_follow_ids_and_fall_back_to_the_class_column():
    from drcl.data.dataset import ModalityData, Split
    from drcl.paired_targets import paired_text_targets

    texts = unit_rows(3, 6, seed=1).numpy()
    p = isometry(8, 6, seed=0)
    w = class_columns(unit_rows(2, 6, seed=2), p)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    image = Split(np.zeros((3, 4), np.float32), labels, np.array(["a", "b", "c"]))
    text = Split(texts, labels, np.array(["c", "a", "z"]))  # b has no text
    pair = paired_text_targets(ModalityData("image", image, image, image),
                               ModalityData("text", text, text, text), projection=p, prior=w)
    torch.testing.assert_close(pair.train[0], p @ torch.as_tensor(texts[1]))
    torch.testing.assert_close(pair.train[2], p @ torch.as_tensor(texts[0]))
    torch.testing.assert_close(pair.train[1], w[:, 1])
    with pytest.raises(DrclError, match="modality 'image' is 4-d, not in the 6-d class text"):
        paired_text_targets(ModalityData("text", text, text, text),
                            ModalityData("image", image, image, image), projection=p, prior=w)
