"""How a Kubeflow task maps what it fetched onto the paths drcl's stages read and write.

A task fetches its inputs into a folder laid out like the DVC workspace (drcl.layout) and its
step writes its outputs into another, so a stage function runs unchanged inside a task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drcl.layout import Layout
from drcl.report import flatten, tables


@dataclass(frozen=True)
class TaskLayout(Layout):
    """A Layout whose prior and encoders may lie elsewhere than its own outputs."""

    prior_file: Path | None = None
    encoder_files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def prior(self) -> Path:
        return self.prior_file if self.prior_file is not None else super().prior

    @property
    def posteriors(self) -> Path:  # beside the prior, as the prior task wrote them
        return self.prior.with_name("posteriors.npz")

    def encoder(self, modality: str) -> Path:
        return self.encoder_files.get(modality) or super().encoder(modality)


def with_extracted(data: Mapping[str, Any], extracted: str | Path | None) -> dict[str, Any]:
    """The data group, pointed at the extracted features when there are any."""
    if extracted is None:
        return dict(data)
    return {**data, "path": str(extracted)}


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
