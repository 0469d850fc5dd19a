"""The registry on the embedded sqlite store: the promotion gate, adding a modality, rollback,
failures half-way, and two promotions racing from two processes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from drcl.cli import EXIT_CHALLENGER, app
from drcl.model import load_encoder, read_metadata
from drcl.registry_lock import LEASE_S
from tests.integration.registry_helpers import MODALITIES, write_project_params

SET = "drcl-set"


def drcl(project: Path, monkeypatch, *args: str):
    monkeypatch.chdir(project)
    return CliRunner().invoke(app, list(args))


def aliases(client: MlflowClient, model: str) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}


def set_tags(client: MlflowClient, version: str) -> dict[str, str]:
    return client.get_model_version(SET, version).tags


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("drcl: error: ") and result.stderr.count("\n") == 1
    return result.stderr


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_store)


def test_first_promotion_registers_a_set_that_stands_alone(projects, tmp_path, client,
                                                           monkeypatch):
    a = projects.copy(tmp_path / "a")
    result = drcl(a, monkeypatch, "promote", "--report", "metrics/promotion.json")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("champion: drcl-set v1 (the first champion)")
    assert aliases(client, SET) == {"champion": "1"}
    tags = set_tags(client, "1")
    members = json.loads(tags["drcl.members"])
    assert set(members) == set(MODALITIES) and tags["drcl.decision"] == "promote"
    prior = tags["drcl.prior_sha256"]
    for m in MODALITIES:
        model = f"drcl-encoder-{m}"
        assert members[m] == {"model": model, "version": "1"}
        assert aliases(client, model) == {"champion": "1"}
        v = client.get_model_version(model, "1").tags
        assert v["drcl.prior_sha256"] == prior and v["drcl.extractor"] == "precomputed"
        assert v["drcl.input_dim"] == read_metadata(a / f"models/encoders/{m}.safetensors")[
            "input_dim"]
        assert 0 < float(v["drcl.map_all.mean"]) <= 1 and v["drcl.dataset_sha256"]
        # loaded by alias alone: an MLflow Model with the weights, W and description inside
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{model}@champion",
                                                          tracking_uri=client.tracking_uri,
                                                          registry_uri=client.tracking_uri))
        assert (folder / "MLmodel").is_file()
        files = folder / "artifacts" / "drcl"
        assert {p.name for p in files.iterdir()} == {m, "prior.safetensors", "encoder.json",
                                                     "drcl-model.json"}
        assert load_encoder(files / m / "encoder.safetensors").spec.modality == m
        assert json.loads((files / "encoder.json").read_text())["prior_sha256"] == prior
    report = json.loads((a / "metrics/promotion.json").read_text())
    assert report["verdict"] == "champion" and report["set_version"] == "1"
    assert len(report["map_all"]) == 1 + len(MODALITIES) * (len(MODALITIES) - 1)
    # the same encoders again: nothing new is registered, nothing moves
    again = drcl(a, monkeypatch, "promote")
    assert again.exit_code == 0 and again.stdout.startswith("unchanged: drcl-set v1")
    assert len(client.search_model_versions(f"name = '{SET}'")) == 1


@pytest.mark.parametrize(("gate", "reason"), [
    ({"min_mean_map": 0.999}, "< promotion.min_mean_map 0.999"),
    ({"min_direction_map": 0.999}, "< promotion.min_direction_map 0.999"),
    ({"min_gain": 0.5}, "< promotion.min_gain 0.5"),
])
def test_each_threshold_keeps_a_challenger(projects, tmp_path, client, monkeypatch, gate,
                                           reason):
    champion = projects.copy(tmp_path / "champion", seed=1)
    assert drcl(champion, monkeypatch, "promote").exit_code == 0
    a = projects.copy(tmp_path / "a")
    write_project_params(a, promotion={"min_mean_map": 0.0, "min_direction_map": 0.0,
                                       "min_gain": -1.0} | gate)
    result = drcl(a, monkeypatch, "promote")
    assert result.exit_code == EXIT_CHALLENGER, result.output
    assert result.stdout.startswith("challenger: drcl-set v2 not promoted") and reason in \
        result.stdout
    assert aliases(client, SET) == {"champion": "1", "challenger": "2"}
    tags = set_tags(client, "2")
    assert tags["drcl.decision"] == "challenger" and reason in tags["drcl.reason"]
    assert tags["drcl.compared_with"] == "1"


def test_a_weaker_candidate_loses_to_a_better_champion(projects, tmp_path, client,
                                                       monkeypatch):
    weak = projects.copy(tmp_path / "weak", quality="weak")
    strong = projects.copy(tmp_path / "strong")
    assert drcl(strong, monkeypatch, "promote").exit_code == 0
    result = drcl(weak, monkeypatch, "promote")
    assert result.exit_code == EXIT_CHALLENGER, result.output
    assert "gain -0." in result.stdout and "< promotion.min_gain 0.0" in result.stdout
    assert aliases(client, SET) == {"champion": "1", "challenger": "2"}


def test_rollback_restores_the_previous_set_and_can_be_undone(projects, tmp_path, client,
                                                              monkeypatch):
    first = projects.copy(tmp_path / "first", quality="weak")
    second = projects.copy(tmp_path / "second")
    assert drcl(first, monkeypatch, "rollback").exit_code == 1  # no champion yet
    assert drcl(first, monkeypatch, "promote").exit_code == 0
    assert "nothing to roll back to" in one_error_line(drcl(first, monkeypatch, "rollback"))
    result = drcl(second, monkeypatch, "promote")
    assert result.exit_code == 0 and "(replaces v1)" in result.stdout and "gain +" in \
        result.stdout
    assert aliases(client, SET) == {"champion": "2", "previous": "1"}

    result = drcl(second, monkeypatch, "rollback")
    assert result.exit_code == 0 and result.stdout.strip() == "champion: set v1 (was v2)"
    assert aliases(client, SET) == {"champion": "1", "previous": "2"}
    for m in MODALITIES:  # the encoders' own aliases follow the set
        assert aliases(client, f"drcl-encoder-{m}") == {"champion": "1"}
    assert drcl(second, monkeypatch, "rollback").exit_code == 0
    assert aliases(client, SET) == {"champion": "2", "previous": "1"}
    assert [(e["action"], e["champion"]) for e in _events(client)] == [
        ("promote", "1"), ("promote", "2"), ("rollback", "1"), ("rollback", "2")]


def _events(client: MlflowClient) -> list[dict]:
    tags = client.get_registered_model(SET).tags
    return [json.loads(tags[k]) for k in sorted((k for k in tags if k.startswith("event.")),
                                                key=lambda k: int(k.split(".")[1]))]


def test_add_a_modality_against_the_champions_prior(projects, tmp_path, client, monkeypatch):
    two = projects.copy(tmp_path / "two", modalities=("image", "text"))
    assert drcl(two, monkeypatch, "promote").exit_code == 0
    champion_prior = set_tags(client, "1")["drcl.prior_sha256"]

    # a project of its own, whose pipeline prior differs from the champions'
    other = projects.copy(tmp_path / "other", seed=3)
    assert read_metadata(other / "models/encoders/audio.safetensors")["prior_sha256"] \
        != champion_prior
    error = one_error_line(drcl(other, monkeypatch, "promote", "--modality", "audio"))
    assert "audio.safetensors: trained against prior" in error and "drcl add-modality" in error
    assert aliases(client, SET) == {"champion": "1"}

    workspace = pipeline_outputs(other)
    result = drcl(other, monkeypatch, "add-modality", "--modality", "audio")
    assert result.exit_code == 0, result.output
    assert "champion: drcl-set v2 (replaces v1)" in result.stdout
    assert pipeline_outputs(other) == workspace  # the candidate was trained beside them
    tags = set_tags(client, "2")
    members = json.loads(tags["drcl.members"])
    assert members["image"] == {"model": "drcl-encoder-image", "version": "1"}
    assert members["text"] == {"model": "drcl-encoder-text", "version": "1"}
    assert members["audio"]["model"] == "drcl-encoder-audio"
    assert tags["drcl.prior_sha256"] == champion_prior
    # retrieval works across the grown set
    with np.load(other / "data/prepared/audio.npz") as npz:
        np.save(other / "q.npy", npz["test.features"][:2])
    with np.load(other / "data/prepared/image.npz") as npz:
        np.save(other / "db.npy", npz["test.features"])
    found = drcl(other, monkeypatch, "search", "-q", "audio", "--queries", "q.npy",
                 "--database", "db.npy", "-d", "image", "-k", "3", "--format", "json")
    assert found.exit_code == 0, found.output
    assert [len(r["matches"]) for r in json.loads(found.stdout)["results"]] == [3, 3]


def pipeline_outputs(project: Path) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes() for folder in ("models", "metrics", "plots")
            for p in sorted((project / folder).rglob("*")) if p.is_file()}


def test_a_refused_added_modality_leaves_the_workspace_alone(projects, tmp_path, client,
                                                             monkeypatch):
    two = projects.copy(tmp_path / "two", modalities=("image", "text"))
    assert drcl(two, monkeypatch, "promote").exit_code == 0
    weak = projects.copy(tmp_path / "weak", quality="weak", seed=3)
    write_project_params(weak, quality="weak", seed=3,
                         promotion={"min_mean_map": 0.99, "min_direction_map": 0.0,
                                    "min_gain": 0.0})
    before = pipeline_outputs(weak)
    result = drcl(weak, monkeypatch, "add-modality", "--modality", "audio")
    assert result.exit_code == EXIT_CHALLENGER, result.output
    assert pipeline_outputs(weak) == before
    evaluated = drcl(weak, monkeypatch, "evaluate")  # the pipeline's own set still agrees
    assert evaluated.exit_code == 0, evaluated.output


def test_failure_before_the_commit_point_changes_nothing(projects, tmp_path, client,
                                                         monkeypatch):
    first = projects.copy(tmp_path / "first", quality="weak")
    second = projects.copy(tmp_path / "second")
    assert drcl(first, monkeypatch, "promote").exit_code == 0
    original = MlflowClient.set_registered_model_alias

    def die_on_commit(self, name, alias, version):
        if alias == "champion":
            raise KeyboardInterrupt  # the process is stopped just before the alias moves
        return original(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", die_on_commit)
    result = drcl(second, monkeypatch, "promote")
    assert result.exit_code == 130
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", original)
    assert aliases(client, SET) == {"champion": "1"}  # the set v2 exists, inert
    assert not [t for t in live_tickets(client)]  # the lock was released on the way out
    result = drcl(second, monkeypatch, "promote")  # nothing is left in the way
    assert result.exit_code == 0 and "(replaces v1)" in result.stdout


def test_failure_after_the_commit_point_is_repaired_by_the_next_command(projects, tmp_path,
                                                                        client, monkeypatch):
    first = projects.copy(tmp_path / "first", quality="weak")
    second = projects.copy(tmp_path / "second")
    assert drcl(first, monkeypatch, "promote").exit_code == 0
    original = MlflowClient.set_registered_model_tag

    def die_on_confirming(self, name, key, value):
        if '"state": "committed"' in value:
            raise KeyboardInterrupt  # the alias has moved; the event is still pending
        return original(self, name, key, value)

    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", die_on_confirming)
    assert drcl(second, monkeypatch, "promote").exit_code == 130
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    # committed: the set is whole; the encoder alias the new set contradicts is gone, not wrong
    assert aliases(client, SET) == {"champion": "2"}
    assert aliases(client, "drcl-encoder-image") == {}
    assert [e["champion"] for e in _history(second, monkeypatch)] == ["1", "2"]
    # an unchanged promotion (the same encoders again) repairs them
    again = drcl(second, monkeypatch, "promote")
    assert again.exit_code == 0 and again.stdout.startswith("unchanged"), again.output
    assert aliases(client, SET) == {"champion": "2", "previous": "1"}
    assert aliases(client, "drcl-encoder-image") == {"champion": "2"}
    assert drcl(second, monkeypatch, "rollback").exit_code == 0
    assert aliases(client, SET) == {"champion": "1", "previous": "2"}
    assert aliases(client, "drcl-encoder-image") == {"champion": "1"}


def _history(project: Path, monkeypatch) -> list[dict]:
    result = drcl(project, monkeypatch, "history", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def take_ticket(client: MlflowClient, holder: str, expires: float) -> str:
    """A ticket as another promoter would leave it in the store."""
    from drcl.registry_lock import EXPIRES, HOLDER, STATE

    with contextlib.suppress(Exception):
        client.create_registered_model("drcl-lock")
    return client.create_model_version("drcl-lock", "drcl-lock://registry/ticket", tags={
        HOLDER: holder, EXPIRES: str(expires), STATE: "active"}).version


def live_tickets(client: MlflowClient) -> list:
    from drcl.registry_lock import TicketLock

    return [t for t in TicketLock(client, "drcl-lock").tickets() if t.live]


def test_a_live_lock_is_waited_for_and_an_expired_one_is_not(projects, tmp_path, client,
                                                            monkeypatch):
    a = projects.copy(tmp_path / "a")
    elsewhere = "ops@build-7:4242:99"  # another host: its process cannot be checked from here
    ticket = take_ticket(client, elsewhere, time.time() + LEASE_S)
    write_project_params(a, registry={"lock_wait_s": 0.5})
    error = one_error_line(drcl(a, monkeypatch, "promote"))
    assert f"drcl-lock is held by {elsewhere}" in error and "registry.lock_wait_s" in error
    assert f"`drcl unlock --holder {elsewhere}` breaks it" in error
    assert not client.search_registered_models(filter_string=f"name = '{SET}'")
    client.set_model_version_tag("drcl-lock", ticket, "drcl.expires", str(time.time() - 1))
    assert drcl(a, monkeypatch, "promote").exit_code == 0  # its lease ran out


def test_a_dead_holder_on_this_host_is_seen_at_once(projects, tmp_path, client, monkeypatch):
    from drcl.processes import identity

    a = projects.copy(tmp_path / "a")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    name = identity(holder.pid)
    holder.kill()
    holder.wait()
    take_ticket(client, name, time.time() + LEASE_S)  # a promoter killed while holding
    write_project_params(a, registry={"lock_wait_s": 0.5})
    assert drcl(a, monkeypatch, "promote").exit_code == 0  # no five-minute wait


def test_a_dead_holder_is_judged_only_on_its_own_machine(projects, tmp_path, client,
                                                         monkeypatch):
    """Containers often share a host name: a pid of another kernel or pid namespace under the
    same name is never taken for a dead process of this one; the lease decides."""
    from drcl.processes import identity, is_dead, machine

    holder = subprocess.Popen([sys.executable, "-c", "pass"])
    holder.wait()
    name = identity(holder.pid)
    assert f"/{machine()}:{holder.pid}:" in name and is_dead(name)
    other_container = name.replace(f"/{machine()}:", "/0123456789abcdef.4026531836:")
    assert not is_dead(other_container)
    assert not is_dead(name.replace(f"/{machine()}:", ":"))  # no machine named: unknown
    a = projects.copy(tmp_path / "a")
    take_ticket(client, other_container, time.time() + LEASE_S)
    write_project_params(a, registry={"lock_wait_s": 0.5})
    refused = drcl(a, monkeypatch, "promote")
    assert refused.exit_code == 1 and "0123456789abcdef.4026531836" in refused.stderr


def test_a_lock_is_broken_by_hand_only_for_the_holder_named(projects, tmp_path, client,
                                                            monkeypatch):
    a = projects.copy(tmp_path / "a")
    elsewhere = "ops@build-7:4242:99"
    take_ticket(client, elsewhere, time.time() + LEASE_S)
    write_project_params(a, registry={"lock_wait_s": 0.5})
    assert "no live ticket of 'someone'" in one_error_line(
        drcl(a, monkeypatch, "unlock", "--holder", "someone"))
    result = drcl(a, monkeypatch, "unlock", "--holder", elsewhere)
    assert result.exit_code == 0 and "broken" in result.stdout
    assert not live_tickets(client)
    assert drcl(a, monkeypatch, "promote").exit_code == 0


def test_an_unreachable_registry_is_one_line_and_changes_nothing(projects, tmp_path,
                                                                 monkeypatch):
    a = projects.copy(tmp_path / "a")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    before = sorted((p, p.stat().st_mtime_ns) for p in a.rglob("*"))
    for args in (["promote", "--report", "metrics/promotion.json"], ["rollback"]):
        error = one_error_line(drcl(a, monkeypatch, *args))
        assert f"MLflow at http://127.0.0.1:{port} is unreachable" in error
    assert sorted((p, p.stat().st_mtime_ns) for p in a.rglob("*")) == before


@pytest.mark.parametrize(("args", "breaks", "message"), [
    (["promote", "-m", "video"], None, "--modality: 'video' not in"),
    (["promote", "-m", "audio"], None, "has no champion yet"),
    (["promote"], "models/encoders/text.safetensors", "text.safetensors: encoder weights not"),
    (["promote"], "models/prior.safetensors", "prior.safetensors: prior not found"),
])
def test_bad_input_is_one_line(projects, tmp_path, client, monkeypatch, args, breaks, message):
    a = projects.copy(tmp_path / "a")
    if breaks:
        (a / breaks).unlink()
    assert message in one_error_line(drcl(a, monkeypatch, *args))
    assert not client.search_registered_models(filter_string=f"name = '{SET}'")


def test_encoders_of_another_prior_are_refused(projects, tmp_path, client, monkeypatch):
    a = projects.copy(tmp_path / "a")
    b = projects.copy(tmp_path / "b", seed=5)
    (a / "models/encoders/text.safetensors").write_bytes(
        (b / "models/encoders/text.safetensors").read_bytes())
    error = one_error_line(drcl(a, monkeypatch, "promote"))
    assert "text.safetensors: trained against prior" in error and "shares one prior" in error
    assert not client.search_registered_models()


RACER = """
import sys, time
import drcl.registry as registry
create_set = registry.Registry.create_set
def slow_create_set(self, *args, **kwargs):
    time.sleep(1.5)  # hold the lock a while, so the other process must wait for it
    return create_set(self, *args, **kwargs)
registry.Registry.create_set = slow_create_set
from drcl.cli import app
app(["promote"], prog_name="drcl")
"""


@pytest.mark.parametrize("crashed", [False, True], ids=["clean", "after-two-crashes"])
def test_two_promotions_racing_from_two_processes_commit_one_after_the_other(
        projects, tmp_path, client, crashed):
    if crashed:  # two promoters died holding the lock, long ago: both restart at once
        for host in ("build-1", "build-2"):
            take_ticket(client, f"ci@{host}:77:1", time.time() - 1)
    racers = [projects.copy(tmp_path / "a"), projects.copy(tmp_path / "b", seed=1)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": client.tracking_uri}
    procs = [subprocess.Popen([sys.executable, "-c", RACER], cwd=r, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in racers]
    outputs = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, EXIT_CHALLENGER]), outputs
    events = _events(client)
    champions = [None] + [e["champion"] for e in events]
    assert [e["replaces"] for e in events] == champions[:-1]  # a chain: no lost update
    versions = client.search_model_versions(f"name = '{SET}'")
    assert len(versions) == 2
    # whoever committed second measured itself against the first one's set
    first, second = sorted(versions, key=lambda v: int(v.version))
    assert first.tags["drcl.compared_with"] == ""
    assert second.tags["drcl.compared_with"] == str(first.version)
    champion = client.get_model_version(SET, aliases(client, SET)["champion"])
    members = json.loads(champion.tags["drcl.members"])
    priors = {client.get_model_version(x["model"], x["version"]).tags["drcl.prior_sha256"]
              for x in members.values()}
    assert priors == {champion.tags["drcl.prior_sha256"]} and len(members) == 3


def test_search_refuses_a_stale_index_and_bad_input(projects, tmp_path, client, monkeypatch):
    weak = projects.copy(tmp_path / "weak", quality="weak")
    strong = projects.copy(tmp_path / "strong")
    assert drcl(weak, monkeypatch, "promote").exit_code == 0
    with np.load(strong / "data/prepared/text.npz") as npz:
        np.save(strong / "texts.npy", npz["test.features"])
        np.save(strong / "text-queries.npy", npz["test.features"][:2])
    with np.load(strong / "data/prepared/image.npz") as npz:
        np.save(strong / "images.npy", npz["test.features"][:2])
    assert drcl(strong, monkeypatch, "index", "-m", "text", "--features", "texts.npy",
                "--out", "index.npz").exit_code == 0
    search = ("search", "-q", "image", "--queries", "images.npy", "--database")
    assert drcl(strong, monkeypatch, *search, "index.npz").exit_code == 0
    assert drcl(strong, monkeypatch, "promote").exit_code == 0  # new champions
    for args, message in [
        ((*search, "index.npz"), "index.npz: built with drcl-encoder-text v1, but the champion "
                                 "is drcl-encoder-text v2; rebuild it with `drcl index`"),
        ((*search, "index.npz", "-d", "audio"), "index.npz: an index of 'text', not 'audio'"),
        ((*search, "texts.npy"), "texts.npy: plain features: name their modality"),
        (("search", "-q", "image", "--queries", "text-queries.npy", "--database", "texts.npy",
          "-d", "text"),
         "text-queries.npy: 6-d features, but the image encoder (drcl-encoder-image v2)"),
        ((*search, "texts.npy", "-d", "video"), "has no encoder for 'video'"),
        (("index", "-m", "text", "--features", "texts.npy", "--out", "index.bin"),
         "index.bin: an index file is written as .npz"),
    ]:
        assert message in one_error_line(drcl(strong, monkeypatch, *args)), args
    assert drcl(strong, monkeypatch, "index", "-m", "text", "--features", "texts.npy",
                "--out", "index.npz").exit_code == 0
    table = drcl(strong, monkeypatch, *search, "index.npz", "-k", "2")
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split() == [
        "query", "rank", "id", "score"]
    assert len(table.stdout.splitlines()) == 1 + 2 * 2


class FakeTextExtractor:
    """Stands in for MiniLM: a text's features are its image-width digits."""

    def __init__(self, **settings) -> None:
        self.settings = settings

    def load(self, item):
        from drcl.extract.extractors import ItemError

        if item.text is None or not item.text.strip().replace(" ", "").isdigit():
            raise ItemError("not a list of numbers")
        return None, [float(x) for x in item.text.split()]

    def embed(self, payloads):
        return np.asarray(payloads, dtype=np.float32)


def test_raw_queries_go_through_the_extractor_the_encoder_expects(projects, tmp_path, client,
                                                                  monkeypatch):
    a = projects.copy(tmp_path / "a")
    assert drcl(a, monkeypatch, "promote").exit_code == 0
    with np.load(a / "data/prepared/text.npz") as npz:
        np.save(a / "texts.npy", npz["test.features"])
    (a / "queries.txt").write_text(" ".join(["1"] * 12) + "\n\n" + " ".join(["2"] * 12) + "\n")
    search = ("search", "-q", "image", "--queries", "queries.txt", "--raw", "--database",
              "texts.npy", "-d", "text", "-k", "2", "--format", "json")
    assert "takes precomputed features" in one_error_line(drcl(a, monkeypatch, *search))
    client.set_model_version_tag("drcl-encoder-image", "1", "drcl.extractor", "minilm")
    made = {}

    def fake(name, **settings):
        made[name] = settings
        return FakeTextExtractor(**settings)

    monkeypatch.setattr("drcl.extract.extractors.make_extractor", fake)
    result = drcl(a, monkeypatch, *search)
    assert result.exit_code == 0, result.output
    assert [r["query"] for r in json.loads(result.stdout)["results"]] == ["1", "3"]
    assert set(made) == {"minilm"} and made["minilm"]["device"] == "cpu"
    (a / "queries.txt").write_text("one two\n")
    assert "queries.txt:1: not a list of numbers" in one_error_line(drcl(a, monkeypatch,
                                                                         *search))


def test_search_over_a_prepared_split_names_its_items(projects, tmp_path, monkeypatch):
    """`--key test.features` of a prepared modality file takes its ids from `test.ids`."""
    from drcl.data.dataset import load_modality

    a = projects.copy(tmp_path / "a")
    assert drcl(a, monkeypatch, "promote").exit_code == 0
    built = drcl(a, monkeypatch, "index", "-m", "text", "--features", "data/prepared/text.npz",
                 "--key", "test.features", "--out", "text-index.npz")
    assert built.exit_code == 0, built.output
    result = drcl(a, monkeypatch, "search", "-q", "image", "--queries",
                  "data/prepared/image.npz", "--key", "test.features", "--database",
                  "text-index.npz", "-k", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["results"]
    images = load_modality(a / "data/prepared", "image").test.ids.tolist()
    texts = set(load_modality(a / "data/prepared", "text").test.ids.tolist())
    assert [r["query"] for r in found] == images and images[0] == "test/0"
    assert all(m["id"] in texts for r in found for m in r["matches"])


def test_a_damaged_registry_artifact_names_the_model_version(projects, tmp_path, monkeypatch):
    a = projects.copy(tmp_path / "a")
    assert drcl(a, monkeypatch, "promote").exit_code == 0
    with np.load(a / "data/prepared/text.npz") as npz:
        np.save(a / "texts.npy", npz["test.features"])
        np.save(a / "queries.npy", npz["test.features"][:2])
    search = ("search", "-q", "text", "--queries", "queries.npy", "--database", "texts.npy",
              "-d", "text", "-k", "2")
    assert drcl(a, monkeypatch, *search).exit_code == 0
    stored = [p for p in a.rglob("encoder.safetensors") if "/encoders/text/" in str(p)]
    assert len(stored) == 1, stored  # the registered text encoder, in the artifact store
    data = bytearray(stored[0].read_bytes())
    data[-40] ^= 0x01
    stored[0].write_bytes(bytes(data))
    message = one_error_line(drcl(a, monkeypatch, *search))
    assert "registry: drcl-encoder-text v1: the stored weights differ from those registered" \
        in message


def test_history_and_rollback_to_any_earlier_set(projects, tmp_path, client, monkeypatch):
    first = projects.copy(tmp_path / "first", quality="weak")
    second = projects.copy(tmp_path / "second")
    third = projects.copy(tmp_path / "third", seed=2)
    for project in (first, second):
        assert drcl(project, monkeypatch, "promote").exit_code == 0
    write_project_params(third, seed=2, promotion={"min_mean_map": 0.0, "min_direction_map": 0.0,
                                                   "min_gain": -1.0})
    assert drcl(third, monkeypatch, "promote").exit_code == 0
    assert aliases(client, SET)["champion"] == "3"
    result = drcl(third, monkeypatch, "rollback", "--to", "1", "--reason", "v3 misbehaves")
    assert result.exit_code == 0 and result.stdout.strip() == "champion: set v1 (was v3)"
    assert aliases(client, SET) == {"champion": "1", "previous": "3"}
    for args, message in ((["--to", "1"], "v1 is the champion already"),
                          (["--to", "9"], "drcl-set v9")):
        assert message in one_error_line(drcl(third, monkeypatch, "rollback", *args))
    listed = drcl(third, monkeypatch, "history", "--format", "json")
    events = json.loads(listed.stdout)
    assert [(e["action"], e["champion"], e["replaces"]) for e in events] == [
        ("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2"),
        ("rollback", "1", "3")]
    assert events[-1]["reason"] == "v3 misbehaves" and "@" in events[-1]["by"]
    table = drcl(third, monkeypatch, "history").stdout.splitlines()
    assert len(table) == 4 and "rollback  v1" in table[-1] and "v3 misbehaves" in table[-1]


def test_refusing_the_same_encoders_again_reuses_their_set(projects, tmp_path, client,
                                                           monkeypatch):
    strong = projects.copy(tmp_path / "strong")
    weak = projects.copy(tmp_path / "weak", quality="weak")
    assert drcl(strong, monkeypatch, "promote").exit_code == 0
    for _ in range(2):
        result = drcl(weak, monkeypatch, "promote")
        assert result.exit_code == EXIT_CHALLENGER and "drcl-set v2 not promoted" in result.stdout
    assert len(client.search_model_versions(f"name = '{SET}'")) == 2
    assert aliases(client, SET) == {"champion": "1", "challenger": "2"}
    # the challenger never cleared the gate: making it champion takes --force and a reason
    refused = one_error_line(drcl(weak, monkeypatch, "rollback", "--to", "2"))
    assert "drcl-set v2 never was champion (" in refused and "give --force" in refused
    refused = one_error_line(drcl(weak, monkeypatch, "rollback", "--to", "2", "--force"))
    assert "--force: say why with --reason" in refused
    assert aliases(client, SET) == {"champion": "1", "challenger": "2"}
    forced = drcl(weak, monkeypatch, "rollback", "--to", "2", "--force", "--reason", "a test")
    assert forced.exit_code == 0, forced.output
    assert aliases(client, SET) == {"champion": "2", "previous": "1"}  # no longer challenger


def test_champion_names_the_set_and_refuses_before_the_first_promotion(projects, tmp_path,
                                                                       client, monkeypatch):
    a = projects.copy(tmp_path / "a")
    message = one_error_line(drcl(a, monkeypatch, "champion"))
    assert "registry: drcl-set has no champion yet; promote one with `drcl promote`" in message
    assert drcl(a, monkeypatch, "promote").exit_code == 0
    shown = drcl(a, monkeypatch, "champion")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("drcl-set v1: models:/drcl-set@champion, prior ")
    assert "  image: drcl-encoder-image v1, 12-d precomputed features" in shown.stdout
    located = drcl(a, monkeypatch, "champion", "--storage-uri")
    assert located.exit_code == 0 and located.stdout.strip().endswith("/artifacts/set")
