"""Evaluation on the collected encoders: the `drcl evaluate` stage as a component."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def evaluate(dataset: Input[Dataset], encoders: Input[list[Model]], device: str, precision: str,
             evaluate: dict, tracking: dict, run_key: str, evaluation: Output[Artifact],
             metrics: Output[Metrics], summary: Output[Markdown]):
    """MAP@all and MAP@k of every ordered pair of modalities on the test split. The evaluation
    artifact keeps the encoders it measured, for promotion."""
    from drcl.atomic import write_text
    from drcl.data.dataset import load_manifest
    from drcl.kfp.artifacts import (
        flat_metrics,
        gather_encoders,
        map_table,
        task_layout,
        task_params,
    )
    from drcl.stages.evaluate import evaluate_encoders

    layout = task_layout(evaluation.path, dataset=dataset.path)
    gather_encoders([e.path for e in encoders], layout)
    params = task_params(layout, device=device, precision=precision, evaluate=evaluate,
                         tracking=tracking)
    manifest = load_manifest(layout.data)
    report = evaluate_encoders(params, layout, run_key=run_key)
    for name, value in flat_metrics(report).items():
        metrics.log_metric(name, value)
    write_text(summary.path, map_table(report, list(manifest.modalities)))
