"""How a Kubeflow task maps its artifacts onto the paths drcl's stages read and write.

Every DRCL output artifact is a folder laid out like the DVC workspace (drcl.layout) plus the
params.yaml it was made with, so a stage function runs unchanged inside a task: it writes under
its own output artifact and reads the upstream artifacts where kfp placed them.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drcl.atomic import write_text
from drcl.config import Params, parse_params
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.report import flatten, tables

PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class TaskLayout(Layout):
    """A Layout rooted at the task's output artifact whose inputs point at upstream artifacts."""

    data_dir: Path | None = None
    prior_file: Path | None = None
    encoder_files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.data_dir if self.data_dir is not None else super().data

    @property
    def prior(self) -> Path:
        return self.prior_file if self.prior_file is not None else super().prior

    @property
    def posteriors(self) -> Path:  # beside the prior, in the prior task's artifact
        return self.prior.with_name("posteriors.npz")

    def encoder(self, modality: str) -> Path:
        return self.encoder_files.get(modality) or super().encoder(modality)


def task_layout(output: str | Path, *, dataset: str | Path | None = None,
                prior: str | Path | None = None, encoders: Sequence[str | Path] = ()) -> TaskLayout:
    """The layout of a task writing into ``output``; the other arguments are input artifacts."""
    return TaskLayout(
        root=Path(output),
        data_dir=Layout(Path(dataset)).data if dataset is not None else None,
        prior_file=Layout(Path(prior)).prior if prior is not None else None,
        encoder_files=_encoder_files(encoders),
    )


def _encoder_files(roots: Sequence[str | Path]) -> dict[str, Path]:
    """The encoders in these artifacts (a training task's holds one), keyed by modality."""
    files: dict[str, Path] = {}
    for root in roots:
        folder = Layout(Path(root)).encoder("any").parent  # models/encoders
        found = sorted(folder.glob("*.safetensors"))
        if not found:
            raise DrclError(f"{root}: no encoder in this artifact")
        for file in found:
            if file.stem in files:
                raise DrclError(f"{file}: a second encoder for modality {file.stem!r}")
            files[file.stem] = file
    return files


def gather_encoders(roots: Sequence[str | Path], layout: Layout) -> list[str]:
    """Copy the training tasks' encoders into ``layout``; return their modalities.

    The evaluation artifact then holds the very set it measured, which promotion registers
    (and kfp 2.17 cannot hand a collected list of artifacts into a dsl.If branch).
    """
    files = _encoder_files(roots)
    for modality, file in files.items():
        target = layout.encoder(modality)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return list(files)


def extracted_dir(layout: Layout) -> Path:
    """Where the extract task writes inside its artifact: where `drcl extract` writes."""
    from drcl.extract import EXTRACTED_DIR

    return layout.root / EXTRACTED_DIR


def with_extracted(data: Mapping[str, Any], extracted: str | Path | None) -> dict[str, Any]:
    """The data group, pointed at the extract task's artifact when there is one."""
    if extracted is None:
        return dict(data)
    return {**data, "path": str(extracted_dir(Layout(Path(extracted))))}


def task_params(layout: Layout, **groups: Any) -> Params:
    """The params groups a step reads, validated; a copy goes into the task's output artifact,
    which so records the configuration it was made with (1024.0 from a kfp struct as 1024).
    Groups not given take their defaults."""
    params = parse_params(groups, source="pipeline arguments")
    resolved = params.model_dump(mode="json", include=set(groups))
    write_text(layout.root / PARAMS_FILE, yaml.safe_dump(resolved, sort_keys=False))
    return params


def flat_metrics(report: Mapping) -> dict[str, float]:
    """The evaluation report as ``table.direction`` names, for kfp's Metrics artifact."""
    return flatten(dict(report))


def map_table(report: Mapping, modalities: Sequence[str]) -> str:
    """A Markdown page with one query x database MAP matrix per table (per class set too, with
    classes held out), for the Kubeflow UI."""
    lines = ["# Cross-modal retrieval on the test split", ""]
    for table, values in tables(dict(report)).items():
        lines += [f"## {table} (mean {values['mean']:.4f})", "",
                  "| query \\ database | " + " | ".join(modalities) + " |",
                  "|---|" + "---|" * len(modalities)]
        for q in modalities:
            cells = ["" if q == d else f"{values[f'{q}->{d}']:.4f}" for d in modalities]
            lines.append(f"| {q} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def fetch_modality(dataset_uri: str, modality: str, dest: Path) -> Layout:
    """Copy one modality's file out of the prepared data set at `dataset_uri` (the prepare
    task's artifact: a local folder, or s3:// on a cluster) into a layout rooted at `dest`, so a
    training task reads its own modality's features and nothing else."""
    import fsspec

    uri = dataset_uri.replace("minio://", "s3://", 1)  # KFP's default store speaks S3
    source = f"{uri.rstrip('/')}/{Layout().data.as_posix()}/{modality}.npz"
    layout = Layout(dest)
    layout.data.mkdir(parents=True, exist_ok=True)
    try:
        with fsspec.open(source, "rb") as src, (layout.data / f"{modality}.npz").open("wb") as out:
            shutil.copyfileobj(src, out, length=1 << 22)
    except (OSError, ValueError) as exc:
        raise DrclError(f"{source}: cannot read the prepared features of {modality!r} "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None
    return layout
