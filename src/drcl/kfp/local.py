"""`drcl pipeline run --local`: the whole pipeline on this machine with kfp's SubprocessRunner.

Each task runs as a subprocess of this Python environment (use_venv=False, nothing installed),
so the installed drcl is what runs; kfp ignores the image and the cluster settings locally.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from drcl.config import Params
from drcl.errors import DrclError
from drcl.kfp.project import build_pipeline, pipeline_arguments
from drcl.report import mean_figures
from drcl.tracking import tracking_uri

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
EVALUATION = "evaluate/evaluation"
"""Where kfp.local puts the evaluate task's `evaluation` artifact, below the run's folder."""


@dataclass(frozen=True)
class LocalRun:
    """Where a local run's outputs are, and what it decided."""

    folder: Path
    decision: dict
    evaluation: Path | None
    outcome: dict | None

    def summary(self) -> list[str]:
        """What the run did, in a few lines: MAP, the gate's verdict, the registry."""
        if not self.decision["changed"]:
            return [f"nothing changed since MLflow run {self.decision['done_by']} (same code, "
                    f"params and data): no training; outputs in {self.folder}"]
        lines = []
        if self.evaluation is not None:
            report = json.loads((self.evaluation / "metrics" / "eval.json").read_text())
            lines.append("test " + ", ".join(
                f"{name.replace('map_all', 'MAP@all').replace('map_at_', 'MAP@')} {value:.4f}"
                for name, value in mean_figures(report).items()))
        if self.outcome is not None:
            lines.append(f"promotion: {_describe(self.outcome)}")
        source = self.decision.get("source")
        if source:
            lines.append(f"data: {source['repo']} {source['path']} at {source['commit'][:12]} "
                         f"(DVC {source['dvc_md5']})")
        lines.append(f"outputs in {self.folder}")
        return lines


def run_local(params: Params, *, pipeline_root: str | Path, root: str | Path = ".") -> LocalRun:
    """Run the pipeline with ``params``' values, each run in its own folder under
    ``pipeline_root``; the evaluation folder is laid out like the DVC workspace."""
    from kfp import local

    pipeline = build_pipeline(local_params(params, root=Path(root)))
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    run_root = Path(tempfile.mkdtemp(prefix="run-", dir=pipeline_root)).resolve()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_root),
               raise_on_error=True)
    logging.captureWarnings(True)
    # kfp warns, for every task, that it ignores the image and the cluster settings: known here
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    try:
        pipeline(**pipeline_arguments(params))
    except RuntimeError as exc:
        first = _ANSI.sub("", str(exc).splitlines()[0])
        raise DrclError(f"local pipeline run failed: {first} (its log is above)") from None
    (folder,) = [p for p in run_root.iterdir() if p.is_dir()]
    decision = json.loads(next(folder.glob("resolve/decision/decision.json")).read_text())
    evaluation = next(folder.glob(EVALUATION), None)
    promoted = next(folder.glob("promote/outcome/promotion.json"), None)
    return LocalRun(folder, decision, evaluation,
                    json.loads(promoted.read_text()) if promoted else None)


def _describe(outcome: dict) -> str:
    name = f"{outcome['set_model']} v{outcome['set_version']}"
    decision = outcome["decision"]
    if outcome["verdict"] == "challenger":
        return f"challenger: {name} not promoted: {'; '.join(decision['reasons'])}"
    if outcome["verdict"] == "unchanged":
        return f"unchanged: {name} is already the champion"
    gain = decision.get("gain")
    return (f"champion: {name}; mean MAP@all {decision['mean_map']:.4f} ({outcome['split']})"
            + (f", gain {gain:+.4f}" if gain is not None else ", the first champion"))


def local_params(params: Params, *, root: Path) -> Params:
    """The cluster's env (in-cluster endpoints) means nothing here: tasks get this machine's
    environment, and tracking and the registry use the store `drcl` and `dvc repro` use."""
    env = {}
    if "MLFLOW_TRACKING_URI" not in os.environ:
        env["MLFLOW_TRACKING_URI"] = tracking_uri(root)
    cluster = params.kubeflow.model_copy(update={"env": env, "secrets": []})
    return params.model_copy(update={"kubeflow": cluster})
