"""`drcl pipeline run --local`: the whole pipeline on this machine with kfp's SubprocessRunner,
making the cluster's decisions: Kubeflow's cache (kfp's local cache, keyed the same way) and the
store's records say which tasks run and which are reused, run after run.

Each task runs as a subprocess of this Python environment (use_venv=False, nothing installed),
so the installed drcl is what runs; kfp ignores the image and the cluster settings locally.
Under the pipeline root: `store/` (the tasks' outputs and records, as on a cluster),
`kfp-cache/` (kfp's cache entries) and one folder per run with its log (`kfp.log`) and its
outputs laid out like the DVC workspace (`outputs/`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from drcl.atomic import write_text
from drcl.config import Params
from drcl.errors import DrclError
from drcl.kfp.project import build_pipeline, pipeline_arguments
from drcl.kfp.store import Store
from drcl.kfp.tasks import RUN_ENV
from drcl.report import mean_figures
from drcl.tracking import tracking_uri

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR = re.compile(r"(?:drcl\.errors\.)?DrclError: (.+)$")
LOG = "kfp.log"


@dataclass(frozen=True)
class LocalRun:
    """Where a local run's outputs are, and what it did."""

    folder: Path
    summary: dict

    @property
    def outputs(self) -> Path:
        return self.folder / "outputs"

    def lines(self) -> list[str]:
        """What the run did, in a few lines: the data, each task, MAP, promotion."""
        lines = []
        source = self.summary.get("source")
        if source:
            lines.append(f"data: {source['repo']} {source['path']} at {source['commit'][:12]} "
                         f"(DVC {source['dvc_md5']})")
        width = max(len(t["task"]) for t in self.summary["tasks"])
        lines += [f"{t['task']:<{width}}  {t['status']}" for t in self.summary["tasks"]]
        report = self.outputs / "metrics" / "eval.json"
        if report.is_file():
            lines.append("test " + ", ".join(
                f"{_figure_name(name)} {value:.4f}"
                for name, value in mean_figures(json.loads(report.read_text())).items()))
        if self.summary.get("outcome"):
            lines.append(f"promotion: {_describe(self.summary['outcome'])}")
        trained = [t["task"] for t in self.summary["tasks"]
                   if t["ran"] and t["task"].startswith(("train@", "prior", "extract"))]
        lines.append(f"computed: {', '.join(trained)}" if trained else
                     "nothing changed: every task reused from earlier runs, no training")
        lines.append(f"outputs in {self.outputs}")
        return lines


def _figure_name(name: str) -> str:
    """eval.json's `reranked.map_at_50` as `re-ranked MAP@50`."""
    return (name.replace("map_all", "MAP@all").replace("map_at_", "MAP@")
            .replace("reranked.", "re-ranked "))


@dataclass(frozen=True)
class LocalTuneRun:
    """Where a local tuning run left best.yaml and trials.csv, and what it found."""

    folder: Path
    result: dict
    best: Path

    def lines(self) -> list[str]:
        before, after = self.result["baseline_map"], self.result["best_map"]
        return [f"validation MAP@all {after:.4f} (before: "
                + ("n/a" if before is None else f"{before:.4f}") + ")",
                f"trials: {self.result['trials']}, by {self.result['workers']} worker(s), "
                f"each in {self.best.with_name('trials.csv')}",
                f"apply with `drcl profile apply {self.best}`, then `drcl pipeline run "
                "--local` or `dvc repro`",
                f"outputs in {self.folder / 'outputs'}"]


def run_local(params: Params, *, pipeline_root: str | Path, root: str | Path = ".") -> LocalRun:
    """Run the pipeline with ``params``' values in a folder of its own under ``pipeline_root``,
    whose store and kfp cache every local run shares."""
    folder = _run(params, pipeline_root=pipeline_root, root=root, tuning=False)
    found = sorted(folder.glob("kfp/*/summary/report/summary.json"))
    if not found:
        raise DrclError(f"local pipeline run {folder.name} left no summary (log: "
                        f"{folder / LOG})")
    summary = json.loads(found[-1].read_text())
    materialize(Store(folder.parent / "store"), summary, folder / "outputs")
    return LocalRun(folder, summary)


def run_local_tuning(params: Params, *, pipeline_root: str | Path, root: str | Path = "."
                     ) -> LocalTuneRun:
    """Run the tuning pipeline here, its workers one after another on one study: with
    `tune.storage` null, sqlite beside the runs (`tune-study.db`), which later local tuning
    runs resume. best.yaml and trials.csv land in the run's outputs/tune/ and, as `drcl tune`
    leaves them, in `root`/tune/."""
    base = Path(pipeline_root).resolve()
    if params.tune.storage is None:
        base.mkdir(parents=True, exist_ok=True)
        params = params.model_copy(update={"tune": params.tune.model_copy(
            update={"storage": f"sqlite:///{base / 'tune-study.db'}"})})
    folder = _run(params, pipeline_root=base, root=root, tuning=True)
    made = folder / "outputs" / "tune"
    made.mkdir(parents=True)
    for name, file in (("best", "best.yaml"), ("trials", "trials.csv")):
        found = sorted(folder.glob(f"kfp/*/tune-result/{name}"))
        if not found:
            raise DrclError(f"local tuning run {folder.name} left no {file} (log: "
                            f"{folder / LOG})")
        shutil.copyfile(found[-1], made / file)
    project = Path(root) / "tune"
    project.mkdir(exist_ok=True)
    for file in ("trials.csv", "best.yaml"):
        write_text(project / file, (made / file).read_text())
    result = json.loads(sorted(folder.glob("kfp/*/tune-result/metrics"))[-1].read_text())
    return LocalTuneRun(folder, result | {"workers": params.tune.workers},
                        project / "best.yaml")


def _run(params: Params, *, pipeline_root: str | Path, root: str | Path, tuning: bool) -> Path:
    """One local run of a pipeline in a new folder under ``pipeline_root``; that folder."""
    from kfp import local

    base = Path(pipeline_root).resolve()
    base.mkdir(parents=True, exist_ok=True)
    run_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    folder = base / run_id
    folder.mkdir()
    pipeline = build_pipeline(local_params(params, root=Path(root), store=base / "store"),
                              tuning=tuning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(folder / "kfp"),
               raise_on_error=True, enable_caching=True, cache_root=str(base / "kfp-cache"))
    logging.captureWarnings(True)
    # kfp warns, for every task, that it ignores the image and the cluster settings: known here
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    log = folder / LOG
    try:
        with _environment(RUN_ENV, run_id), _output_to(log):
            pipeline(**pipeline_arguments(params, tuning=tuning))
    except Exception as exc:  # noqa: BLE001 - kfp's runner raises many kinds for a failed run
        reason = _task_error(log) or _ANSI.sub("", (str(exc).splitlines() or [repr(exc)])[0])
        raise DrclError(f"local pipeline run {run_id} failed: {reason} (log: {log})") from None
    return folder


def materialize(store: Store, summary: dict, dest: Path) -> None:
    """The run's outputs (prior, encoders, metrics, plots), fetched from the store into a
    folder laid out like the DVC workspace; the data set stays in the store. A seed
    ensemble's members (tasks `train@M#J`) are packed into M's one encoder file, as `drcl
    train` writes it, beside member 0's curves and metrics."""
    from drcl.layout import Layout
    from drcl.model import pack_ensemble

    members: dict[str, dict[int, str]] = {}
    for task in summary["tasks"]:
        if task["task"] in ("prepare", "extract"):
            continue
        name, _, member = task["task"].partition("#")
        for path, sha in task["outputs"].items():
            modality = name.removeprefix("train@")
            if member and path == Layout(Path(".")).encoder(modality).as_posix():
                members.setdefault(modality, {})[int(member)] = sha
            elif member in ("", "0"):
                store.get(sha, dest / path)
    for modality, shas in members.items():
        parts = [store.get(sha, dest / ".members" / f"{modality}.{j}.safetensors")
                 for j, sha in sorted(shas.items())]
        pack_ensemble(parts, Layout(dest).encoder(modality))
    shutil.rmtree(dest / ".members", ignore_errors=True)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """The run's id for every task (what a pod's label gives it on a cluster)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """kfp's log and every task's output into `log` (a local run prints only its summary)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    handlers = logging.getLogger().handlers[:]
    with log.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            logging.getLogger().handlers[:] = handlers


def _task_error(log: Path) -> str | None:
    """The one-line reason a task gave (drcl's error), if the log has one."""
    if not log.is_file():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        found = _ERROR.search(_ANSI.sub("", line).strip())
        if found:
            return found.group(1)
    return None


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


def local_params(params: Params, *, root: Path, store: Path) -> Params:
    """The cluster's env (in-cluster endpoints) means nothing here: tasks get this machine's
    environment, tracking and the registry use the store `drcl` and `dvc repro` use, and the
    tasks' store is a folder beside the runs."""
    env = {}
    if "MLFLOW_TRACKING_URI" not in os.environ:
        env["MLFLOW_TRACKING_URI"] = tracking_uri(root)
    # one training task at a time: each uses every core (torch's threads), and several at
    # once on one machine only contend (6 at once took 2.4x as long as one after another)
    cluster = params.kubeflow.model_copy(update={"env": env, "secrets": [], "parallelism": 1,
                                                 "store": str(store)})
    return params.model_copy(update={"kubeflow": cluster})
