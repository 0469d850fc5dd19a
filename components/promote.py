"""Promotion: the `drcl promote` step as a task (never reused: it changes the registry)."""

from kfp.dsl import Artifact, Output


def promote(task: dict, dataset: dict, class_prior: dict, encoders: list, source: dict,
            store: str, tracking: dict, outcome: Output[Artifact]) -> str:
    """Register the prior and the encoders as a set; it becomes champion if it clears the gate
    against the champions. Returns the verdict: champion, challenger or unchanged."""
    import json
    import tempfile
    from pathlib import Path

    from drcl.kfp import task_steps
    from drcl.kfp.store import Store

    store_ = Store(store)
    with tempfile.TemporaryDirectory() as scratch:
        result = task_steps.promote(store_, task, dataset=dataset, class_prior=class_prior,
                                    encoders=encoders, source=source or None,
                                    tracking=tracking, scratch=Path(scratch))
        record = json.loads((Path(scratch) / "promotion.json").read_text())
        record["store_read"] = store_.read  # what the task fetched (benchmarks/speed/task_io)
        Path(outcome.path).write_text(json.dumps(record, indent=2))
    outcome.metadata.update(verdict=result.verdict, set_version=result.set_version)
    return result.verdict
