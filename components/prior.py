"""SPL prior selection: the `drcl prior` step as a component."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def prior(dataset: Input[Dataset], seed: int, device: str, precision: str, model: dict,
          prior: dict, train: dict, tracking: dict, run_key: str, class_prior: Output[Model],
          scores: Output[Metrics]):
    """Learn the class prior W on every modality and keep the best (or the orthogonal baseline)."""
    from drcl.kfp.artifacts import task_layout, task_params
    from drcl.stages.prior import fit_prior

    layout = task_layout(class_prior.path, dataset=dataset.path)
    params = task_params(layout, seed=seed, device=device, precision=precision, model=model,
                         prior=prior, train=train, tracking=tracking)
    result = fit_prior(params, layout, run_key=run_key)
    # the training tasks read the data set's address here, then fetch their own modality
    class_prior.metadata.update(method=result.method, chosen=result.chosen or "",
                                dataset_uri=dataset.uri)
    for modality, score in result.summary()["scores"].items():
        scores.log_metric(f"spl_score.{modality}", score)
