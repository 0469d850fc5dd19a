"""The partial OT solver against an exact linear program (scipy's HiGHS) and hand values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from drcl.transport import partial_transport


def exact_partial_ot(cost: np.ndarray, a: np.ndarray, b: np.ndarray, mass: float
                     ) -> tuple[np.ndarray, float]:
    """min <P, C> s.t. P1 <= a, P^T 1 <= b, sum P = mass, P >= 0, as a linear program."""
    n, k = cost.shape
    rows = np.kron(np.eye(n), np.ones(k))  # (n, n k): row sums
    cols = np.kron(np.ones(n), np.eye(k))  # (k, n k): column sums
    solved = linprog(cost.ravel(), A_ub=np.vstack([rows, cols]), b_ub=np.concatenate([a, b]),
                     A_eq=np.ones((1, n * k)), b_eq=[mass], bounds=(0, None), method="highs")
    assert solved.status == 0
    return solved.x.reshape(n, k), float(solved.fun)


@pytest.mark.parametrize(("n", "k", "mass", "seed"), [(6, 3, 0.5, 0), (9, 4, 0.3, 1),
                                                      (12, 5, 0.8, 2), (5, 5, 1.0, 3)])
def test_matches_the_linear_program(n, k, mass, seed):
    rng = np.random.default_rng(seed)
    cost = rng.random((n, k))
    a = np.full(n, 1 / n)
    b = rng.dirichlet(np.ones(k))
    exact_plan, exact_cost = exact_partial_ot(cost, a, b, mass)
    found = partial_transport(torch.tensor(cost), torch.tensor(a), torch.tensor(b), mass=mass,
                              eps=1e-3, max_iter=20000, tol=1e-10)
    plan = found.plan.numpy()
    assert found.converged
    assert plan.sum() == pytest.approx(mass, abs=1e-6)
    assert (plan.sum(1) <= a + 1e-6).all() and (plan.sum(0) <= b + 1e-6).all()
    assert (plan * cost).sum() == pytest.approx(exact_cost, abs=5e-3)
    np.testing.assert_allclose(plan, exact_plan, atol=2e-2)


def test_hand_values_two_items_two_classes():
    # the free diagonal carries the mass; entropy spreads it evenly over the two free cells
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    plan = partial_transport(cost, half, half, mass=0.5, eps=0.01).plan
    torch.testing.assert_close(plan, torch.tensor([[0.25, 0.0], [0.0, 0.25]],
                                                  dtype=torch.float64), atol=1e-6, rtol=0)


def test_the_cheapest_items_are_the_ones_moved():
    # three items, one class: only the cheapest third of the mass goes
    cost = torch.tensor([[0.9], [0.1], [0.5]], dtype=torch.float64)
    plan = partial_transport(cost, torch.full((3,), 1 / 3, dtype=torch.float64),
                             torch.ones(1, dtype=torch.float64), mass=1 / 3, eps=1e-3,
                             max_iter=20000, tol=1e-10).plan
    torch.testing.assert_close(plan.squeeze(1), torch.tensor([0.0, 1 / 3, 0.0],
                                                             dtype=torch.float64), atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mass": 0.0}, "mass must lie in"), ({"mass": 1.5}, "mass must lie in"),
])
def test_bad_arguments(kwargs, message):
    cost = torch.ones(2, 2)
    with pytest.raises(ValueError, match=message):
        partial_transport(cost, torch.full((2,), 0.5), torch.full((2,), 0.5), **kwargs)
    with pytest.raises(ValueError, match="does not match"):
        partial_transport(torch.ones(3, 2), torch.full((2,), 0.5), torch.full((2,), 0.5),
                          mass=0.5)
    with pytest.raises(ValueError, match="non-negative"):
        partial_transport(-torch.ones(2, 2), torch.full((2,), 0.5), torch.full((2,), 0.5),
                          mass=0.5)
