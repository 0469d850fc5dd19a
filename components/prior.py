"""SPL prior selection: the `drcl prior` stage as a component."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def prior(dataset: Input[Dataset], seed: int, device: str, model: dict, prior: dict, train: dict,
          tracking: dict, kfp_run: str, class_prior: Output[Model], scores: Output[Metrics]):
    """Learn the class prior W on every modality and keep the best (or the orthogonal baseline)."""
    from drcl.kfp.artifacts import start_task, task_layout
    from drcl.stages.prior import fit_prior

    layout = task_layout(class_prior.path, dataset=dataset.path)
    params = start_task(layout, kfp_run=kfp_run, seed=seed, device=device, model=model,
                        prior=prior, train=train, tracking=tracking)
    result = fit_prior(params, layout)
    class_prior.metadata.update(method=result.method, chosen=result.chosen or "")
    for modality, score in result.summary()["scores"].items():
        scores.log_metric(f"spl_score.{modality}", score)
