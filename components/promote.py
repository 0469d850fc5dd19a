"""Promotion: the `drcl promote` step as a component."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def promote(dataset: Input[Dataset], class_prior: Input[Model], evaluation: Input[Artifact],
            device: str, precision: str, data: dict, evaluate: dict, extract: dict,
            tracking: dict, registry: dict, promotion: dict, run_key: str,
            outcome: Output[Artifact]) -> str:
    """Register the prior and the evaluated encoders as a set; it becomes champion if it beats
    the champions. Returns the verdict: champion, challenger or unchanged."""
    from drcl.kfp.artifacts import task_layout, task_params
    from drcl.promotion import promote

    layout = task_layout(outcome.path, dataset=dataset.path, prior=class_prior.path,
                         encoders=[evaluation.path])
    params = task_params(layout, device=device, precision=precision, data=data,
                         evaluate=evaluate, extract=extract, tracking=tracking,
                         registry=registry, promotion=promotion)
    result = promote(params, layout, report=layout.root / "promotion.json", run_key=run_key)
    outcome.metadata.update(verdict=result.verdict, set_version=result.set_version)
    return result.verdict
