"""Each loss against values worked out by hand on tiny inputs."""

import math

import pytest
import torch

from drcl.losses import (
    gce_q,
    generalized_cross_entropy,
    label_q,
    pairwise_theta,
    recast_mse,
    recast_targets,
    rsc_loss,
    structure_consistency,
)
from drcl.train import prior_pseudo_inverse


def test_gce_q_schedule():
    assert gce_q(1) == pytest.approx(0.01)
    assert gce_q(50) == pytest.approx(0.5)
    assert gce_q(100) == 1.0
    assert gce_q(250) == 1.0
    with pytest.raises(ValueError):
        gce_q(0)


def test_gce_by_hand():
    # sample 1: logits (0, 0) -> p = (0.5, 0.5), true class 0: s = 0.5
    # sample 2: logits (ln 3, 0) -> p = (0.75, 0.25), true class 1: s = 0.25
    # q = 0.5: (1 - sqrt(0.5)) / 0.5 = 0.5857864, (1 - 0.5) / 0.5 = 1.0; mean 0.7928932
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert generalized_cross_entropy(logits, labels, 0.5).item() == pytest.approx(0.7928932, 1e-6)


def test_gce_with_mixed_labels_and_q_one_is_mae_like():
    # q = 1: J_L = mean(1 - s); mixed label (0.9, 0.1) on p = (0.75, 0.25): s = 0.7
    logits = torch.tensor([[math.log(3.0), 0.0]])
    labels = torch.tensor([[0.9, 0.1]])
    assert generalized_cross_entropy(logits, labels, 1.0).item() == pytest.approx(0.3, 1e-6)


def test_gce_tends_to_cross_entropy_as_q_shrinks():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    labels = torch.tensor([[0.0, 0.0, 1.0]])
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([2])).item()
    assert generalized_cross_entropy(logits, labels, 1e-4).item() == pytest.approx(ce, 1e-3)


def test_q_zero_is_the_cross_entropy_by_hand():
    # the same two samples as above: s = 0.5 and 0.25; mean(-log s) = (ln 2 + ln 4) / 2
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = (math.log(2.0) + math.log(4.0)) / 2
    assert generalized_cross_entropy(logits, labels, 0.0).item() == pytest.approx(expected, 1e-6)
    assert label_q(7, "ce") == 0.0 and label_q(7, "gce") == gce_q(7)


def test_theta_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0]])
    # 2*3/(1*5) = 1.2 ; 2*8/(2*5) = 1.6 ; zero row: 0 / max(0, 1e-6) = 0
    assert pairwise_theta(a, b).flatten().tolist() == pytest.approx([1.2, 1.6, 0.0])


def test_structure_consistency_by_hand():
    # theta(T,T) = [[2,0],[0,2]], theta(F,F) = [[2,2],[2,2]] -> mean sq diff = (4+4)/4 = 2
    # theta(T,F) = [[2,2],[0,0]]; minus its transpose [[0,2],[-2,0]] -> mean sq = 8/4 = 2
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert structure_consistency(t, f).item() == pytest.approx(4.0)


def test_structure_consistency_brute_force():
    gen = torch.Generator().manual_seed(0)
    t, f = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)

    def theta(a, b, i, j):
        return 2 * float(a[i] @ b[j]) / max(float(a[i].norm() * b[j].norm()), 1e-6)

    n = 5
    first = sum((theta(t, t, i, j) - theta(f, f, i, j)) ** 2 for i in range(n) for j in range(n))
    second = sum((theta(t, f, i, j) - theta(t, f, j, i)) ** 2 for i in range(n) for j in range(n))
    expected = first / n**2 + second / n**2
    assert structure_consistency(t, f).item() == pytest.approx(expected, rel=1e-5)


def test_mse_reductions_by_hand():
    t = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    f = torch.zeros(2, 2)
    # squares: 1, 4, 0, 0 -> mean over 4 elements = 1.25; per-sample sums 5, 0 -> mean 2.5
    assert recast_mse(t, f, "mean").item() == pytest.approx(1.25)
    assert recast_mse(t, f, "sum").item() == pytest.approx(2.5)


def test_pseudo_inverse_recovers_labels():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(16, 4, generator=gen)
    w_pinv = prior_pseudo_inverse(w)
    assert w_pinv.shape == (4, 16)
    assert torch.allclose(w_pinv @ w, torch.eye(4), atol=1e-5)
    y = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 1]])
    t = recast_targets(y, w_pinv)
    assert t.shape == (3, 16)
    # reversible: the recast target maps back to its label through W
    assert torch.allclose(t @ w, y, atol=1e-5)


def test_orthonormal_prior_pinv_is_transpose():
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(2)))
    w = q[:, :3]
    assert torch.allclose(prior_pseudo_inverse(w), w.T, atol=1e-5)


def test_rsc_loss_is_the_weighted_sum():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(6, 3, generator=gen)
    w_pinv = prior_pseudo_inverse(w)
    f = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=1)
    y = torch.eye(3)[[0, 1, 2, 0]]
    loss = rsc_loss(f, y, w, w_pinv, q=0.3, alpha=0.1, beta=0.2, use_mrr=True,
                    mse_reduction="mean")
    t = y @ w_pinv
    expected = (generalized_cross_entropy(f @ w, y, 0.3) + 0.1 * structure_consistency(t, f)
                + 0.2 * recast_mse(t, f, "mean"))
    assert loss.total.item() == pytest.approx(expected.item(), rel=1e-6)
    no_mrr = rsc_loss(f, y, w, w_pinv, q=0.3, alpha=0.1, beta=0.2, use_mrr=False,
                      mse_reduction="mean")
    assert no_mrr.total.item() == pytest.approx(loss.label.item())
    assert no_mrr.structure.item() == 0.0 and no_mrr.mse.item() == 0.0
