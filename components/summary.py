"""The run's account of itself: per task, ran here or reused from which earlier run."""

from typing import Optional

from kfp.dsl import Artifact, Input, Markdown, Output


def summary(kfp_run: str, source: dict, prepared: dict, prior: dict, trained: list,
            evaluated: dict, outcome: Input[Artifact], tracking: dict,
            report: Output[Artifact], page: Output[Markdown],
            extracted: Optional[dict] = None):  # noqa: UP045 (kfp reads Optional only)
    """Write the run's summary (summary.json, and a page for the Kubeflow UI) and tag the
    MLflow parent run with where each task's outputs came from. Never cached."""
    import os

    from drcl.kfp.summary import write_summary
    from drcl.kfp.tasks import RUN_ENV

    run = os.environ.get(RUN_ENV) or kfp_run
    tasks = [t for t in (extracted, prepared, prior, *trained, evaluated) if t]
    write_summary(run, tasks=tasks, source=source or None, outcome=outcome.path,
                  tracking=tracking, json_path=report.path, page_path=page.path)
