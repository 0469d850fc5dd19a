"""Feature extraction: the `drcl extract` stage as a component."""

from kfp.dsl import Dataset, Output


def extract(seed: int, device: str, precision: str, data: dict, extract: dict,
            features: Output[Dataset]):
    """Embed the raw items listed in extract.manifest into a feature data set for prepare."""
    from drcl.extract.step import extract_dataset
    from drcl.kfp.artifacts import extracted_dir, task_layout, task_params

    layout = task_layout(features.path)
    params = task_params(layout, seed=seed, device=device, precision=precision, data=data,
                         extract=extract)
    report = extract_dataset(params, out_dir=extracted_dir(layout))
    features.metadata.update(name=report.name or "", embedded=report.embedded,
                             cached=report.cached, skipped=len(report.skipped))
