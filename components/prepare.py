"""Data import and validation: the `drcl prepare` step as a keyed task."""

from typing import NamedTuple, Optional


def prepare(task: dict, source: dict, store: str, train_tasks: dict,
            extracted: Optional[dict] = None  # noqa: UP045 (kfp reads Optional only)
            ) -> NamedTuple("Prepared", [("dataset", dict), ("fanout", list), ("report", dict)]):
    """Import, check and split the data set (reused when its content is unchanged); returns
    it by reference and one training task per modality (per member of a seed ensemble): its
    view and its own splits."""
    from collections import namedtuple

    from drcl.errors import DrclError
    from drcl.kfp import task_steps
    from drcl.kfp.store import Store

    done, dataset = task_steps.prepare(Store(store), task, source=source or None,
                                       extracted=extracted or {})
    missing = [m for m in dataset["modalities"] if m not in train_tasks]
    if missing:
        raise DrclError(f"data.modalities: the data set has {', '.join(missing)}, which the "
                        "run's arguments do not list")
    fanout = task_steps.fanout(dataset, train_tasks)
    return namedtuple("Prepared", ["dataset", "fanout", "report"])(dataset, fanout, done.report)
