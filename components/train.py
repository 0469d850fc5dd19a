"""RSC training of one modality: the `drcl train --modality M` step as a component."""

from kfp.dsl import Input, Metrics, Model, Output


def train(class_prior: Input[Model], modality: str, seed: int, device: str, precision: str,
          data: dict, model: dict, train: dict, tracking: dict, run_key: str,
          encoder: Output[Model], metrics: Output[Metrics]):
    """Train this modality's encoder against the frozen prior. The task fetches its own
    modality's file from the prepared data set (whose address the prior artifact carries) and
    nothing else."""
    import tempfile
    from pathlib import Path

    from drcl.kfp.artifacts import fetch_modality, task_layout, task_params
    from drcl.stages.train import train_modality

    with tempfile.TemporaryDirectory() as scratch:
        mine = fetch_modality(class_prior.metadata["dataset_uri"], modality, Path(scratch))
        layout = task_layout(encoder.path, dataset=mine.root, prior=class_prior.path)
        params = task_params(layout, seed=seed, device=device, precision=precision, data=data,
                             model=model, train=train, tracking=tracking)
        result = train_modality(params, layout, modality=modality, run_key=run_key)
    encoder.metadata["modality"] = modality
    metrics.log_metric("best_epoch", result.best_epoch)
    metrics.log_metric("best_val_loss", result.best_val_loss)
