"""`drcl tune`: an Optuna search of the train stage's settings for the best validation MAP@all.

The prior is fixed (the `prior` stage's output), so each modality's encoder trains alone. The
`coordinate` strategy uses that: modality by modality, its values are searched against the
other modalities' best encoders so far; `joint` searches one set of values for all. Each
trial's figure is the mean MAP@all over every direction on the validation split: test data
never chooses anything. Hopeless trials are pruned from their epoch curves (validation items
retrieving their class targets). The study lives in an Optuna storage (sqlite in tune/ by
default, the cluster's database when `tune.storage` names one), so an interrupted search
resumes without repeating finished trials.

What it leaves: tune/best.yaml, a params profile setting `train.per_modality` (which only the
train stages read: `drcl profile apply tune/best.yaml` then `dvc repro` retrains the encoders
against the same prior and gets the figure the search reported), tune/trials.csv, and an MLflow
run with one child run per trial.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import torch
import yaml

from drcl.atomic import atomic_path, write_text
from drcl.config import TUNABLE, Params, SearchRange, deep_merge, for_data, parse_params
from drcl.data.dataset import ModalityData, dataset_checksum, load_manifest, load_modality
from drcl.data.zero_shot import training_view
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.metrics import direction_report
from drcl.model import embed
from drcl.prior_io import load_prior, prior_checksum
from drcl.runtime import resolve_device
from drcl.stages.train import fit_encoder
from drcl.standardization import StandardizeChoice, choose_standardization
from drcl.steps import BY_NAME

_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who ran a trial (trials.csv `worker`)
HEARTBEAT_S = 5
GRACE_S = 20
_OPEN_ATTEMPTS = 5
_STEP = 10_000
"""A joint trial reports modality i's epoch e at step i * _STEP + e: one curve per trial."""


@dataclass
class TuneResult:
    """The defaults' and the tuned settings' validation MAP@all, and the tuned overrides."""

    baseline_map: float
    best_map: float
    overrides: dict[str, dict[str, Any]]
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_file: Path = Path("tune/best.yaml")

    def summary(self) -> dict[str, Any]:
        """The figures and the overrides as JSON values (a Kubeflow task's output): no NaN."""
        def figure(value: float) -> float | None:
            return None if value != value else float(value)
        return {"baseline_map": figure(self.baseline_map), "best_map": figure(self.best_map),
                "overrides": self.overrides}

    @classmethod
    def from_summary(cls, found: Mapping[str, Any], trials: list[dict[str, Any]]
                     ) -> TuneResult:
        def figure(value: float | None) -> float:
            return float("nan") if value is None else float(value)
        return cls(figure(found["baseline_map"]), figure(found["best_map"]),
                   dict(found["overrides"]), trials)


class SharedEmbeddings(Protocol):
    """Where the workers of one search on separate machines leave the validation embeddings
    they keep (the baseline's, each best so far), so that no other worker trains them again."""

    def fetch(self, name: str, dest: Path) -> bool:
        """Copy the embeddings kept as `name` to `dest`; False when none were kept."""

    def keep(self, name: str, path: Path) -> None:
        """Keep the embeddings in `path` as `name`."""


class _Search:
    """What every trial needs, loaded once: the data, the prior, the inputs' standardisation."""

    def __init__(self, params: Params, layout: Layout,
                 shared: SharedEmbeddings | None = None) -> None:
        self.layout = layout
        self.shared = shared
        self.manifest = load_manifest(layout.data)
        self.modalities = list(self.manifest.modalities)
        if len(self.modalities) < 2:
            raise DrclError(f"{layout.data}: tuning ranks one modality's items by another's; "
                            f"the data set has {len(self.modalities)} modality")
        if not layout.prior.is_file():
            raise DrclError(f"{layout.prior}: no prior; run `dvc repro prior` (or `drcl prior`)"
                            " first: tuning trains encoders against it")
        self.prior, self.prior_meta = load_prior(layout.prior)
        self.device = resolve_device(params.device)
        self.data: dict[str, ModalityData] = {
            m: load_modality(layout.data, m, verify=False, splits=("train", "val"))
            for m in self.modalities}
        for m, data in self.data.items():
            if data.val.labels.shape[0] == 0:
                raise DrclError(f"{layout.data}: modality {m!r} has no validation items; "
                                "tuning chooses on the validation split only")
        self.params = for_data(params, num_classes=training_view(
            self.data[self.modalities[0]]).train.labels.shape[1])
        self.labels = {m: d.val.labels for m, d in self.data.items()}
        self._standardization: dict[str, StandardizeChoice] = {}
        self.cache = layout.root / "tune" / params.tune.study / "embeddings"

    @functools.cache  # noqa: B019 - one search object per command; computed once
    def fingerprint(self) -> str:
        """What a study's figures depend on besides its trials' values: the train stage's
        settings and code, the search's settings, the data and the prior. A study made under
        others is refused."""
        params = self.params
        what = {"train": BY_NAME["train"].view(params), "code": BY_NAME["train"].code(),
                "tune": params.tune.model_dump(mode="json", include={"space", "strategy",
                                                                      "pruning"}),
                "data": dataset_checksum(self.manifest), "prior": prior_checksum(self.prior)}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def standardization(self, modality: str) -> StandardizeChoice:
        """Made once per modality: it reads the shared settings only, never a trial's."""
        if modality not in self._standardization:
            self._standardization[modality] = choose_standardization(
                self.data[modality], self.params, self.device)
        return self._standardization[modality]

    def embeddings(self, modality: str, override: dict[str, Any], *,
                   on_epoch: Callable[[int, float], None] | None = None,
                   keep: bool = False) -> np.ndarray:
        """`modality`'s validation embeddings by the encoder `override` trains; read back
        from the cache when a run before kept them (`keep`: the baseline and each best)."""
        cached = self.cached(modality, override)
        if cached.is_file() or (self.shared is not None
                                and self.shared.fetch(cached.name, cached)):
            return np.load(cached)
        params = with_override(self.params, modality, override)
        result = fit_encoder(params, self.layout, self.data[modality], self.prior,
                             self.prior_meta, self.device, on_epoch=on_epoch,
                             standardization=self.standardization(modality))
        values = embed(result.encoder, self.data[modality].val.features,
                       device=self.device).float().cpu().numpy()
        if keep:
            self.keep(cached, values)
        return values

    def cached(self, modality: str, override: dict[str, Any]) -> Path:
        """Where the validation embeddings of `modality` trained with `override` are kept."""
        digest = hashlib.sha256(json.dumps([self.fingerprint(), modality, override],
                                           sort_keys=True).encode()).hexdigest()[:16]
        return self.cache / f"{modality}-{digest}.npy"

    def keep(self, path: Path, values: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.save(fh, values)
        if self.shared is not None:
            self.shared.keep(path.name, path)

    def score(self, embeddings: Mapping[str, np.ndarray]) -> float:
        """Mean MAP@all over every ordered pair of modalities, on the validation split."""
        tables, _ = direction_report(
            {m: torch.as_tensor(e) for m, e in embeddings.items()}, self.labels,
            k=self.params.evaluate.k, multi_label=self.manifest.multi_label,
            query_chunk=self.params.evaluate.query_chunk, device=self.device)
        return tables["map_all"]["mean"]


def with_override(params: Params, modality: str, override: dict[str, Any]) -> Params:
    """`params` with `train.per_modality.<modality>` set to `override`."""
    raw = params.model_dump(mode="json")
    raw["train"]["per_modality"] = {**raw["train"]["per_modality"], modality: override}
    if not override:
        raw["train"]["per_modality"].pop(modality)
    return parse_params(raw)


def nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """{"train.mixup.g": 0.8, "train.lr": 1e-3} -> {"mixup": {"g": 0.8}, "lr": 1e-3}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, last = key.removeprefix("train.").split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def current_values(params: Params, modality: str, space: Mapping[str, SearchRange]
                   ) -> dict[str, Any]:
    """The values `modality` trains with now, for each key of the space (the first trial)."""
    cfg = params.train.for_modality(modality).model_dump(mode="json")
    if cfg["hidden_dim"] is None:  # the width it trains with: the model's
        cfg["hidden_dim"] = params.model.hidden_dim
    out = {}
    for key in space:
        node: Any = cfg
        for part in key.removeprefix("train.").split("."):
            node = node[part]
        out[key] = node
    return out


def first_trial(params: Params, modality: str, space: Mapping[str, SearchRange]
                ) -> dict[str, Any]:
    """The values `modality` trains with now, as a search's first trial; a key whose value
    is not among its `choices` (the model's width, say, outside the widths searched) is left
    to the sampler, since a trial can only hold values of the space."""
    return {k: v for k, v in current_values(params, modality, space).items()
            if space[k].choices is None or v in space[k].choices}


def suggest(trial: optuna.Trial, space: Mapping[str, SearchRange]) -> dict[str, Any]:
    """One value per key of the space."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.choices is not None:
            values[key] = trial.suggest_categorical(key, spec.choices)
        elif TUNABLE[key] is int:
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            values[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
    return values


def storage_url(params: Params, root: Path) -> str:
    """`tune.storage`, or the embedded store: sqlite in tune/."""
    if params.tune.storage:
        return params.tune.storage
    (root / "tune").mkdir(exist_ok=True)
    return f"sqlite:///{(root / 'tune' / 'study.db').resolve()}"


def _open_study(name: str, *, storage: str, fingerprint: str, params: Params,
                seed: int) -> optuna.Study:
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if params.tune.pruning:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=4,
                                             n_warmup_steps=max(1, params.train.epochs // 5))
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            study = optuna.create_study(
                study_name=name, storage=_rdb(storage), direction="maximize",
                load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                   n_startup_trials=min(8, params.tune.trials)),
                pruner=pruner)
            break
        except (ImportError, ValueError) as exc:
            raise DrclError(f"tune.storage: cannot open {storage!r} ({exc})") from None
        except Exception as exc:  # sqlalchemy's OperationalError and kin: one line, the cause
            if attempt + 1 < _OPEN_ATTEMPTS and _raced(exc):
                time.sleep(0.5 + attempt)  # another worker is making the same tables or study
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DrclError(f"tune.storage: cannot open {storage!r} ({first})") from None
    made_by = study.user_attrs.get("fingerprint")
    if made_by is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif made_by != fingerprint:
        raise DrclError(f"tune.study: study {name!r} in {storage} was made with other "
                        "settings, code, data or prior; name a new tune.study to search afresh")
    return study


class _HeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's database storage, where a trial whose worker died before its first heartbeat
    counts as stale too.

    A worker records a trial's first heartbeat just after making it; killed in between, it
    leaves a RUNNING trial with no heartbeat, which Optuna never fails, and every other worker
    would wait for it forever. Such a trial older than the grace period is failed like the
    rest."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        from optuna.storages._rdb import models  # the heartbeat table has no public reader

        stale = super()._get_stale_trial_ids(study_id)
        cutoff = datetime.now() - timedelta(seconds=self.grace_period or GRACE_S)
        running = self.get_all_trials(study_id, deepcopy=False,
                                      states=(optuna.trial.TrialState.RUNNING,))
        with self.scoped_session() as session:
            for trial in running:
                started = trial.datetime_start
                if (trial._trial_id not in stale and started is not None and started < cutoff
                        and models.TrialHeartbeatModel.where_trial_id(
                            trial._trial_id, session) is None):
                    stale.append(trial._trial_id)
        return stale


def _rdb(storage: str) -> optuna.storages.RDBStorage:
    """The study's database with heartbeats: a trial whose worker died (a killed process, a
    lost pod) is marked failed after the grace period and runs again elsewhere."""
    return _HeartbeatStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)


def _raced(exc: Exception) -> bool:
    """Two workers creating one study (or sqlite's tables) at once: the loser retries."""
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "unique constraint", "locked",
                                   "duplicate"))


def _settle(study: optuna.Study) -> None:
    """Wait until no trial of `study` is running in another worker (a dead worker's trial
    is failed by its heartbeat), so every worker moves on with the same best trial."""
    while True:
        optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False,
                                   states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        time.sleep(1.0)


def _remaining(study: optuna.Study, trials: int) -> int:
    """Trials still to run: an interrupted one (left running or failed) runs again."""
    return max(0, trials - len(study.get_trials(deepcopy=False, states=_DONE)))


class _Tracker:
    """The study's MLflow run, and one child run per trial (pruned ones too)."""

    def __init__(self, params: Params, root: Path, study: str) -> None:
        self.client = None
        if not params.tracking.enabled:
            return
        from drcl.tracking import connect, experiment_id

        self.client = connect(root)
        self.exp = experiment_id(self.client, params.tracking.experiment)
        found = self._runs(study)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        mine = self.client.create_run(self.exp, run_name=f"tune {study}",
                                      tags={"drcl.tune.study": study, "drcl.stage": "tune"})
        # workers starting together may each have made one: all keep the oldest
        self.run_id = self._runs(study)[0].info.run_id
        if self.run_id != mine.info.run_id:
            self.client.delete_run(mine.info.run_id)

    def _runs(self, study: str) -> list:
        assert self.client is not None
        runs = self.client.search_runs([self.exp], filter_string=f"tags.`drcl.tune.study` = "
                                       f"'{study}'", max_results=50)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def trial(self, modality: str | None, trial: optuna.trial.FrozenTrial) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric, Param

        name = f"{modality or 'joint'} trial {trial.number}"
        child = self.client.create_run(self.exp, run_name=name, tags={
            "mlflow.parentRunId": self.run_id, "drcl.tune.trial": str(trial.number),
            "drcl.tune.modality": modality or "all", "drcl.tune.state": trial.state.name})
        now = int(time.time() * 1000)
        metrics = [Metric("val_map_all", trial.value, now, 0)] if trial.value is not None else []
        metrics += [Metric("val_target_map", v, now, step)
                    for step, v in sorted(trial.intermediate_values.items())]
        self.client.log_batch(child.info.run_id, metrics=metrics,
                              params=[Param(k, str(v)) for k, v in trial.params.items()])
        status = "FINISHED" if trial.state.name == "COMPLETE" else "KILLED"
        self.client.set_terminated(child.info.run_id, status=status)

    def finish(self, result: TuneResult, files: list[Path]) -> None:
        if self.client is None:
            return
        self.client.log_metric(self.run_id, "val_map_all_defaults", result.baseline_map)
        self.client.log_metric(self.run_id, "val_map_all_best", result.best_map)
        from drcl.tracking import flatten

        for modality, override in result.overrides.items():
            for key, value in flatten(override).items():
                self.client.set_tag(self.run_id, f"drcl.tune.best.{modality}.{key}", value)
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status="FINISHED")

    def interrupted(self) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, status="KILLED")


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial log lines would drown the progress bars; drcl prints a summary."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def tune(params: Params, layout: Layout, *, trials: int | None = None,
         echo: Callable[[str], None] = print, write: bool = True,
         shared: SharedEmbeddings | None = None) -> TuneResult:
    """Run (or resume) the search; write tune/best.yaml and tune/trials.csv.

    Trials run until the study's budget is spent, by this process and any other on the same
    storage, and every one of them returns the same result. A worker of the Kubeflow tuning
    pipeline passes `write=False` (it leaves only the study, its trials' MLflow child runs
    and its embedding cache), and one task then calls `conclude` for them all; its `shared`
    embeddings let the workers of the coordinate search train the baseline and each chosen
    encoder once between them, not once each."""
    if trials is not None:
        params = parse_params(deep_merge(params.model_dump(mode="json"),
                                         {"tune": {"trials": trials}}))
    search = _Search(params, layout, shared)
    params = search.params
    storage = storage_url(params, layout.root)
    fingerprint = search.fingerprint()
    tracker = _Tracker(params, layout.root, params.tune.study)
    deadline = time.monotonic() + params.tune.timeout_s if params.tune.timeout_s else None
    try:
        with _quiet_optuna(), _INTERRUPT:
            if params.tune.strategy == "coordinate":
                result = _coordinate(search, params, storage, fingerprint, tracker, deadline,
                                     echo)
            else:
                result = _joint(search, params, storage, fingerprint, tracker, deadline, echo)
            _INTERRUPT.check()  # asked to stop as the last trial ended: nothing is written
    except KeyboardInterrupt:
        tracker.interrupted()
        raise
    if write:
        conclude(params, layout.root, result)
    return result


def conclude(params: Params, root: Path, result: TuneResult) -> list[Path]:
    """Write `root`/tune/best.yaml and trials.csv, and close the study's MLflow run with the
    best values as tags and both files as artifacts."""
    files = _write(result, params, root)
    _Tracker(params, root, params.tune.study).finish(result, files)
    return files


class _DeferredInterrupt:
    """Ctrl-C during a search, taken at the next safe point (an epoch's end, a trial's end):
    raised anywhere, it can land inside a write to the study's database, which then fails with
    a database error instead of stopping. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.pending = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _DeferredInterrupt:
        self.pending = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        if self.pending:
            raise KeyboardInterrupt


_INTERRUPT = _DeferredInterrupt()


def _timeout(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _run(study: optuna.Study, objective, *, params: Params, deadline: float | None,
         tracker: _Tracker, modality: str | None) -> None:
    left = _remaining(study, params.tune.trials)
    if left == 0 or (deadline is not None and _timeout(deadline) == 0):
        return
    # other workers may share the study: stop when the budget is spent by all of them
    study.optimize(objective, n_trials=left, timeout=_timeout(deadline),
                   callbacks=[optuna.study.MaxTrialsCallback(params.tune.trials, states=_DONE),
                              lambda _s, trial: tracker.trial(modality, trial),
                              lambda _s, _t: _INTERRUPT.check()])


def _pruning(trial: optuna.Trial, offset: int = 0) -> Callable[[int, float], None]:
    def report(epoch: int, value: float) -> None:
        _INTERRUPT.check()
        trial.report(value, offset + epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: validation target MAP {value:.4f}")
    return report


def _trained(search: _Search, trial: optuna.Trial, modality: str, override: dict[str, Any],
             offset: int = 0) -> np.ndarray:
    """A trial's encoder for `modality`; a setting that breaks training (a loss gone NaN at
    a large lr) ends the trial as pruned, with the reason, and the search goes on."""
    trial.set_user_attr("worker", WORKER)
    try:
        return search.embeddings(modality, override, on_epoch=_pruning(trial, offset))
    except DrclError as exc:
        trial.set_user_attr("error", str(exc))
        raise optuna.TrialPruned(str(exc)) from None


def _coordinate(search: _Search, params: Params, storage: str, fingerprint: str,
                tracker: _Tracker, deadline: float | None, echo) -> TuneResult:
    space = params.tune.space
    # the values each modality trains with now, spelt out: the first trial's, and the cache's
    current = {m: deep_merge(params.train.per_modality.get(m, {}),
                         nested(current_values(params, m, space))) for m in search.modalities}
    embeddings = {m: search.embeddings(m, current[m], keep=True) for m in search.modalities}
    baseline = search.score(embeddings)
    echo(f"defaults: validation MAP@all {baseline:.4f}")
    best = baseline
    for index, modality in enumerate(search.modalities):
        study = _open_study(f"{params.tune.study}.{modality}", storage=storage,
                            fingerprint=fingerprint, params=params, seed=params.seed + index)
        if not study.trials:  # the first trial: the values it trains with now
            study.enqueue_trial(first_trial(params, modality, space), skip_if_exists=True)
        others = dict(embeddings)

        def objective(trial: optuna.Trial, modality=modality, others=others) -> float:
            override = deep_merge(current[modality], nested(suggest(trial, space)))
            values = _trained(search, trial, modality, override)
            score = search.score({**others, modality: values})
            if score > _best_value(trial.study):  # kept: a resumed search starts from it
                search.keep(search.cached(modality, override), values)
            return score

        _run(study, objective, params=params, deadline=deadline, tracker=tracker,
             modality=modality)
        _settle(study)
        chosen = _best_trial(study)
        if chosen is not None and chosen.value is not None and chosen.value >= best:
            current[modality] = deep_merge(current[modality], nested(chosen.params))
            embeddings[modality] = search.embeddings(modality, current[modality], keep=True)
            best = chosen.value
        echo(f"{modality}: validation MAP@all {best:.4f} after "
             f"{len(study.get_trials(deepcopy=False, states=_DONE))} trials")
    overrides = {m: v for m, v in current.items() if v}
    return TuneResult(baseline, search.score(embeddings), overrides,
                      trial_rows(storage, params, search.modalities))


def _best_value(study: optuna.Study) -> float:
    done = [t.value for t in study.get_trials(deepcopy=False, states=(
        optuna.trial.TrialState.COMPLETE,)) if t.value is not None]
    return max(done, default=float("-inf"))


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial completed (all pruned, or the budget ran out)
        return None


def _joint(search: _Search, params: Params, storage: str, fingerprint: str,
           tracker: _Tracker, deadline: float | None, echo) -> TuneResult:
    space = params.tune.space
    study = _open_study(f"{params.tune.study}.joint", storage=storage,
                        fingerprint=fingerprint, params=params, seed=params.seed)
    first = search.modalities[0]
    if not study.trials:
        study.enqueue_trial(first_trial(params, first, space), skip_if_exists=True)
    base = {m: dict(params.train.per_modality.get(m, {})) for m in search.modalities}

    def objective(trial: optuna.Trial) -> float:
        values = nested(suggest(trial, space))
        embeddings = {m: _trained(search, trial, m, deep_merge(base[m], values), offset=i * _STEP)
                      for i, m in enumerate(search.modalities)}
        return search.score(embeddings)

    _run(study, objective, params=params, deadline=deadline, tracker=tracker, modality=None)
    _settle(study)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    # trial 0 is the settings before the search, unless a key of theirs lay outside the space
    whole = first_trial(params, first, space) == current_values(params, first, space)
    baseline = done[0].value if whole and done and done[0].number == 0 else float("nan")
    chosen = _best_trial(study)
    if chosen is None:
        raise DrclError(f"tune: no trial of study {study.study_name!r} completed; widen "
                        "tune.space or raise tune.trials / tune.timeout_s")
    overrides = {m: v for m in search.modalities
                 if (v := deep_merge(base[m], nested(chosen.params)))}
    echo(f"joint: validation MAP@all {chosen.value:.4f} after {len(done)} completed trials")
    return TuneResult(baseline, chosen.value, overrides,
                      trial_rows(storage, params, search.modalities))


def trial_rows(storage: str, params: Params, modalities: list[str]) -> list[dict[str, Any]]:
    """Every trial of the search's studies, for tune/trials.csv."""
    names = [f"{params.tune.study}.{m}" for m in modalities] \
        if params.tune.strategy == "coordinate" else [f"{params.tune.study}.joint"]
    rows = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=_rdb(storage))
        for t in study.get_trials(deepcopy=False):
            duration = (t.datetime_complete - t.datetime_start).total_seconds() \
                if t.datetime_complete and t.datetime_start else None
            rows.append({"study": name, "trial": t.number, "state": t.state.name,
                         "val_map_all": t.value, "seconds": duration,
                         "worker": t.user_attrs.get("worker", ""),
                         **{k: t.params.get(k) for k in params.tune.space}})
    return rows


def _write(result: TuneResult, params: Params, root: Path) -> list[Path]:
    folder = root / "tune"
    folder.mkdir(exist_ok=True)
    best = folder / "best.yaml"
    header = (f"# drcl tune, study {params.tune.study} ({params.tune.strategy}, "
              f"{params.tune.trials} trials a search): validation MAP@all "
              f"{result.best_map:.4f}, the settings before it {result.baseline_map:.4f}.\n"
              "# Apply with `drcl profile apply tune/best.yaml`; `dvc repro` then retrains the "
              "encoders with it.\n")
    body = yaml.safe_dump({"train": {"per_modality": result.overrides}}, sort_keys=False)
    write_text(best, header + body)
    trials = folder / "trials.csv"
    with atomic_path(trials) as tmp, tmp.open("w", newline="") as fh:
        if result.trials:
            writer = csv.DictWriter(fh, fieldnames=list(result.trials[0]))
            writer.writeheader()
            writer.writerows(result.trials)
    result.best_file = best
    return [best, trials]
