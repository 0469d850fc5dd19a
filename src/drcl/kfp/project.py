"""The pipeline, compiled: pipelines/ and components/ sit beside params.yaml and dvc.yaml in the
repository and install with drcl as drcl.pipelines and drcl.components."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kfp.dsl.graph_component import GraphComponent

from drcl.atomic import atomic_path
from drcl.config import Params

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


def build_pipeline(params: Params) -> GraphComponent:
    """The DRCL pipeline (pipelines/drcl_pipeline.py) with ``params`` as its defaults."""
    from drcl.pipelines.drcl_pipeline import build_pipeline as build

    return build(params)


def compile_pipeline(params: Params, output: str | Path) -> float:
    """Write the pipeline YAML atomically; return the seconds compiling took."""
    from kfp import compiler

    start = time.perf_counter()
    pipeline = build_pipeline(params)
    with atomic_path(output) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return time.perf_counter() - start
