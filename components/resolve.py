"""The run's first step: what it will compute, and whether a completed run computed it."""

from typing import NamedTuple

from kfp.dsl import Artifact, Output


def resolve(seed: int, device: str, precision: str, data: dict, model: dict, prior: dict,
            train: dict, evaluate: dict, extract: dict, tracking: dict, kfp_run: str,
            decision: Output[Artifact]
            ) -> NamedTuple("Resolved", [("data", dict), ("key", str), ("changed", bool),
                                         ("modalities", list)]):
    """Pin the data reference to its commit, key the run by code, params and data, and train
    only when no completed run has that key. Never served from Kubeflow's cache."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from drcl.kfp.artifacts import task_layout, task_params
    from drcl.kfp.tracking import open_pipeline_run, resolve_run

    params = task_params(task_layout(decision.path), seed=seed, device=device,
                         precision=precision, data=data, model=model, prior=prior, train=train,
                         evaluate=evaluate, extract=extract, tracking=tracking)
    resolved = resolve_run(params)
    if resolved.changed:
        open_pipeline_run(params, resolved.key, kfp_run, source=resolved.source)
        print(f"drcl: data {resolved.source or resolved.data['source']}; training")
    else:
        print(f"drcl: nothing changed since MLflow run {resolved.done_by} (same code, params "
              "and data): no training")
    Path(decision.path, "decision.json").write_text(json.dumps(
        {"key": resolved.key, "changed": resolved.changed, "done_by": resolved.done_by,
         "source": resolved.source}, indent=2))
    out = namedtuple("Resolved", ["data", "key", "changed", "modalities"])
    return out(resolved.data, resolved.key, resolved.changed, params.data.modalities or [])
