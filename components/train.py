"""RSC training of one modality: the `drcl train --modality M` step as a keyed task."""

from typing import NamedTuple

from kfp.dsl import Metrics, Output


def train(item: dict, class_prior: dict, store: str, tracking: dict, metrics: Output[Metrics]
          ) -> NamedTuple("Trained", [("encoder", dict), ("report", dict)]):
    """Train one modality's encoder (one member of its seed ensemble) against the frozen prior
    on its own training and validation splits, and nothing else (`item`: its modality, view,
    splits and member)."""
    import json
    from collections import namedtuple

    from drcl.kfp import task_steps
    from drcl.kfp.store import Store
    from drcl.layout import Layout

    store_ = Store(store)
    modality = item["modality"]
    done, encoder = task_steps.train(store_, item["task"], modality=modality, data=item["data"],
                                     class_prior=class_prior, tracking=tracking,
                                     member=item.get("member", 0),
                                     members=item.get("members", 1))
    result = json.loads(task_steps.fetch_text(store_,
                                               done.sha(Layout().train_metrics(modality))))
    metrics.log_metric("best_epoch", result["best_epoch"])
    metrics.log_metric("best_val_loss", result["best_val_loss"])
    with open(metrics.path, "w") as fh:  # the artifact has a file, as kfp's cache expects
        json.dump(result, fh)
    return namedtuple("Trained", ["encoder", "report"])(encoder, done.report)
