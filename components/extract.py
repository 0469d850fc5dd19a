"""Feature extraction: the `drcl extract` stage as a component."""

from kfp.dsl import Dataset, Output


def extract(seed: int, device: str, data: dict, extract: dict, features: Output[Dataset]):
    """Embed the raw items listed in extract.manifest into a feature data set for prepare."""
    from drcl.config import load_params
    from drcl.extract.step import extract_dataset
    from drcl.kfp.artifacts import extracted_dir, save_params, task_layout

    layout = task_layout(features.path)
    params = load_params(save_params(layout, seed=seed, device=device, data=data,
                                     extract=extract))
    report = extract_dataset(params.extract, seed=params.seed, split=params.data.split,
                             device=params.device, out_dir=extracted_dir(layout))
    features.metadata.update(name=report.name or "", embedded=report.embedded,
                             cached=report.cached, skipped=len(report.skipped))
