"""Data import and validation: the `drcl prepare` step as a component."""

from kfp.dsl import Dataset, Input, Output


def prepare(seed: int, data: dict, dataset: Output[Dataset],
            extracted: Input[Dataset] = None) -> list[str]:
    """Import the configured source, validate and split it; return its modalities. With
    data.source `extracted`, the source is the upstream extract task's artifact."""
    from drcl.data.prepare import prepare_dataset
    from drcl.kfp.artifacts import task_layout, task_params, with_extracted

    layout = task_layout(dataset.path)
    data = with_extracted(data, extracted.path if extracted is not None else None)
    params = task_params(layout, seed=seed, data=data)
    manifest = prepare_dataset(params, out_dir=layout.data)
    dataset.metadata.update(name=manifest.name, classes=manifest.num_classes,
                            source=manifest.source or {})
    return list(manifest.modalities)
