"""`drcl pipeline run --local`: the whole pipeline on this machine with kfp's SubprocessRunner.

Each task runs as a subprocess of this Python environment (use_venv=False, nothing installed),
so the installed drcl is what runs; kfp ignores the image and the cluster settings locally.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from drcl.config import Params
from drcl.errors import DrclError
from drcl.kfp.project import build_pipeline, pipeline_arguments
from drcl.tracking import tracking_uri

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
EVALUATION = "evaluate/evaluation"
"""Where kfp.local puts the evaluate task's `evaluation` artifact, below the run's folder."""


def run_local(params: Params, *, pipeline_root: str | Path, root: str | Path = ".") -> Path:
    """Run the pipeline with ``params``' values; return the evaluation artifact's folder.

    Each run gets its own folder under ``pipeline_root``. The evaluation folder is laid out like
    the DVC workspace: metrics/eval.json, plots/pr/, plots/images/pr_curves.png.
    """
    from kfp import local

    pipeline = build_pipeline(local_params(params, root=Path(root)))
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    run_root = Path(tempfile.mkdtemp(prefix="run-", dir=pipeline_root)).resolve()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_root),
               raise_on_error=True)
    logging.captureWarnings(True)  # kfp warns that it ignores the image and GPU settings
    try:
        pipeline(**pipeline_arguments(params))
    except RuntimeError as exc:
        first = _ANSI.sub("", str(exc).splitlines()[0])
        raise DrclError(f"local pipeline run failed: {first} (its log is above)") from None
    return next(run_root.glob(f"*/{EVALUATION}"))


def local_params(params: Params, *, root: Path) -> Params:
    """The cluster's env (in-cluster endpoints) means nothing here: tasks get this machine's
    environment, and tracking and the registry use the store `drcl` and `dvc repro` use."""
    env = {}
    if "MLFLOW_TRACKING_URI" not in os.environ:
        env["MLFLOW_TRACKING_URI"] = tracking_uri(root)
    cluster = params.kubeflow.model_copy(update={"env": env, "secrets": []})
    return params.model_copy(update={"kubeflow": cluster})
