"""Settle what `precision: auto` means on the GPU nodes, before the tasks there are keyed."""

from typing import NamedTuple


def probe(views: dict) -> NamedTuple("Resolved", [("extract", dict), ("prior", dict),
                                                  ("train", dict), ("tune", dict)]):
    """Runs where the training tasks run (their node selector and GPU) and replaces each
    `precision` in their views by the arithmetic this node uses (bf16, tf32 or fp32)."""
    from collections import namedtuple

    from drcl.kfp.plan import resolve_here

    resolved = resolve_here(views)
    print("drcl: precision on the GPU nodes: " + resolved["prior"]["params"].get("precision", ""))
    out = namedtuple("Resolved", ["extract", "prior", "train", "tune"])
    return out(resolved["extract"], resolved["prior"], resolved["train"], resolved["tune"])
