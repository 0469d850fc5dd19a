"""RSC training of one modality: the `drcl train --modality M` stage as a component."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train(dataset: Input[Dataset], class_prior: Input[Model], modality: str, seed: int,
          device: str, data: dict, model: dict, train: dict, tracking: dict, kfp_run: str,
          encoder: Output[Model], metrics: Output[Metrics]):
    """Train this modality's encoder against the frozen prior, from its own data only."""
    from drcl.kfp.artifacts import start_task, task_layout
    from drcl.stages.train import train_modality

    layout = task_layout(encoder.path, dataset=dataset.path, prior=class_prior.path)
    params = start_task(layout, kfp_run=kfp_run, seed=seed, device=device, data=data,
                        model=model, train=train, tracking=tracking)
    result = train_modality(params, layout, modality=modality)
    encoder.metadata["modality"] = modality
    metrics.log_metric("best_epoch", result.best_epoch)
    metrics.log_metric("best_val_loss", result.best_val_loss)
