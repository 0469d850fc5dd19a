"""Promotion: a candidate set of encoders becomes `champion` only when it clears the MAP gate.

One function serves both paths:
- full (`drcl promote`): the pipeline's prior and every modality's encoder are the candidate set;
- per modality (`drcl promote --modality M`, `drcl add-modality`): encoders trained against the
  champions' prior join, or replace members of, the champion set. This is the method's point:
  a new modality is trained and promoted without touching the others.

Candidate and champions are measured on the same test split (data/prepared) by the same metric
code as `drcl evaluate`. The gate (params `promotion`): a minimum mean MAP@all, a minimum MAP@all
for every direction, and a minimum gain over the champions on the directions both can be measured
on. Commits are serialised (see drcl.registry); if the champions change while a candidate is being
measured, it is measured again against the new ones.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from drcl.atomic import write_json
from drcl.config import Params, PromotionParams
from drcl.data.dataset import (
    Manifest,
    Split,
    dataset_checksum,
    file_sha256,
    load_manifest,
)
from drcl.data.versioned import data_tags
from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.metrics import chance_map, direction_report
from drcl.model import Encoder, embed, load_encoder, read_metadata
from drcl.prior_io import load_prior, prior_checksum
from drcl.registry import EncoderSet, Member, Registry, bounded_reason
from drcl.rerank import TAG as RERANK_TAG
from drcl.rerank import Rerank, choose_for
from drcl.runtime import compute_dtype, resolve_device, resolved_precision
from drcl.stages.train import train_modality
from drcl.tracking import git_commit, metric_key, stage_run

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on MAP@all per direction; `reasons` is empty when it passes."""

    promoted: bool
    reasons: tuple[str, ...]
    mean_map: float
    gain: float | None
    compared_on: tuple[str, ...]


def decide(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
           rules: PromotionParams, *, gain_required: bool,
           chance: Mapping[str, float] | None = None) -> Decision:
    """Apply the three thresholds; `champion` holds the champions' MAP@all on the directions
    they can be measured on (None when there is no champion yet).

    `chance` (each direction's chance MAP) is given when the gate's labels are noisy: MAP
    against noisy labels is held down by the noise, far below what the model achieves (0.27 on
    validation against 0.80 on test at a symmetric rate of 0.4), so the absolute floors would
    refuse every run. Then each direction must beat chance instead, and the gain over the
    champions, measured on the same labels, decides as always.
    """
    if not candidate:
        raise DrclError("promotion: no direction to evaluate (a set needs two modalities with "
                        "test data)")
    mean = sum(candidate.values()) / len(candidate)
    reasons = []
    if chance is not None:
        low = [f"{d} {v:.4f} (chance {chance[d]:.4f})" for d, v in candidate.items()
               if v <= chance[d]]
        if low:
            reasons.append(f"MAP@all {', '.join(low)} not above chance on noisy labels")
    else:
        if mean < rules.min_mean_map:
            reasons.append(f"mean MAP@all {mean:.4f} < promotion.min_mean_map "
                           f"{rules.min_mean_map}")
        low = [f"{d} {v:.4f}" for d, v in candidate.items() if v < rules.min_direction_map]
        if low:
            reasons.append(f"MAP@all {', '.join(low)} < promotion.min_direction_map "
                           f"{rules.min_direction_map}")
    common = tuple(d for d in candidate if champion is not None and d in champion)
    gain = None
    if common:
        gain = (sum(candidate[d] for d in common) - sum(champion[d] for d in common)) \
            / len(common)  # type: ignore[index]
        if gain < rules.min_gain - 1e-12:
            reasons.append(f"gain {gain:+.4f} over the champions on {len(common)} direction(s) "
                           f"< promotion.min_gain {rules.min_gain}")
    elif champion is not None and gain_required:
        reasons.append("no direction in common with the champions to measure the gain on")
    return Decision(promoted=not reasons, reasons=tuple(reasons), mean_map=mean, gain=gain,
                    compared_on=common)


@dataclass
class Outcome:
    """What a promotion did: `verdict` is champion, challenger or unchanged."""

    verdict: str
    set_model: str
    set_version: str
    replaced: str | None
    decision: Decision
    members: dict[str, str] = field(default_factory=dict)
    split: str = "val"
    map_all: dict[str, float] = field(default_factory=dict)
    champion_map_all: dict[str, float] = field(default_factory=dict)
    test_map_all: dict[str, float] = field(default_factory=dict)
    rerank: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for the terminal."""
        name = f"{self.set_model} v{self.set_version}"
        if self.verdict == "unchanged":
            return f"unchanged: {name} is already the champion with these encoders"
        if self.verdict == "challenger":
            return f"challenger: {name} not promoted: {'; '.join(self.decision.reasons)}"
        line = f"champion: {name}"
        line += f" (replaces v{self.replaced})" if self.replaced else " (the first champion)"
        line += f"; mean MAP@all {self.decision.mean_map:.4f} ({self.split})"
        if self.decision.gain is not None:
            line += (f", gain {self.decision.gain:+.4f} on {len(self.decision.compared_on)} "
                     "direction(s)")
        if self.split != "test" and "mean" in self.test_map_all:
            line += f"; test MAP@all {self.test_map_all['mean']:.4f}"
        return line


@dataclass(frozen=True)
class _Loaded:
    """An encoder ready to embed, with what the registry needs to know about it."""

    encoder: Encoder
    path: Path
    prior_sha256: str
    extractor: str


def _local(layout: Layout, modality: str, device: torch.device, extractor: str,
           dtype: torch.dtype | None) -> _Loaded:
    path = layout.encoder(modality)
    encoder = load_encoder(path, device=device, compute_dtype=dtype)
    prior = read_metadata(path).get("prior_sha256")
    if not prior:
        raise DrclError(f"{path}: no prior checksum in the file; retrain it with `drcl train`")
    return _Loaded(encoder, path, prior, extractor)


def _champion_encoders(registry: Registry, champion: EncoderSet, dest: Path,
                       device: torch.device, dtype: torch.dtype | None) -> dict[str, _Loaded]:
    loaded = registry.load_members(champion, dest, device=device, compute_dtype=dtype)
    return {m: _Loaded(x.encoder, x.weights, champion.prior_sha256, x.extractor)
            for m, x in loaded.items()}


def _fits(loaded: _Loaded, test: Split, extractor: str) -> bool:
    """An encoder can be measured on this data only if it takes these features."""
    return loaded.encoder.spec.input_dim == test.features.shape[1] \
        and loaded.extractor == extractor


def _tables(encoders: Mapping[str, _Loaded], tests: Mapping[str, Split],
            directions: Sequence[tuple[str, str]], *, params: Params, multi_label: bool,
            device: torch.device) -> dict[str, dict[str, float]]:
    used = {m for pair in directions for m in pair}
    embeddings = {m: embed(encoders[m].encoder, tests[m].features, device=device) for m in used}
    labels = {m: tests[m].labels for m in used}
    tables, _ = direction_report(embeddings, labels, k=params.evaluate.k, multi_label=multi_label,
                                 query_chunk=params.evaluate.query_chunk, device=device,
                                 directions=directions)
    return tables


def _rerank(encoders: Mapping[str, _Loaded], vals: Mapping[str, Split], modalities: Sequence[str],
            *, params: Params, multi_label: bool, device: torch.device) -> Rerank | None:
    """The set's re-ranking, chosen on the validation split (None: no candidates to choose)."""
    if not vals:
        return None
    embeddings = {m: embed(encoders[m].encoder, vals[m].features, device=device)
                  for m in modalities}
    setting, _ = choose_for(params, embeddings, {m: vals[m].labels for m in modalities},
                            multi_label=multi_label, device=device)
    return setting


def noisy_labels(params: Params, manifest: Manifest) -> bool:
    """Whether the gate's labels are noisy: noise injected by `prepare`, or a label correction
    switched on, which says the given labels are not to be trusted."""
    return manifest.noise is not None or params.train.correction.method != "none"


def _chance(tests: Mapping[str, Split], directions: Sequence[tuple[str, str]],
            query_chunk: int) -> dict[str, float]:
    return {f"{q}->{d}": chance_map(tests[q].labels, tests[d].labels, query_chunk=query_chunk)
            for q, d in directions}


def _without_mean(table: Mapping[str, float]) -> dict[str, float]:
    return {d: v for d, v in table.items() if d != "mean"}


def promotion_splits(params: Params) -> tuple[str, ...]:
    """The splits promotion reads: the gate's, test (reported), and validation to choose the
    set's re-ranking on."""
    rerank = ("val",) if params.evaluate.rerank.enabled else ()
    return tuple(dict.fromkeys((params.promotion.split, "test", *rerank)))


def promote(params: Params, layout: Layout, *, modalities: Sequence[str] = (),
            report: Path | None = None,
            lineage: Mapping[str, Mapping[str, str]] | None = None) -> Outcome:
    """Register the candidate encoders and promote them as a set if they clear the gate.

    With `modalities` empty the candidate is the pipeline's whole output (prior and every
    modality's encoder); otherwise those encoders, trained against the champions' prior, join
    the champion set. `lineage` adds tags to a modality's newly registered encoder (where a
    Kubeflow run trained it). Returns the outcome; writes it as JSON to `report` when given.
    """
    manifest = load_manifest(layout.data)
    full = not modalities
    names = list(manifest.modalities) if full else list(dict.fromkeys(modalities))
    unknown = [m for m in names if m not in manifest.modalities]
    if unknown:
        raise DrclError(f"--modality: {', '.join(map(repr, unknown))} not in "
                        f"{layout.data / 'manifest.json'} (it has "
                        f"{', '.join(manifest.modalities)})")
    device = resolve_device(params.device)
    dtype = compute_dtype(params.precision, device)  # candidate and champion alike
    gate_split = params.promotion.split
    used = promotion_splits(params)
    loaded_data = {m: layout.modality(m, used) for m in manifest.modalities}
    tests = {m: data.split(gate_split) for m, data in loaded_data.items()}
    vals = {m: data.val for m, data in loaded_data.items()} if "val" in used \
        and params.evaluate.rerank.enabled else {}
    reported = {m: data.test for m, data in loaded_data.items()}
    extractors = {m: info.extractor for m, info in manifest.modalities.items()}
    candidates = {m: _local(layout, m, device, extractors[m], dtype) for m in names}
    for m, loaded in candidates.items():
        if loaded.encoder.spec.input_dim != tests[m].features.shape[1]:
            raise DrclError(f"{loaded.path}: takes {loaded.encoder.spec.input_dim}-d input but "
                            f"{layout.data / (m + '.npz')} has {tests[m].features.shape[1]}-d "
                            "features")
    if full:
        prior, _ = load_prior(layout.prior)
        _same_prior(candidates, prior_checksum(prior), str(layout.prior),
                    "a set shares one prior: retrain it (`drcl train --modality {m}`)")
    registry = Registry.open(params, layout.root, existing=False)
    registry.measured_with = {"device": device.type,
                              "precision": resolved_precision(params.precision, device)}
    with stage_run(params, "promote", layout=layout, dataset_sha256=dataset_checksum(manifest),
                   data_source=manifest.source) as run, \
            registry.artifact_run(run.run_id, params.tracking.experiment, "promote") as run_id, \
            tempfile.TemporaryDirectory() as tmp:
        outcome = _promote(registry, run_id, params=params, layout=layout, manifest=manifest,
                           full=full, names=names, candidates=candidates, tests=tests,
                           reported=reported, vals=vals, lineage=lineage or {},
                           extractors=extractors, device=device, workdir=Path(tmp))
        run.log_metrics({f"candidate.{gate_split}_map_all.{d}": v
                         for d, v in outcome.map_all.items()}
                        | {f"champion.{gate_split}_map_all.{d}": v
                           for d, v in outcome.champion_map_all.items()}
                        | {f"candidate.test_map_all.{d}": v
                           for d, v in outcome.test_map_all.items()})
        run.set_tags({"drcl.verdict": outcome.verdict, "drcl.set_version": outcome.set_version,
                      "drcl.reason": bounded_reason("; ".join(outcome.decision.reasons))})
    if report is not None:
        write_json(report, outcome.summary())
    return outcome


def _same_prior(candidates: Mapping[str, _Loaded], prior_sha256: str, source: str,
                hint: str) -> None:
    """Encoders are comparable only when they share a prior: refuse any other."""
    for m, loaded in candidates.items():
        if loaded.prior_sha256 != prior_sha256:
            raise DrclError(f"{loaded.path}: trained against prior {loaded.prior_sha256[:12]}, "
                            f"but {source} is {prior_sha256[:12]}; {hint.format(m=m)}")


def _promote(registry: Registry, run_id: str, *, params: Params, layout: Layout,
             manifest: Manifest, full: bool, names: list[str], candidates: dict[str, _Loaded],
             tests: dict[str, Split], reported: dict[str, Split], vals: dict[str, Split],
             extractors: dict[str, str], device: torch.device,
             lineage: Mapping[str, Mapping[str, str]], workdir: Path) -> Outcome:
    registered: dict[str, Member] = {}
    for _ in range(MAX_ATTEMPTS):
        champion = registry.champion()
        champions = {} if champion is None else _champion_encoders(
            registry, champion, workdir / f"set-{champion.version}", device,
            compute_dtype(params.precision, device))
        if full:
            prior_file = layout.prior
            prior_sha = candidates[names[0]].prior_sha256
            new_set = dict(candidates)
        else:
            if champion is None:
                raise DrclError(f"registry: {registry.set_model} has no champion yet; promote a "
                                "full set first (`drcl promote`)")
            prior_sha = champion.prior_sha256
            prior_file = registry.prior_of(champion, workdir / f"prior-{champion.version}")
            _same_prior(candidates, prior_sha, f"the champions' prior ({registry.set_model} "
                        f"v{champion.version})", "train it against theirs with "
                        "`drcl add-modality --modality {m}`")
            new_set = champions | candidates
        measurable = [m for m in new_set if m in tests and _fits(new_set[m], tests[m],
                                                                   extractors[m])]
        directions = [(q, d) for q in measurable for d in measurable
                      if q != d and (full or q in names or d in names)]
        if not directions:
            raise DrclError(f"promotion: nothing to measure {', '.join(names)} against; "
                            f"{layout.data} needs test data of another modality in the set")
        table = _tables(new_set, tests, directions, params=params,
                        multi_label=manifest.multi_label, device=device)
        rerank = _rerank(new_set, vals, measurable, params=params,
                         multi_label=manifest.multi_label, device=device)
        test_table = table if tests is reported else _tables(
            new_set, reported, directions, params=params, multi_label=manifest.multi_label,
            device=device)
        champion_dirs = [(q, d) for q, d in directions
                         if all(m in champions and _fits(champions[m], tests[m], extractors[m])
                                for m in (q, d))]
        champion_table = _tables(champions, tests, champion_dirs, params=params,
                                 multi_label=manifest.multi_label,
                                 device=device) if champion_dirs else {"map_all": {}}
        candidate_map = _without_mean(table["map_all"])
        champion_map = None if champion is None else _without_mean(champion_table["map_all"])
        decision = decide(candidate_map, champion_map, params.promotion,
                          gain_required=full or any(m in champions for m in names),
                          chance=_chance(tests, directions, params.evaluate.query_chunk)
                          if noisy_labels(params, manifest) else None)
        for m in names:
            if m not in registered:
                registered[m] = _register(registry, run_id, m, candidates[m], prior_file,
                                          table=table, test_table=test_table, params=params,
                                          manifest=manifest, extra=lineage.get(m, {}))
        members = ({} if full or champion is None else dict(champion.members)) | registered
        outcome = Outcome(verdict="unchanged", set_model=registry.set_model, set_version="",
                          replaced=None, decision=decision,
                          members={m: f"{x.model}/{x.version}" for m, x in members.items()},
                          split=params.promotion.split, map_all=table["map_all"],
                          champion_map_all=champion_table["map_all"],
                          test_map_all=test_table["map_all"],
                          rerank={} if rerank is None else rerank.as_dict())
        with registry.locked(params.registry.lock_wait_s):
            now = registry.champion()
            if (now and now.version) != (champion and champion.version):
                continue  # another promotion committed meanwhile: measure against it
            registry.repair()  # settles what a killed commit left behind
            if champion is not None and champion.same_members(members):
                outcome.set_version = champion.version
                return outcome
            created = registry.create_set(
                run_id, prior=prior_file, prior_sha256=prior_sha, members=members,
                member_priors={m: prior_sha if m not in candidates else candidates[m].prior_sha256
                               for m in members},
                weights={m: new_set[m].path for m in members},
                extractors={m: new_set[m].extractor for m in members},
                record=_record(decision, champion, table, champion_table, test_table, manifest,
                               params.promotion.split),
                tags=_set_tags(decision, champion, manifest, layout, params.promotion.split,
                               test_table) | ({} if rerank is None else
                                              {RERANK_TAG: json.dumps(rerank.as_dict())}))
            outcome.set_version = created.version
            if decision.promoted:
                outcome.replaced = registry.commit(
                    created.version, action="promote", expected=now and now.version,
                    reason="; ".join(decision.reasons) or "cleared every threshold")
                outcome.verdict = "champion"
            else:
                registry.mark_challenger(created.version)
                registry.sync_aliases()
                outcome.verdict = "challenger"
        return outcome
    raise DrclError(f"registry: the champions changed {MAX_ATTEMPTS} times while this "
                    "promotion was measuring; run it again")


def _register(registry: Registry, run_id: str, modality: str, loaded: _Loaded, prior_file: Path,
              *, table: dict[str, dict[str, float]], test_table: dict[str, dict[str, float]],
              params: Params, manifest: Manifest, extra: Mapping[str, str]) -> Member:
    """Register one encoder file with what is needed to use it alone; its MAP figures are
    the test split's (reported), its gate figures those of `promotion.split`."""
    spec = loaded.encoder.spec
    k_table = f"map_at_{params.evaluate.k}"
    mine, mine_k = ({d: v for d, v in test_table[name].items()
                     if d != "mean" and modality in d.split("->")}
                    for name in ("map_all", k_table))
    gate = [v for d, v in table["map_all"].items() if d != "mean" and modality in d.split("->")]
    info = {"modality": modality, "input_dim": spec.input_dim, "hidden_dim": spec.hidden_dim,
            "common_dim": spec.common_dim, "extractor": loaded.extractor,
            "prior_sha256": loaded.prior_sha256, "weights_sha256": file_sha256(loaded.path),
            "dataset": manifest.name, "dataset_sha256": dataset_checksum(manifest),
            "data_sha256": manifest.modalities[modality].sha256,
            "map_all": mine, k_table: mine_k}
    tags = {f"drcl.{k}": str(v) for k, v in info.items() if not k.startswith("map_")}
    tags |= data_tags(manifest.source)
    tags["drcl.gate_split"] = params.promotion.split
    if gate:
        tags["drcl.gate_map_all.mean"] = f"{sum(gate) / len(gate):.6f}"
    if mine:
        tags["drcl.map_all.mean"] = f"{sum(mine.values()) / len(mine):.6f}"
        tags |= {metric_key(f"drcl.map_all.{d}"): f"{v:.6f}" for d, v in mine.items()}
    tags |= {k: v for k, v in extra.items() if v}
    return registry.register_encoder(run_id, modality=modality, encoder=loaded.path,
                                     prior=prior_file, info=info, tags=tags)


def _record(decision: Decision, champion: EncoderSet | None, table: dict, champion_table: dict,
            test_table: dict, manifest: Manifest, split: str) -> dict:
    return {"decision": "promote" if decision.promoted else "challenger",
            "reasons": list(decision.reasons), "gain": decision.gain, "gate_split": split,
            "compared_with": champion.version if champion else None,
            "compared_on": list(decision.compared_on), "dataset": manifest.name,
            "dataset_sha256": dataset_checksum(manifest), "candidate": table,
            "champion": champion_table, "candidate_test": test_table}


def _set_tags(decision: Decision, champion: EncoderSet | None, manifest: Manifest,
              layout: Layout, split: str, test_table: dict) -> dict[str, str]:
    return {"drcl.decision": "promote" if decision.promoted else "challenger",
            "drcl.reason": bounded_reason("; ".join(decision.reasons)
                                          or "cleared every threshold"),
            "drcl.gate_split": split,
            "drcl.mean_map_all": f"{decision.mean_map:.6f}",
            "drcl.test_mean_map_all": f"{test_table['map_all']['mean']:.6f}",
            "drcl.gain": "" if decision.gain is None else f"{decision.gain:+.6f}",
            "drcl.compared_with": champion.version if champion else "",
            "drcl.dataset_sha256": dataset_checksum(manifest),
            "drcl.git_commit": git_commit(layout.root), **data_tags(manifest.source)}


def rollback(params: Params, root: Path = Path("."), *, to: str | None = None,
             reason: str = "", force: bool = False) -> tuple[str, str]:
    """Make set `to` the champion again (default: the champion before this one); returns
    (from, to) versions. The history keeps both, so a second rollback undoes the first.
    A set that never was champion (it did not clear the gate) takes `force` and a reason."""
    reason = bounded_reason(reason, option="--reason")
    registry = Registry.open(params, root)
    with registry.locked(params.registry.lock_wait_s):
        registry.repair()
        champion = registry.champion()
        if champion is None:
            raise DrclError(f"registry: {registry.set_model} has no champion to roll back")
        if to is None:
            events = registry.events()
            to = events[-1].get("replaces") if events else None
            if to is None:
                raise DrclError(f"registry: {registry.set_model} v{champion.version} replaced no "
                                "earlier set; there is nothing to roll back to")
        if str(to) == champion.version:
            raise DrclError(f"--to: {registry.set_model} v{to} is the champion already")
        target = registry.read_set(str(to))
        was_champion = {str(e.get("champion")) for e in registry.events()}
        if target.version not in was_champion:
            why = target.tags.get("drcl.reason") or "it was not promoted"
            if not force:
                raise DrclError(f"--to: {registry.set_model} v{target.version} never was "
                                f"champion ({why}); give --force and a --reason to make it "
                                "champion anyway")
            if not reason.strip():
                raise DrclError("--force: say why with --reason (it goes into the history)")
        registry.commit(target.version, action="rollback", expected=champion.version,
                        reason=reason)
    return champion.version, target.version


def history(params: Params, root: Path = Path(".")) -> list[dict]:
    """The champion's history, oldest first: each promotion and rollback."""
    return Registry.open(params, root).events()


def champion_prior(registry: Registry, dest: Path) -> tuple[EncoderSet, Path]:
    """The champion set and its prior W on disk (checked against the set's checksum)."""
    champion = registry.champion()
    if champion is None:
        raise DrclError(f"registry: {registry.set_model} has no champion yet; promote a full "
                        "set first (`drcl promote`)")
    return champion, registry.prior_of(champion, dest)


def add_modality(params: Params, layout: Layout, *, modality: str,
                 report: Path | None = None) -> Outcome:
    """Train one modality against the champions' prior, then promote it alone.

    The candidate is trained outside the workspace's pipeline outputs, which stay as `dvc repro`
    left them whatever the verdict; a promoted candidate lives on in the registry.
    """
    registry = Registry.open(params, layout.root)
    with tempfile.TemporaryDirectory() as tmp:
        _, prior_path = champion_prior(registry, Path(tmp) / "champions")
        candidate = replace(layout, outputs=Path(tmp) / "candidate")
        train_modality(params, candidate, modality=modality, prior_path=prior_path)
        return promote(params, candidate, modalities=[modality], report=report)
