"""The MLflow model registry: encoders, sets of encoders, and the one alias that commits a set.

With `registry.name` = NAME:

- `NAME-encoder-<modality>` holds one version per distinct encoder file. A version stands alone:
  its artifacts are an MLflow Model (drcl.serving) holding the weights (`encoder.safetensors`,
  spec and prior checksum inside), the prior W it was trained against (`prior.safetensors`) and
  `encoder.json`; its tags give the modality, input width, expected feature extractor, prior and
  data checksums and MAP figures.
- `NAME-set` holds one version per candidate set: the member encoder versions and the prior they
  share (tags `drcl.members`, `drcl.prior_sha256`); its artifacts are an MLflow Model of the
  whole set (every member's weights, the prior, `set.json`), so `models:/NAME-set@champion`
  loads and serves as it is. A set is only ever built from encoders of one prior
  (`_check_one_prior`).
- The alias `champion` of `NAME-set` is the single commit point: moving it is one write, so the
  champions are always one consistent set; it alone is authoritative. The rest is derived from
  it: `previous` (the champion before this one) and each encoder model's `champion` alias (for
  users who load one encoder alone). A set version is made once per distinct set of members and
  reused.
- Commits are serialised by a ticket lock in the store (drcl.registry_lock, model `NAME-lock`),
  and fenced: the alias moves only if the lock is still ours and the champion is still the one
  the decision was made against.
- MLflow keeps no alias history, so each commit keeps an `event.<ms>.<id>` tag on `NAME-set`:
  the action, the new champion, the one it replaced, who, when and why (`drcl history`). A
  commit is crash-consistent: (1) the event is written as `pending`; (2) encoder `champion`
  aliases the new set would contradict are removed (an encoder alias may be missing for a
  moment, never wrong); (3) the set's alias moves (the commit); (4) the event is confirmed;
  (5) the derived aliases follow. A process killed anywhere in between leaves either the old
  champion with a pending event that matches no alias (ignored) or the new champion with a
  pending event that matches it (counted): the history, `previous` and rollback agree with the
  alias either way, and the next locked operation settles the pending event (`repair`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

from drcl.config import Params
from drcl.data.dataset import file_sha256
from drcl.errors import DrclError
from drcl.model import Encoder, load_encoder, read_metadata
from drcl.prior_io import load_prior, prior_checksum
from drcl.processes import identity
from drcl.registry_lock import TicketLock
from drcl.serving.package import (
    PackagedMember,
    member_weights,
    prior_file,
    write_model,
)
from drcl.tracking import connect, experiment_id, mlflow_errors, registry_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"
PENDING, COMMITTED, ABANDONED = "pending", "committed", "abandoned"
MAX_REASON = 500
"""Characters of free text (a rollback's --reason, a decision's reasons) kept in an event tag:
the event must fit MLflow's tag column (5,000 characters on PostgreSQL) whatever it says."""


def bounded_reason(text: str, *, option: str | None = None) -> str:
    """`text` if it fits an event; a user's text that does not is refused (`option` names the
    flag), a generated one is cut with an ellipsis."""
    if len(text) <= MAX_REASON:
        return text
    if option is not None:
        raise DrclError(f"{option}: {len(text)} characters; at most {MAX_REASON} (it is kept "
                        "in the registry's history)")
    return text[:MAX_REASON - 1] + "\u2026"


@dataclass(frozen=True)
class Member:
    """One encoder version in a set."""

    modality: str
    model: str
    version: str  # "" inside the version being registered, which has no number yet

    def describe(self) -> str:
        return f"{self.model} v{self.version}" if self.version else self.model


@dataclass(frozen=True)
class EncoderSet:
    """A version of NAME-set: encoders of one prior, one per modality."""

    version: str
    prior_sha256: str
    members: dict[str, Member]
    tags: dict[str, str]

    def same_members(self, members: Mapping[str, Member]) -> bool:
        return dict(self.members) == dict(members)


@dataclass(frozen=True)
class LoadedMember:
    """A set member loaded from its checked weights file."""

    member: Member
    encoder: Encoder
    weights: Path
    extractor: str


def load_verified(weights: Path, prior: Path, *, what: str, weights_sha256: str | None,
                  prior_sha256: str, device: torch.device,
                  compute_dtype: torch.dtype | None = None) -> Encoder:
    """A registered encoder, loaded only if its weights are those registered and it and the W
    stored beside it both carry the set's prior."""
    if not weights.is_file() or file_sha256(weights) != weights_sha256:
        raise DrclError(f"registry: {what}: the stored weights differ from those registered "
                        "(drcl.weights_sha256); the artifact is damaged or missing: promote a "
                        "good set, or roll back")
    try:
        encoder = load_encoder(weights, device=device, compute_dtype=compute_dtype)
        stored = prior_checksum(load_prior(prior)[0])
    except DrclError as exc:  # the message names a temporary download folder
        reason = str(exc).split(": ", 1)[-1]
        raise DrclError(f"registry: {what}: {reason}") from None
    claimed = read_metadata(weights).get("prior_sha256")
    if {claimed, stored} != {prior_sha256}:
        raise DrclError(f"registry: {what} does not carry the set's prior {prior_sha256[:12]}")
    return encoder


def _check_one_prior(prior_sha256: str, member_priors: Mapping[str, str]) -> None:
    """The invariant the registry exists to keep: a set never mixes priors."""
    odd = {m: p for m, p in member_priors.items() if p != prior_sha256}
    if odd:
        raise DrclError(f"registry: encoder(s) {', '.join(sorted(odd))} were trained against "
                        f"another prior than {prior_sha256[:12]}; a set shares one prior")


class Registry:
    """The registry of one project (`registry.name`), on one MLflow client."""

    def __init__(self, client: MlflowClient, name: str, *, lease_s: float | None = None) -> None:
        self.client = client
        self.name = name
        self.set_model = f"{name}-set"
        self.lock = TicketLock(client, f"{name}-lock", **({} if lease_s is None
                                                          else {"lease_s": lease_s}))
        self.holder = identity()
        self.measured_with: dict[str, str] | None = None
        """The arithmetic (`device`, `precision`) of the promotion registering versions: kept
        as tags and as the default precision of their MLflow Models."""

    @classmethod
    def open(cls, params: Params, root: Path = Path("."), *, existing: bool = True) -> Registry:
        """Connect (a clear one-line error when the server cannot be reached, or when a
        command that needs an `existing` registry names a store that is not there)."""
        return cls(connect(root, existing=existing), params.registry.name,
                   lease_s=params.registry.lock_lease_s)

    def encoder_model(self, modality: str) -> str:
        return f"{self.name}-encoder-{modality}"

    # reading

    def _aliases(self, model: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return {a: str(v) for a, v in self.client.get_registered_model(model).aliases.items()}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def read_set(self, version: str) -> EncoderSet:
        with mlflow_errors(self.client, f"reading {self.set_model} v{version}"):
            tags = dict(self.client.get_model_version(self.set_model, version).tags)
        try:
            members = {m: Member(m, v["model"], str(v["version"]))
                       for m, v in json.loads(tags["drcl.members"]).items()}
            prior = tags["drcl.prior_sha256"]
        except (KeyError, TypeError, ValueError):
            raise DrclError(f"registry: {self.set_model} v{version} is not a drcl set "
                            "(tags drcl.members / drcl.prior_sha256 missing)") from None
        return EncoderSet(version=str(version), prior_sha256=prior, members=members, tags=tags)

    def champion(self) -> EncoderSet | None:
        """The committed champion set, or None before the first promotion."""
        with mlflow_errors(self.client, f"reading {self.set_model}@{CHAMPION}"):
            version = self._aliases(self.set_model).get(CHAMPION)
        return None if version is None else self.read_set(version)

    def load_members(self, encoder_set: EncoderSet, dest: Path, *, device: torch.device,
                     modalities: Iterable[str] | None = None,
                     compute_dtype: torch.dtype | None = None) -> dict[str, LoadedMember]:
        """Download and load a set's encoders, checking each one and its W against the set."""
        wanted = list(encoder_set.members) if modalities is None else list(modalities)
        missing = [m for m in wanted if m not in encoder_set.members]
        if missing:
            raise DrclError(f"registry: {self.set_model} v{encoder_set.version} has no encoder "
                            f"for {', '.join(map(repr, missing))} (it has "
                            f"{', '.join(encoder_set.members)})")
        out = {}
        for modality in wanted:
            member = encoder_set.members[modality]
            what = f"{member.model} v{member.version}"
            with mlflow_errors(self.client, f"reading {what}"):
                tags = self.client.get_model_version(member.model, member.version).tags
            root = self.download(member, dest / f"{member.model}-{member.version}")
            weights = member_weights(root, modality)
            encoder = load_verified(weights, prior_file(root), what=what,
                                    weights_sha256=tags.get("drcl.weights_sha256"),
                                    prior_sha256=encoder_set.prior_sha256, device=device,
                                    compute_dtype=compute_dtype)
            out[modality] = LoadedMember(member, encoder, weights,
                                         tags.get("drcl.extractor", "precomputed"))
        return out

    def storage_uri(self, version: str, *, artifacts_destination: str | None = None) -> str:
        """Where a set version's MLflow Model lies, for serving runtimes that read the store
        itself (KServe's storageUri). A tracking server that proxies artifacts hands out
        `mlflow-artifacts:` locations: `artifacts_destination` (the server's own
        --artifacts-destination) turns them into the store's URI."""
        with mlflow_errors(self.client, f"locating {self.set_model} v{version}"):
            uri = self.client.get_model_version_download_uri(self.set_model, version)
            if uri.startswith("runs:/"):  # the run's artifact folder, then the path in it
                run_id, _, path = uri.removeprefix("runs:/").partition("/")
                uri = self.client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + path
        if not uri.startswith("mlflow-artifacts:"):
            return uri
        if not artifacts_destination:
            raise DrclError(f"registry: {self.set_model} v{version} is at {uri}, behind the "
                            "tracking server; give --artifacts-destination (the server's "
                            "--artifacts-destination) to name it in the store")
        return artifacts_destination.rstrip("/") + "/" + urlparse(uri).path.lstrip("/")

    def prior_of(self, encoder_set: EncoderSet, dest: Path) -> Path:
        """The set's prior W on disk (the copy stored with a member), checked against the
        set's checksum."""
        member = next(iter(encoder_set.members.values()))
        path = prior_file(self.download(member, dest))
        try:
            prior, _ = load_prior(path)
        except DrclError as exc:  # the message names a temporary download folder
            raise DrclError(f"registry: {member.describe()}: "
                            f"{str(exc).split(': ', 1)[-1]}") from None
        if prior_checksum(prior) != encoder_set.prior_sha256:
            raise DrclError(f"registry: the prior stored with {member.describe()} does not match "
                            f"the set's checksum {encoder_set.prior_sha256[:12]}")
        return path

    def download(self, member: Member, dest: Path) -> Path:
        """A member's artifacts (weights, prior, encoder.json) in `dest`; returns the folder."""
        import mlflow

        what = f"{member.model} v{member.version}"
        try:
            with mlflow_errors(self.client, f"downloading {what}"):
                return Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{member.model}/{member.version}", dst_path=str(dest),
                    tracking_uri=self.client.tracking_uri,
                    registry_uri=registry_uri(self.client.tracking_uri)))
        except OSError as exc:  # artifacts gone from a local store, or the disk is full
            raise DrclError(f"registry: downloading {what} failed ({exc})") from None

    # writing

    def _ensure_model(self, name: str, description: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, description=description)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def register_encoder(self, run_id: str, *, modality: str, encoder: Path, prior: Path,
                         info: Mapping[str, object], tags: Mapping[str, str]) -> Member:
        """A version for this encoder file, or the existing one with the same weights."""
        model = self.encoder_model(modality)
        sha = str(tags["drcl.weights_sha256"])
        with mlflow_errors(self.client, f"registering {model}"):
            self._ensure_model(model, f"DRCL encoder of modality {modality!r}")
            same = self.client.search_model_versions(
                f"name = '{model}' and tags.`drcl.weights_sha256` = '{sha}'")
            if same:
                return Member(modality, model, str(min(int(v.version) for v in same)))
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / modality
                write_model(folder, members={modality: PackagedMember(
                    modality, model, "", encoder, str(info.get("extractor", "precomputed")))},
                    prior=prior, prior_sha256=str(info["prior_sha256"]),
                    record_name="encoder.json", record=info, measured_with=self.measured_with)
                self.client.log_artifacts(run_id, str(folder), f"encoders/{modality}")
            version = self.client.create_model_version(
                model, f"runs:/{run_id}/encoders/{modality}", run_id=run_id,
                tags=dict(tags) | self._arithmetic_tags())
        return Member(modality, model, str(version.version))

    def create_set(self, run_id: str, *, prior: Path, prior_sha256: str,
                   members: Mapping[str, Member], member_priors: Mapping[str, str],
                   weights: Mapping[str, Path], extractors: Mapping[str, str],
                   record: Mapping[str, object], tags: Mapping[str, str]) -> EncoderSet:
        """The set version of these members (their weights files at hand, checked when they
        were loaded): an existing one, else a new (not yet champion) one, written as an MLflow
        Model of the whole set. Refuses members of another prior."""
        _check_one_prior(prior_sha256, member_priors)
        listing = {m: {"model": x.model, "version": x.version} for m, x in members.items()}
        key = hashlib.sha256(json.dumps([prior_sha256, listing], sort_keys=True).encode())
        with mlflow_errors(self.client, f"registering a version of {self.set_model}"), \
                tempfile.TemporaryDirectory() as tmp:
            self._ensure_model(self.set_model, "DRCL encoder sets; the alias `champion` "
                               "names the set in use")
            same = self.client.search_model_versions(
                f"name = '{self.set_model}' and tags.`drcl.members_key` = '{key.hexdigest()}'")
            if same:
                return self.read_set(str(min(int(v.version) for v in same)))
            folder = Path(tmp) / "set"
            write_model(folder, members={m: PackagedMember(m, x.model, x.version, weights[m],
                                                           extractors[m])
                                         for m, x in members.items()},
                        prior=prior, prior_sha256=prior_sha256, record_name="set.json",
                        record={"prior_sha256": prior_sha256, "members": listing, **record},
                        measured_with=self.measured_with)
            self.client.log_artifacts(run_id, str(folder), "set")
            all_tags = {"drcl.members": json.dumps(listing, sort_keys=True),
                        "drcl.members_key": key.hexdigest(), "drcl.prior_sha256": prior_sha256,
                        **tags, **self._arithmetic_tags()}
            version = self.client.create_model_version(self.set_model, f"runs:/{run_id}/set",
                                                       run_id=run_id, tags=all_tags)
        return self.read_set(str(version.version))

    def _arithmetic_tags(self) -> dict[str, str]:
        return {f"drcl.measured_{k}": v for k, v in (self.measured_with or {}).items()}

    def mark_challenger(self, version: str) -> None:
        with mlflow_errors(self.client, f"marking {self.set_model} v{version} challenger"):
            self.client.set_registered_model_alias(self.set_model, CHALLENGER, version)

    def commit(self, version: str, *, action: str, expected: str | None,
               reason: str = "") -> str | None:
        """Make `version` the champion in place of `expected` (the champion the caller's
        decision was made against); returns the version it replaced. Call under `locked()`.

        The steps are the module's: pending event, contradicting encoder aliases removed, the
        alias moved (fenced: the lock still ours, the champion still `expected`), the event
        confirmed, the derived aliases rewritten.
        """
        target = self.read_set(version)
        self.repair()
        with mlflow_errors(self.client, f"committing {self.set_model} v{version}"):
            before = self._aliases(self.set_model).get(CHAMPION)
            if before != expected:
                raise DrclError(f"registry: the champion moved to v{before} while this "
                                f"{action} was deciding against v{expected}; nothing was "
                                "committed: run it again")
            now = int(time.time() * 1000)
            key = f"event.{now}.{uuid.uuid4().hex[:6]}"
            event = {"action": action, "champion": version, "replaces": before,
                     "by": self.holder, "at": now, "reason": bounded_reason(reason)}
            self.client.set_registered_model_tag(self.set_model, key,
                                                 json.dumps({**event, "state": PENDING}))
            self._drop_encoder_champions(keep=target.members)
            self.lock.fence()
            if self._aliases(self.set_model).get(CHAMPION) != expected:
                raise DrclError(f"registry: the champion moved while this {action} held the "
                                "lock; nothing was committed: run it again")
            self.client.set_registered_model_alias(self.set_model, CHAMPION, version)
            self.client.set_registered_model_tag(self.set_model, key,
                                                 json.dumps({**event, "state": COMMITTED}))
        self.sync_aliases()
        return before

    def repair(self) -> None:
        """Settle what a killed commit left (call under `locked()`): a trailing pending event
        that matches the champion is confirmed, any other pending one abandoned; then the
        derived aliases are rewritten."""
        raw = self._raw_events()
        champion = self._aliases(self.set_model).get(CHAMPION)
        counted = {id(e) for _, e in self._effective(raw, champion)}
        with mlflow_errors(self.client, f"repairing {self.set_model}'s history"):
            for key, event in raw:
                if event.get("state") == PENDING:
                    state = COMMITTED if id(event) in counted else ABANDONED
                    self.client.set_registered_model_tag(
                        self.set_model, key, json.dumps({**event, "state": state}))
        self.sync_aliases()

    def _drop_encoder_champions(self, keep: Mapping[str, Member]) -> None:
        """Remove each encoder `champion` alias that names an encoder outside `keep`."""
        prefix = self.encoder_model("")
        for model in self.client.search_registered_models(
                filter_string=f"name LIKE '{prefix}%'"):
            member = keep.get(model.name.removeprefix(prefix))
            current = model.aliases.get(CHAMPION)
            if current is not None and not (member is not None and member.model == model.name
                                            and str(current) == member.version):
                self.client.delete_registered_model_alias(model.name, CHAMPION)

    def sync_aliases(self) -> None:
        """Derive `previous` and the encoders' `champion` aliases from the champion set; a
        `challenger` that has become champion is one no longer."""
        champion = self.champion()
        if champion is None:
            return
        events = self.events()
        previous = events[-1].get("replaces") if events else None
        with mlflow_errors(self.client, "updating the derived aliases"):
            aliases = self._aliases(self.set_model)
            if previous is not None:
                if aliases.get(PREVIOUS) != str(previous):
                    self.client.set_registered_model_alias(self.set_model, PREVIOUS, previous)
            elif PREVIOUS in aliases:
                self.client.delete_registered_model_alias(self.set_model, PREVIOUS)
            if aliases.get(CHALLENGER) == champion.version:
                self.client.delete_registered_model_alias(self.set_model, CHALLENGER)
            self._drop_encoder_champions(keep=champion.members)
            for member in champion.members.values():
                if self._aliases(member.model).get(CHAMPION) != member.version:
                    self.client.set_registered_model_alias(member.model, CHAMPION,
                                                           member.version)

    def _raw_events(self) -> list[tuple[str, dict]]:
        """Every event tag, oldest first, whatever its state."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.set_model).tags
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise DrclError(f"registry: reading {self.set_model} failed ({exc})") from None
        found = [(int(k.split(".")[1]), k, json.loads(v)) for k, v in tags.items()
                 if k.startswith("event.")]
        return [(key, event) for _, key, event in sorted(found, key=lambda e: (e[0], e[1]))]

    @staticmethod
    def _effective(raw: list[tuple[str, dict]], champion: str | None) -> list[tuple[str, dict]]:
        """The events that happened: the committed ones (older events carry no state), and a
        pending one after the last of them whose champion is the alias's (its commit moved the
        alias; the process died before confirming it)."""
        committed = [i for i, (_, e) in enumerate(raw) if e.get("state", COMMITTED) == COMMITTED]
        out = [raw[i] for i in committed]
        after = raw[committed[-1] + 1:] if committed else raw
        moved = [(k, e) for k, e in after if e.get("state") == PENDING
                 and e.get("champion") == champion]
        return out + moved[-1:]

    def events(self) -> list[dict]:
        """The commit history, oldest first: what agrees with the champion alias."""
        with mlflow_errors(self.client, f"reading {self.set_model}"):
            champion = self._aliases(self.set_model).get(CHAMPION)
        return [event for _, event in self._effective(self._raw_events(), champion)]

    def locked(self, wait_s: float) -> AbstractContextManager[None]:
        """Hold the registry's commit lock; wait up to `wait_s` for another holder."""
        return self.lock.held(wait_s)

    def unlock(self, holder: str) -> None:
        """Break `holder`'s lock by hand (it died where drcl cannot see, on another host)."""
        with mlflow_errors(self.client, f"breaking {self.lock.model}"):
            self.lock.break_held(holder)

    @contextmanager
    def artifact_run(self, run_id: str | None, experiment: str, name: str) -> Iterator[str]:
        """The run that holds registered artifacts: the tracked stage run, else a plain one."""
        if run_id is not None:
            yield run_id
            return
        with mlflow_errors(self.client, f"starting a {name} run"):
            own = self.client.create_run(experiment_id(self.client, experiment),
                                         run_name=name, tags={"drcl.kind": "registry"})
        status = "FAILED"
        try:
            yield own.info.run_id
            status = "FINISHED"
        finally:
            with mlflow_errors(self.client, f"ending the {name} run"):
                self.client.set_terminated(own.info.run_id, status)
