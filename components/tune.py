"""One worker of the tuning search: the `drcl tune` step on the study it shares."""

from typing import NamedTuple


def tune(task: dict, dataset: dict, class_prior: dict, store: str, tracking: dict,
         worker: int) -> NamedTuple("Searched", [("result", dict)]):
    """Run trials of the study in `tune.storage` against the frozen prior, on the training and
    validation splits only, until the workers together have spent its budget. Never cached:
    the study in the database is what it reads and changes."""
    from collections import namedtuple

    from drcl.kfp import task_steps
    from drcl.kfp.store import Store

    result = task_steps.tune(Store(store), task, dataset=dataset, class_prior=class_prior,
                             tracking=tracking, worker=worker)
    return namedtuple("Searched", ["result"])(result)
