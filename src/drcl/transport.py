"""Entropic partial optimal transport, for label correction (`train.correction`).

Partial OT moves only a share `mass` of the items' total mass onto the classes:

    min_P <P, C>  s.t.  P 1 <= a,  P^T 1 <= b,  1^T P 1 = mass,  P >= 0,

with a the items' masses and b the classes' (each summing to 1). It is solved as a balanced
problem with one dummy item and one dummy class (Chapel et al., NeurIPS 2020): the dummy class
takes the items left out (1 - mass), the dummy item fills the classes' unused share, and the
dummy-to-dummy cell costs more than any real cell, so with C >= 0 exactly `mass` crosses between
real items and real classes. The balanced problem is solved by log-domain Sinkhorn iterations
(stable at small `eps`) on whatever device C is on; C is scaled to [0, 1] first, so `eps` does
not depend on the cost's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Transport:
    """The plan between real items and classes, and how the solver ended."""

    plan: torch.Tensor  # (n, k), sums to `mass`
    iterations: int
    converged: bool


@torch.no_grad()
def partial_transport(cost: torch.Tensor, item_mass: torch.Tensor, class_mass: torch.Tensor, *,
                      mass: float, eps: float = 0.05, max_iter: int = 1000,
                      tol: float = 1e-6) -> Transport:
    """Entropic partial OT plan of `mass` (0 < mass <= 1) from items to classes."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass must lie in (0, 1], got {mass}")
    if cost.ndim != 2 or cost.shape != (item_mass.numel(), class_mass.numel()):
        raise ValueError(f"cost {tuple(cost.shape)} does not match masses "
                         f"{item_mass.numel()} x {class_mass.numel()}")
    if (cost < 0).any():
        raise ValueError("cost must be non-negative")
    n, k = cost.shape
    dtype = torch.float64
    c = cost.to(dtype)
    scale = c.max().clamp_min(1e-12)
    c = c / scale
    extended = torch.zeros(n + 1, k + 1, dtype=dtype, device=cost.device)
    extended[:n, :k] = c
    extended[n, k] = 2.0  # above every real cell (at most 1 after scaling)
    a = torch.cat([item_mass.to(dtype), (class_mass.sum() - mass).reshape(1).to(dtype)])
    b = torch.cat([class_mass.to(dtype), (item_mass.sum() - mass).reshape(1).to(dtype)])
    log_a, log_b = a.clamp_min(1e-300).log(), b.clamp_min(1e-300).log()
    log_kernel = -extended / eps
    f = torch.zeros(n + 1, dtype=dtype, device=cost.device)
    g = torch.zeros(k + 1, dtype=dtype, device=cost.device)
    converged, iteration = False, 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - reported below
        f = eps * (log_a - torch.logsumexp(log_kernel + g[None, :] / eps, dim=1))
        g_new = eps * (log_b - torch.logsumexp(log_kernel + f[:, None] / eps, dim=0))
        change = (g_new - g).abs().max()
        g = g_new
        if change < tol:
            converged = True
            break
    plan = torch.exp(log_kernel + (f[:, None] + g[None, :]) / eps)
    return Transport(plan=plan[:n, :k].to(cost.dtype), iterations=iteration,
                     converged=converged)
