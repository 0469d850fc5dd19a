"""SPL prior selection: the `drcl prior` step as a keyed task."""

from typing import NamedTuple

from kfp.dsl import Metrics, Output


def prior(task: dict, dataset: dict, store: str, tracking: dict, scores: Output[Metrics]
          ) -> NamedTuple("Fitted", [("class_prior", dict), ("report", dict)]):
    """Learn the class prior W on every modality's training split and keep the best (or take
    the orthogonal or semantic prior); reads the training and validation splits only."""
    import json
    from collections import namedtuple

    from drcl.kfp import task_steps
    from drcl.kfp.store import Store
    from drcl.layout import Layout

    store_ = Store(store)
    done, class_prior = task_steps.prior(store_, task, dataset=dataset, tracking=tracking)
    summary = json.loads(task_steps.fetch_text(store_, done.sha(Layout().prior_metrics)))
    for modality, score in (summary.get("scores") or {}).items():
        scores.log_metric(f"spl_score.{modality}", score)
    with open(scores.path, "w") as fh:  # the artifact has a file, as kfp's cache expects
        json.dump(summary, fh)
    return namedtuple("Fitted", ["class_prior", "report"])(class_prior, done.report)
