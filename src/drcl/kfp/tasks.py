"""What each Kubeflow task does around its step: key it, reuse it, or run it on fetched inputs.

A task's key is its step's key (drcl.steps): its view of the params, the digest of its code and
the content hashes of exactly the inputs it reads. Inputs arrive as hashes and are fetched from
the store (drcl.kfp.store) only when the task runs; outputs go back to the store and travel on
as hashes. A task whose key has a record in the store is reused without fetching anything, and
because every input a task takes is a content hash, Kubeflow's own cache reuses it too whenever
its upstream tasks produced the same bytes, whether they ran again or not.

A data set travels as one object per modality and split (`train`, `val`, `test`: the splits a
step reads, never the whole data set) plus its manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drcl.data.dataset import MANIFEST, SPLITS, load_manifest, source_file
from drcl.errors import DrclError
from drcl.kfp.artifacts import TaskLayout
from drcl.kfp.store import Store
from drcl.layout import Layout
from drcl.steps import BY_NAME

RUN_ENV = "KFP_RUN_ID"
"""The Kubeflow run a task belongs to: from the pod's `pipeline/runid` label on a cluster (set
as an environment variable, so it never enters Kubeflow's cache key), from the local runner
here."""
_SHARED = ("classes", "multi_label", "unseen_classes")
"""Arrays every split object of a modality carries, so that it stands alone."""


def current_run() -> str:
    return os.environ.get(RUN_ENV) or "unknown"


# ------------------------------------------------------------------ the data set by reference


def split_dataset(data_dir: Path, dest: Path) -> None:
    """Write a prepared data set as its manifest and one file per modality and split
    (`dest/manifest.json`, `dest/<modality>/<split>.npz`), each split file standing alone."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST).write_bytes((data_dir / MANIFEST).read_bytes())
    for modality in load_manifest(data_dir).modalities:
        with np.load(data_dir / f"{modality}.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        (dest / modality).mkdir()
        for split in SPLITS:
            part = {n: a for n, a in arrays.items()
                    if n in _SHARED or n.split(".", 1)[0] == split}
            with (dest / modality / f"{split}.npz").open("wb") as fh:
                # numpy's npz bytes depend on the arrays and their order only
                np.savez(fh, **dict(sorted(part.items())))


def dataset_ref(outputs: Mapping[str, str], modalities: Sequence[str]) -> dict[str, Any]:
    """The reference to a data set stored by `split_dataset`:
    {"manifest": sha, "modalities": {m: {split: sha}}}."""
    return {"manifest": outputs[MANIFEST],
            "modalities": {m: {s: outputs[f"{m}/{s}.npz"] for s in SPLITS} for m in modalities}}


def dataset_inputs(ref: Mapping[str, Any], splits: Sequence[str],
                   modalities: Iterable[str] | None = None) -> dict[str, str]:
    """The hashes a step reads from a data set: its manifest and the given splits."""
    names = list(modalities) if modalities is not None else list(ref["modalities"])
    out = {"manifest": ref["manifest"]}
    for m in names:
        out |= {f"{m}.{s}": ref["modalities"][m][s] for s in splits}
    return out


def fetch_dataset(store: Store, ref: Mapping[str, Any], splits: Sequence[str], layout: Layout,
                  *, modalities: Iterable[str] | None = None, with_manifest: bool = True,
                  source: Mapping[str, Any] | None = None) -> None:
    """The manifest and `splits` of each modality, as `<modality>.npz` files in
    `layout.data` (each holding only those splits); `source` is written beside them."""
    layout.data.mkdir(parents=True, exist_ok=True)
    if with_manifest:
        store.get(ref["manifest"], layout.data / MANIFEST)
    if source is not None:
        source_file(layout.data).write_text(json.dumps(dict(source)))
    names = list(modalities) if modalities is not None else list(ref["modalities"])
    for modality in names:
        arrays: dict[str, np.ndarray] = {}
        for split in splits:
            part = store.get(ref["modalities"][modality][split],
                             layout.data / f".{modality}.{split}.npz")
            with np.load(part, allow_pickle=False) as npz:
                arrays |= {name: npz[name] for name in npz.files}
            part.unlink()
        with (layout.data / f"{modality}.npz").open("wb") as fh:
            np.savez(fh, **arrays)


# ------------------------------------------------------------------ a keyed task


@dataclass(frozen=True)
class Done:
    """A task's outputs (path -> hash) and its report: ran here, or reused from which run."""

    outputs: dict[str, str]
    report: dict[str, Any]

    def sha(self, path: str | Path) -> str:
        return self.outputs[Path(path).as_posix()]


def run_keyed(store: Store, step_name: str, *, task: str, view: Mapping[str, Any], code: str,
              inputs: Mapping[str, str], work: Callable[[Path, Path], None],
              modality: str | None = None, member: int | None = None) -> Done:
    """Reuse the completed task with this key, or run `work(inputs_dir, outputs_dir)` and
    store every file it wrote under `outputs_dir`, then the task's record."""
    step = BY_NAME[step_name]
    key = step.key(view, inputs, code=code, modality=modality, member=member)
    report = {"task": task, "step": step_name, "key": key, "inputs": dict(inputs)}
    start = time.perf_counter()
    found = store.record(step_name, key)
    if found is not None:
        print(f"drcl: {task}: reused from run {found['run']} (key {key[:12]}, same params, code "
              "and inputs)")
        return Done(found["outputs"], report | {
            "run": found["run"], "mlflow_run": found.get("mlflow_run", ""), "reused": "store",
            "outputs": found["outputs"], "read": store.read, "written": store.written,
            "seconds": round(time.perf_counter() - start, 3)})
    with tempfile.TemporaryDirectory(prefix="drcl-task-") as scratch:
        given, made = Path(scratch, "in"), Path(scratch, "out")
        given.mkdir()
        made.mkdir()
        work(given, made)
        outputs = {p.relative_to(made).as_posix(): store.put(p)
                   for p in sorted(made.rglob("*")) if p.is_file()}
    record = {"step": step_name, "task": task, "key": key, "run": current_run(),
              "mlflow_run": os.environ.get("DRCL_PIPELINE_RUN_ID", ""),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "params": dict(view), "code": code, "inputs": dict(inputs), "outputs": outputs}
    store.save_record(step_name, key, record)
    return Done(outputs, report | {
        "run": record["run"], "mlflow_run": record["mlflow_run"], "reused": "",
        "outputs": outputs, "read": store.read, "written": store.written,
        "seconds": round(time.perf_counter() - start, 3)})


def content_digest(path: Path) -> str:
    """sha256 over a file, or over a folder's files by relative path and content: the identity
    of data a task reads from outside the store (a file in the image or a volume)."""
    from drcl.kfp.store import sha256_file

    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise DrclError(f"data.path: {path} does not exist where this task runs")
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\0".encode())
    return digest.hexdigest()


def task_layout(given: Path, made: Path, *, prior: Path | None = None,
                encoders: Mapping[str, Path] | None = None) -> TaskLayout:
    """A layout that reads the fetched inputs in `given` and writes outputs into `made`."""
    return TaskLayout(root=given, outputs=made, verify_data=False, prior_file=prior,
                      encoder_files=dict(encoders or {}))
