"""The pipeline's steps as keyed tasks: what each reads, how it is keyed, what it hands on.

Each function here is what one Kubeflow component does (components/ are thin shells around
them): it keys the task by its view, code and the content hashes it reads, reuses a completed
task with that key or fetches exactly those inputs and calls the step's library function (the
one `drcl COMMAND` and the DVC stage call), and returns content hashes for the next tasks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drcl.kfp.plan import params_of
from drcl.kfp.store import Store
from drcl.kfp.tasks import (
    Done,
    content_digest,
    current_run,
    dataset_inputs,
    dataset_ref,
    fetch_dataset,
    run_keyed,
    split_dataset,
    task_layout,
)
from drcl.layout import Layout

TRAINING_SPLITS = ("train", "val")


def _join(tracking: Mapping[str, Any]) -> None:
    """Log this task's stage run under its Kubeflow run's parent run."""
    from drcl.kfp.tracking import join_pipeline_run

    params = params_of({"params": {}}, tracking=dict(tracking))
    if params.tracking.enabled:
        join_pipeline_run(params, current_run())


def _end(tracking: Mapping[str, Any], state: str) -> None:
    from drcl.kfp.tracking import end_pipeline_run

    params = params_of({"params": {}}, tracking=dict(tracking))
    with contextlib.suppress(Exception):  # the task's own error is the one to report
        end_pipeline_run(params, current_run(), state)


def extract(store: Store, task: Mapping[str, Any]) -> Done:
    """Embed the manifest's raw items; keyed by the items' content, which lies outside the
    store (a file in the image or on a volume)."""
    from drcl.extract import EXTRACTED_DIR
    from drcl.extract.step import extract_dataset, items_digest

    params = params_of(task)

    def work(given: Path, made: Path) -> None:
        extract_dataset(params, out_dir=made / EXTRACTED_DIR)

    return run_keyed(store, "extract", task="extract", view=task["params"], code=task["code"],
                     inputs={"items": items_digest(params.extract)}, work=work)


def prepare(store: Store, task: Mapping[str, Any], *, source: Mapping[str, Any] | None,
            extracted: Mapping[str, str]) -> tuple[Done, dict[str, Any]]:
    """Import, check and split the data set; returns it as references. Keyed by the data's
    content (DVC's hash of the revision read, the extracted features, or a file's own hash),
    never by the commit that named it."""
    from drcl.data.prepare import prepare_dataset
    from drcl.extract import EXTRACTED_DIR

    params = params_of(task)
    view = json.loads(json.dumps(task["params"]))
    inputs: dict[str, str] = {}
    if source:
        view["data"]["dvc"] = {"dvc_md5": source["dvc_md5"]}
    if extracted:
        inputs |= {f"extracted/{path}": sha for path, sha in extracted.items()}
        view["data"].pop("path", None)
    elif params.data.path is not None and params.data.dvc is None:
        inputs["data.path"] = content_digest(params.data.path)

    def work(given: Path, made: Path) -> None:
        run_params = params
        if extracted:
            folder = given / EXTRACTED_DIR
            for path, sha in extracted.items():
                store.get(sha, given / path)
            run_params = params.model_copy(update={"data": params.data.model_copy(
                update={"path": folder})})
        prepared = given / "prepared"
        prepare_dataset(run_params, out_dir=prepared)
        split_dataset(prepared, made)

    done = run_keyed(store, "prepare", task="prepare", view=view, code=task["code"],
                     inputs=inputs, work=work)
    from drcl.data.dataset import MANIFEST

    manifest = json.loads(fetch_text(store, done.outputs[MANIFEST]))
    return done, dataset_ref(done.outputs, list(manifest["modalities"]))


def prior(store: Store, task: Mapping[str, Any], *, dataset: Mapping[str, Any],
          tracking: Mapping[str, Any]) -> tuple[Done, dict[str, str]]:
    """SPL (or the orthogonal or semantic prior) on every modality's training and validation
    splits; returns {"prior": sha, "posteriors": sha}."""
    from drcl.stages.prior import fit_prior

    params = params_of(task, tracking=dict(tracking))

    def work(given: Path, made: Path) -> None:
        _join(tracking)
        layout = task_layout(given, made)
        fetch_dataset(store, dataset, TRAINING_SPLITS, layout)
        try:
            fit_prior(params, layout)
        except BaseException:  # before the exit handler's span: close the run's parent here
            _end(tracking, "FAILED")
            raise

    done = run_keyed(store, "prior", task="prior", view=task["params"], code=task["code"],
                     inputs=dataset_inputs(dataset, TRAINING_SPLITS), work=work)
    layout = Layout(Path("."))
    return done, {"prior": done.sha(layout.prior), "posteriors": done.sha(layout.posteriors)}


def fanout(dataset: Mapping[str, Any], train_tasks: Mapping[str, Any]) -> list[dict]:
    """One training task per modality, or per member of its seed ensemble
    (`train.ensemble`): its view, its own splits, and which member of how many."""
    items = []
    for m, splits in dataset["modalities"].items():
        size = params_of(train_tasks[m]).train.for_modality(m).ensemble
        items += [{"modality": m, "task": train_tasks[m], "data": splits, "member": j,
                   "members": size} for j in range(size)]
    return items


def train(store: Store, task: Mapping[str, Any], *, modality: str, data: Mapping[str, str],
          class_prior: Mapping[str, str], tracking: Mapping[str, Any], member: int = 0,
          members: int = 1) -> tuple[Done, dict[str, Any]]:
    """RSC for one modality (one member of its ensemble, when it has several) on its own
    training and validation splits against the prior; returns {"modality", "member",
    "encoder": sha, "key", "run"} (the run that trained it)."""
    from drcl.stages.train import train_modality

    member, members = int(member), int(members)  # kfp hands a loop's numbers over as floats
    params = params_of(task, tracking=dict(tracking))
    correction = params.train.correction
    reads_posteriors = correction.method != "none" and correction.cost == "cross_modal"
    inputs = {f"{modality}.{s}": data[s] for s in TRAINING_SPLITS} | {
        "prior": class_prior["prior"]}
    if reads_posteriors:
        inputs["posteriors"] = class_prior["posteriors"]

    def work(given: Path, made: Path) -> None:
        _join(tracking)
        prior_file = store.get(class_prior["prior"], given / "models" / "prior.safetensors")
        if reads_posteriors:
            store.get(class_prior["posteriors"], given / "models" / "posteriors.npz")
        layout = task_layout(given, made, prior=prior_file)
        fetch_dataset(store, {"manifest": "", "modalities": {modality: dict(data)}},
                      TRAINING_SPLITS, layout, with_manifest=False)
        train_modality(params, layout, modality=modality,
                       member=None if members == 1 else member)

    alone = members > 1  # one member of several: a task (and a key) of its own
    done = run_keyed(store, "train", task=f"train@{modality}" + (f"#{member}" if alone else ""),
                     view=task["params"], code=task["code"], inputs=inputs, work=work,
                     modality=modality, member=member if alone else None)
    encoder = done.sha(Layout(Path(".")).encoder(modality))
    return done, {"modality": modality, "member": member, "encoder": encoder,
                  "key": done.report["key"], "run": done.report["run"]}


def _encoder_inputs(encoders: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The encoders' content hashes as a task's inputs: one per modality, or per member."""
    counts: dict[str, int] = {}
    for e in encoders:
        counts[e["modality"]] = counts.get(e["modality"], 0) + 1
    return {f"encoder.{e['modality']}" + (f"#{int(e.get('member', 0))}"
                                          if counts[e["modality"]] > 1 else ""): e["encoder"]
            for e in encoders}


def _encoder_files(store: Store, encoders: Sequence[Mapping[str, Any]], folder: Path
                   ) -> dict[str, Path]:
    """Each modality's encoder file in `folder`, an ensemble's members packed into one as
    `drcl train` writes it (drcl.model.pack_ensemble)."""
    from drcl.model import pack_ensemble

    by_modality: dict[str, list[Mapping[str, Any]]] = {}
    for e in encoders:
        by_modality.setdefault(e["modality"], []).append(e)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for m, members in by_modality.items():
        members = sorted(members, key=lambda e: int(e.get("member", 0)))
        parts = [store.get(e["encoder"], folder / "members" /
                           f"{m}.{int(e.get('member', 0))}.safetensors") for e in members]
        files[m] = pack_ensemble(parts, folder / f"{m}.safetensors")
    return files


def _lineage(encoders: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Where each modality's encoder was trained (its first member's task)."""
    return {e["modality"]: {"drcl.train_key": e.get("key", ""),
                            "drcl.trained_in_kfp_run": e.get("run", "")}
            for e in encoders if int(e.get("member", 0)) == 0}


def evaluate(store: Store, task: Mapping[str, Any], *, dataset: Mapping[str, Any],
             encoders: Sequence[Mapping[str, str]], tracking: Mapping[str, Any]
             ) -> tuple[Done, dict[str, Any]]:
    """MAP of every direction on the test splits (re-ranked too, chosen on the validation
    splits); returns the report (metrics/eval.json)."""
    from drcl.stages.evaluate import evaluate_encoders, evaluation_splits

    params = params_of(task, tracking=dict(tracking))
    splits = evaluation_splits(params)
    inputs = dataset_inputs(dataset, splits) | _encoder_inputs(encoders)

    def work(given: Path, made: Path) -> None:
        _join(tracking)
        files = _encoder_files(store, encoders, given / "models" / "encoders")
        layout = task_layout(given, made, encoders=files)
        fetch_dataset(store, dataset, splits, layout)
        evaluate_encoders(params, layout)

    done = run_keyed(store, "evaluate", task="evaluate", view=task["params"], code=task["code"],
                     inputs=inputs, work=work)
    report = json.loads(fetch_text(store, done.sha(Layout(Path(".")).eval_metrics)))
    return done, report


def promote(store: Store, task: Mapping[str, Any], *, dataset: Mapping[str, Any],
            class_prior: Mapping[str, str], encoders: Sequence[Mapping[str, str]],
            source: Mapping[str, Any] | None, tracking: Mapping[str, Any], scratch: Path):
    """drcl promote's gate on the encoders as a set, on the validation and test splits; never
    keyed (it changes the registry). Each encoder is registered with where it was trained."""
    from drcl.promotion import promote as promote_set
    from drcl.promotion import promotion_splits

    params = params_of(task, tracking=dict(tracking))
    _join(tracking)
    given = scratch / "in"
    files = _encoder_files(store, encoders, given / "models" / "encoders")
    prior_file = store.get(class_prior["prior"], given / "models" / "prior.safetensors")
    layout = task_layout(given, scratch / "out", prior=prior_file, encoders=files)
    fetch_dataset(store, dataset, promotion_splits(params), layout, source=source)
    return promote_set(params, layout, report=scratch / "promotion.json",
                       lineage=_lineage(encoders))


def tune(store: Store, task: Mapping[str, Any], *, dataset: Mapping[str, Any],
         class_prior: Mapping[str, str], tracking: Mapping[str, Any], worker: int
         ) -> dict[str, Any]:
    """One worker of the tuning pipeline: trials of the study in `tune.storage` against the
    prior, on the training and validation splits, until all workers together have spent its
    budget; never keyed (the study is the state). Returns the result all workers agree on."""
    import tempfile

    from drcl.data.dataset import load_manifest
    from drcl.tune import tune

    params = params_of(task, tracking=dict(tracking))
    with tempfile.TemporaryDirectory(prefix="drcl-tune-") as scratch:
        given = Path(scratch)
        prior_file = store.get(class_prior["prior"], given / "models" / "prior.safetensors")
        layout = task_layout(given, given / "out", prior=prior_file)
        fetch_dataset(store, dataset, TRAINING_SPLITS, layout)
        result = tune(params, layout, write=False, shared=StoredEmbeddings(store),
                      echo=lambda line: print(f"drcl: tune worker {int(worker)}: {line}"))
        # the manifest's order: a dict output of kfp's cache may come back in another
        modalities = list(load_manifest(layout.data).modalities)
    return {**result.summary(), "worker": int(worker), "modalities": modalities}


class StoredEmbeddings:
    """The tuning workers' kept validation embeddings, shared through the store: an object
    by content and a record by name (the name holds the study's fingerprint)."""

    STEP = "tune-embeddings"

    def __init__(self, store: Store) -> None:
        self.store = store

    def fetch(self, name: str, dest: Path) -> bool:
        found = self.store.record(self.STEP, name)
        if found is None:
            return False
        self.store.get(found["outputs"][name], dest)
        return True

    def keep(self, name: str, path: Path) -> None:
        self.store.save_record(self.STEP, name, {"outputs": {name: self.store.put(path)}})


def tune_result(task: Mapping[str, Any], *, results: Sequence[Mapping[str, Any]],
                tracking: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The search's outcome from its workers' (which must agree): `folder`/tune/best.yaml,
    the params profile `drcl profile apply` takes, and trials.csv with every worker's trials;
    the study's MLflow run closed with both. Returns the figures and the overrides."""
    from drcl.errors import DrclError
    from drcl.tune import TuneResult, conclude, storage_url, trial_rows

    params = params_of(task, tracking=dict(tracking))
    if not results:
        raise DrclError("tune.workers: no worker returned a result")
    first = results[0]
    for other in results[1:]:
        if other["overrides"] != first["overrides"]:
            raise DrclError(f"tune: workers {first['worker']} and {other['worker']} ended "
                            f"with different settings for study {params.tune.study!r}")
    modalities = list(first["modalities"])
    rows = trial_rows(storage_url(params, folder), params, modalities)
    # in the data set's order, as `drcl tune` writes them
    overrides = {m: first["overrides"][m] for m in modalities if m in first["overrides"]}
    result = TuneResult.from_summary(first | {"overrides": overrides}, rows)
    conclude(params, folder, result)
    return result.summary() | {"trials": len(rows)}


def fetch_text(store: Store, sha: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return store.get(sha, Path(tmp) / "file").read_text()
