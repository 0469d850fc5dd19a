"""The pipeline, compiled: pipelines/ and components/ sit beside params.yaml and dvc.yaml in the
repository and install with drcl as drcl.pipelines and drcl.components."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from kfp.dsl.graph_component import GraphComponent

from drcl.atomic import atomic_path
from drcl.config import KubeflowParams, Params
from drcl.errors import DrclError

STAGE_GROUPS = ("seed", "device", "precision", "data", "model", "prior", "train", "evaluate",
                "extract", "tracking", "registry", "promotion")
"""The params.yaml groups the stages read; each is one pipeline parameter."""


def pipeline_arguments(params: Params, *, tuning: bool = False) -> dict[str, Any]:
    """The run arguments (and the compiled pipeline's defaults), one per params.yaml group;
    the tuning pipeline takes the `tune` group too.

    Keys set to null are left out: kfp cannot carry a null inside a struct, and every optional
    key's default is null.
    """
    dumped = params.model_dump(mode="json", exclude_none=True)
    return {group: dumped[group] for group in STAGE_GROUPS + (("tune",) if tuning else ())}


def store_uri(cluster: KubeflowParams) -> str:
    """kubeflow.store, else a folder of the pipeline root."""
    if cluster.store:
        return cluster.store
    if cluster.pipeline_root:
        return f"{cluster.pipeline_root.rstrip('/')}/drcl-store"
    raise DrclError("kubeflow.store: tasks hand each other their outputs through a store (e.g. "
                    "s3://drcl-artifacts/drcl-store); set it, or kubeflow.pipeline_root")


def build_pipeline(params: Params, *, tuning: bool = False) -> GraphComponent:
    """The DRCL pipeline (pipelines/drcl_pipeline.py), or with `tuning` the tuning pipeline
    (pipelines/tune_pipeline.py), with ``params`` as its defaults."""
    if not params.data.modalities:
        raise DrclError("data.modalities: the pipeline trains one task per entry of this list; "
                        "name the modalities to train")
    if tuning:
        from drcl.pipelines.tune_pipeline import build_tune_pipeline

        return build_tune_pipeline(params)
    from drcl.pipelines.drcl_pipeline import build_pipeline as build

    return build(params)


def check_cluster_study(params: Params) -> None:
    """The tuning pipeline's workers run in separate pods: they share a study only through a
    database they all reach."""
    storage = params.tune.storage
    if storage is None or storage.startswith("sqlite"):
        raise DrclError(f"tune.storage: {storage or 'null (sqlite in tune/)'} is a file one "
                        "pod sees; the tuning pipeline's workers share one study through a "
                        "database they all reach, e.g. postgresql://drcl@db.example/optuna "
                        "(README, \"Tuning on validation\")")


def check_cluster_data(params: Params) -> None:
    """Refuse data a cluster's tasks cannot read: a path relative to this machine's working
    copy. Data reaches a cluster through DVC (data.dvc), or from an absolute path inside the
    task's container (the image or a volume)."""
    data, extract = params.data, params.extract
    if data.dvc is not None and _on_this_machine(data.dvc.repo):
        raise DrclError(f"data.dvc.repo: {data.dvc.repo!r} is a repository on this machine, "
                        "which a cluster's tasks cannot clone; push it to a git server the "
                        "cluster reaches (https://, ssh://, git://, git@host:path)")
    if data.path is not None and data.dvc is None and not data.path.is_absolute() \
            and data.source != "extracted":
        raise DrclError(f"data.path: {str(data.path)!r} is a file on this machine, which a "
                        "cluster's tasks cannot read; version it with DVC, push it, and set "
                        "data.dvc: {repo, rev} (or give an absolute path inside the image)")
    if data.source == "extracted" and extract.manifest is not None \
            and not extract.manifest.is_absolute():
        raise DrclError(f"extract.manifest: {str(extract.manifest)!r} is a file on this "
                        "machine, which a cluster's tasks cannot read; give an absolute path "
                        "inside the image or a mounted volume")


def _on_this_machine(repo: str) -> bool:
    """A file: URL or a path (anything without a scheme that is not scp's host:path form)."""
    if repo.startswith("file:"):
        return True
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", repo):
        return False
    return not re.match(r"^[^/:\s]+:[^/]", repo) or Path(repo).exists()


def compile_pipeline(params: Params, output: str | Path, *, tuning: bool = False) -> float:
    """Write the pipeline YAML (with `tuning`, the tuning pipeline's) for a cluster atomically;
    return the seconds compiling took."""
    from kfp import compiler

    check_cluster_data(params)
    if tuning:
        check_cluster_study(params)
    start = time.perf_counter()
    pipeline = build_pipeline(params, tuning=tuning)
    with atomic_path(output) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return time.perf_counter() - start
