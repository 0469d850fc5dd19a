"""What label correction adds to an epoch: the partial OT solve at data sets' sizes.

    python benchmarks/noise/solver_speed.py [--sizes 1200x10 ...] [--repeats 3] [--device auto]

Posteriors drawn from a Dirichlet (peaked, as a trained classifier's are), items of equal mass,
classes of equal mass, trusted mass 0.5 and 0.9, the default eps; time (median of --repeats after a
warm-up) and Sinkhorn iterations to the default tolerance. Sizes: UCI Multiple Features (1,200
training items x 10 classes), Wikipedia (2,173 x 10), a 9,000 x 100 set and XMediaNet's shape
(32,000 x 200).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from drcl.config import CorrectionParams
from drcl.runtime import resolve_device
from drcl.transport import partial_transport

SIZES = ["1200x10", "2173x10", "9000x100", "32000x200"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="items x classes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    eps = CorrectionParams().eps
    torch.manual_seed(0)
    print(f"device {device}, torch threads {torch.get_num_threads()}, eps {eps}")
    print("| items x classes | mass | seconds | iterations |")
    print("|---|---|---|---|")
    for size in args.sizes:
        n, k = (int(x) for x in size.split("x"))
        alpha = torch.full((k,), 0.3)
        posteriors = torch.distributions.Dirichlet(alpha).sample((n,)).clamp_min(1e-12)
        cost = (-posteriors.log()).to(device)
        a = torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
        b = torch.full((k,), 1.0 / k, dtype=torch.float64, device=device)
        for mass in (0.5, 0.9):
            partial_transport(cost[:100], a[:100] * n / 100, b, mass=mass, eps=eps)  # warm-up
            times, found = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                found = partial_transport(cost, a, b, mass=mass, eps=eps)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            print(f"| {n:,} x {k} | {mass} | {statistics.median(times):.3f} | "
                  f"{found.iterations}{'' if found.converged else ' (limit)'} |")


if __name__ == "__main__":
    main()
