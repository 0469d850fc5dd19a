"""The run's first task: pin the data reference and plan each task."""

from typing import NamedTuple, Optional


def resolve(seed: int, device: str, precision: str, data: dict, model: dict, prior: dict,
            train: dict, evaluate: dict, extract: dict, tracking: dict, registry: dict,
            promotion: dict,
            tune: Optional[dict] = None  # noqa: UP045 (kfp reads Optional only)
            ) -> NamedTuple("Plan", [("data", dict), ("source", dict), ("prepare", dict),
                                     ("evaluate", dict), ("promote", dict), ("gpu", dict)]):
    """Check every param, pin a DVC revision to its commit, and give each task its view of the
    params and the digest of its code (drcl.kfp.plan). Never served from Kubeflow's cache: a
    branch moves."""
    from collections import namedtuple

    from drcl.config import parse_params
    from drcl.kfp.plan import cpu_views, gpu_views
    from drcl.kfp.tracking import pin_data

    params = parse_params({"seed": seed, "device": device, "precision": precision, "data": data,
                           "model": model, "prior": prior, "train": train,
                           "evaluate": evaluate, "extract": extract, "tracking": tracking,
                           "registry": registry, "promotion": promotion,
                           **({"tune": tune} if tune else {})},
                          source="pipeline arguments")
    pinned, source = pin_data(params)
    print(f"drcl: data {source or pinned['source']}")
    views = cpu_views(params, pinned)
    plan = namedtuple("Plan", ["data", "source", "prepare", "evaluate", "promote", "gpu"])
    return plan(pinned, source or {}, views["prepare"], views["evaluate"], views["promote"],
                gpu_views(params))
