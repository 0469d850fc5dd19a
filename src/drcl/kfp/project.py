"""The pipeline as project files: pipelines/ and components/ sit beside params.yaml and dvc.yaml,
and `drcl pipeline` loads them from the project root, like DVC reads dvc.yaml."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

from kfp.dsl.graph_component import GraphComponent

from drcl.atomic import atomic_path
from drcl.config import Params
from drcl.errors import DrclError

PIPELINE_FILE = Path("pipelines") / "drcl_pipeline.py"
PIPELINE_MODULE = "pipelines.drcl_pipeline"
STAGE_GROUPS = ("seed", "device", "data", "model", "prior", "train", "evaluate", "extract",
                "tracking", "registry", "promotion")
"""The params.yaml groups the stages read; each is one pipeline parameter."""


def pipeline_arguments(params: Params) -> dict[str, Any]:
    """The run arguments (and the compiled pipeline's defaults), one per params.yaml group.

    Keys set to null are left out: kfp cannot carry a null inside a struct, and every optional
    key's default is null.
    """
    dumped = params.model_dump(mode="json", exclude_none=True)
    return {group: dumped[group] for group in STAGE_GROUPS}


def build_pipeline(params: Params, *, root: str | Path = ".") -> GraphComponent:
    """The DRCL pipeline defined in ``root``/pipelines, with ``params`` as its defaults."""
    root = Path(root).resolve()
    if not (root / PIPELINE_FILE).is_file():
        raise DrclError(f"{PIPELINE_FILE}: not found; run `drcl pipeline` from the project root")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(PIPELINE_MODULE)
    return module.build_pipeline(params)


def compile_pipeline(params: Params, output: str | Path, *, root: str | Path = ".") -> float:
    """Write the pipeline YAML atomically; return the seconds compiling took."""
    from kfp import compiler

    start = time.perf_counter()
    pipeline = build_pipeline(params, root=root)
    with atomic_path(output) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return time.perf_counter() - start
