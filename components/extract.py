"""Feature extraction: the `drcl extract` step as a keyed task."""

from typing import NamedTuple


def extract(task: dict, store: str) -> NamedTuple("Extracted", [("features", dict),
                                                               ("report", dict)]):
    """Embed the raw items listed in extract.manifest (reused when no item changed)."""
    from collections import namedtuple

    from drcl.kfp import task_steps
    from drcl.kfp.store import Store

    done = task_steps.extract(Store(store), task)
    return namedtuple("Extracted", ["features", "report"])(done.outputs, done.report)
