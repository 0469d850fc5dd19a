"""Evaluation of the collected encoders: the `drcl evaluate` step as a keyed task."""

from typing import NamedTuple

from kfp.dsl import Markdown, Metrics, Output


def evaluate(task: dict, dataset: dict, encoders: list, store: str, tracking: dict,
             metrics: Output[Metrics], summary: Output[Markdown]
             ) -> NamedTuple("Evaluated", [("evaluation", dict), ("report", dict)]):
    """MAP@all and MAP@k of every ordered pair of modalities, on the test splits only."""
    import json
    from collections import namedtuple

    from drcl.atomic import write_text
    from drcl.kfp import task_steps
    from drcl.kfp.artifacts import flat_metrics, map_table
    from drcl.kfp.store import Store

    done, report = task_steps.evaluate(Store(store), task, dataset=dataset, encoders=encoders,
                                       tracking=tracking)
    for name, value in flat_metrics(report).items():
        metrics.log_metric(name, value)
    write_text(metrics.path, json.dumps(report))  # a file, as kfp's cache expects
    write_text(summary.path, map_table(report, list(dataset["modalities"])))
    return namedtuple("Evaluated", ["evaluation", "report"])(report, done.report)
