"""The tuning search's outcome: the params profile its workers found, for `drcl profile apply`."""

from typing import NamedTuple

from kfp.dsl import Artifact, Metrics, Output


def tune_result(task: dict, results: list, tracking: dict, best: Output[Artifact],
                trials: Output[Artifact], metrics: Output[Metrics]
                ) -> NamedTuple("Tuned", [("result", dict)]):
    """Write best.yaml (train.per_modality as found on validation) and trials.csv (every
    worker's trials), and close the study's MLflow run with both. Never cached."""
    import json
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from drcl.kfp import task_steps

    with tempfile.TemporaryDirectory(prefix="drcl-tune-") as scratch:
        result = task_steps.tune_result(task, results=results, tracking=tracking,
                                        folder=Path(scratch))
        shutil.copyfile(Path(scratch, "tune", "best.yaml"), best.path)
        shutil.copyfile(Path(scratch, "tune", "trials.csv"), trials.path)
    for name in ("baseline_map", "best_map"):
        if result[name] is not None:
            metrics.log_metric(f"val_{name}", result[name])
    with open(metrics.path, "w") as fh:
        json.dump(result, fh)
    return namedtuple("Tuned", ["result"])(result)
