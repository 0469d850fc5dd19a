"""The registry's commit under crashes and pauses.

A process killed right after any single registry write of promote, rollback or add-modality
must leave a champion that is one whole set, encoder aliases that are missing at worst (never
naming another set's encoder), a history that shows every change that committed, and a
`previous` and next rollback that are right. A promoter paused past its lease, or whose lock
was broken by hand, must not commit over the promotion that went on meanwhile.

The commands run in children of a forking driver (tests/integration/registry_driver.py):
imported once, each child a real process that dies with `os._exit` or stops with SIGSTOP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from drcl.cli import app
from drcl.registry import Registry
from tests.integration.registry_helpers import MODALITIES, write_project_params

pytestmark = pytest.mark.slow

SET = "drcl-set"
DRIVER = Path(__file__).with_name("registry_driver.py")
LOOSE = {"min_mean_map": 0.0, "min_direction_map": 0.0, "min_gain": -1.0}


class Driver:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(DRIVER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def start(self, cwd: Path, uri: str, *args: str, crash_after: int = 0,
              stop_at_fence: Path | None = None) -> int:
        request = {"cwd": str(cwd), "tracking_uri": uri, "args": list(args),
                   "crash_after": crash_after,
                   "stop_at_fence": str(stop_at_fence) if stop_at_fence else None}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def result(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def run(self, cwd: Path, uri: str, *args: str, crash_after: int = 0) -> dict:
        self.start(cwd, uri, *args, crash_after=crash_after)
        return self.result()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def driver():
    found = Driver()
    yield found
    found.close()


@pytest.fixture
def champions(projects, tmp_path, empty_mlflow_store, monkeypatch):
    """A store where set v1 (weak encoders) was replaced by v2 (strong ones), and projects
    whose encoders were trained against other priors (`other`, `third`: a loose gate)."""
    weak = projects.copy(tmp_path / "weak", quality="weak")
    strong = projects.copy(tmp_path / "strong")
    other = projects.copy(tmp_path / "other", seed=1)
    # its encoders are strong; what add-modality trains here is weak, and quick
    write_project_params(other, seed=1, quality="weak", promotion=LOOSE)
    third = projects.copy(tmp_path / "third", seed=2)
    write_project_params(third, seed=2, promotion=LOOSE)
    db = tmp_path / "template.db"
    shutil.copyfile(empty_mlflow_store, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    for project in (weak, strong):
        monkeypatch.chdir(project)
        result = CliRunner().invoke(app, ["promote"])
        assert result.exit_code == 0, result.output
    return {"db": db, "other": other, "third": third}


def copy_store(template: Path, dest: Path) -> str:
    shutil.copyfile(template, dest)
    return f"sqlite:///{dest}"


def check_consistent(uri: str, *, committed: list[str], before: str, after: str) -> str:
    """The invariants after a crash; returns the champion (`before` or `after`)."""
    client = MlflowClient(tracking_uri=uri)
    registry = Registry(client, "drcl")
    champion = registry.champion()
    assert champion is not None and champion.version in (before, after)
    for modality, member in champion.members.items():  # one whole set, of one prior
        tags = client.get_model_version(member.model, member.version).tags
        assert tags["drcl.prior_sha256"] == champion.prior_sha256, modality
    for modality in MODALITIES:  # an encoder alias may be missing, never another set's
        model = f"drcl-encoder-{modality}"
        alias = {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}
        member = champion.members.get(modality)
        assert alias.get("champion") in (None, member and member.version), (modality, alias)
    events = registry.events()
    expected = committed + ([after] if champion.version == after else [])
    assert [e["champion"] for e in events] == expected
    assert [e["replaces"] for e in events] == [None, *expected[:-1]]  # a chain, none lost
    return champion.version


def rollback_goes_to(uri: str, project: Path, monkeypatch, *, frm: str, to: str) -> None:
    """The next default rollback goes from `frm` to `to`, and leaves every alias agreeing."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["rollback", "--reason", "after the crash"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"champion: set v{to} (was v{frm})"
    client = MlflowClient(tracking_uri=uri)
    registry = Registry(client, "drcl")
    champion = registry.champion()
    assert champion.version == to
    aliases = {a: str(v) for a, v in client.get_registered_model(SET).aliases.items()}
    assert aliases.get("previous") == frm
    for member in champion.members.values():
        model = client.get_registered_model(member.model)
        assert str(model.aliases.get("champion")) == member.version


@pytest.mark.parametrize(("action", "args", "after"), [
    ("promote", ["promote"], "3"),
    ("rollback", ["rollback", "--reason", "v2 ranks worse"], "1"),
    ("add-modality", ["add-modality", "--modality", "audio"], "3"),
])
def test_a_crash_after_any_registry_write_leaves_a_consistent_registry(
        champions, driver, tmp_path, monkeypatch, action, args, after):
    other = champions["other"]
    counted = driver.run(other, copy_store(champions["db"], tmp_path / "count.db"), *args)
    assert counted["status"] == 0, counted["stderr"]
    total = counted["writes"]
    assert total >= 5
    for k in range(1, total + 1):
        uri = copy_store(champions["db"], tmp_path / f"crash-{k}.db")
        crashed = driver.run(other, uri, *args, crash_after=k)
        assert crashed["status"] in (137, 0), crashed["stderr"]
        now = check_consistent(uri, committed=["1", "2"], before="2", after=after)
        # the next default rollback undoes the last change that committed
        rollback_goes_to(uri, other, monkeypatch, frm=now, to={"3": "2", "2": "1", "1": "2"}[now])


def test_a_promoter_paused_past_its_lease_does_not_commit_over_a_newer_champion(
        champions, driver, tmp_path, monkeypatch):
    """SIGSTOP just before the commit, past a 3 s lease; another promotion commits meanwhile;
    SIGCONT: the first one refuses with one line and the newer champion stays."""
    other, third = champions["other"], champions["third"]
    write_project_params(other, seed=1, quality="weak", promotion=LOOSE,
                         registry={"lock_lease_s": 3})
    uri = copy_store(champions["db"], tmp_path / "paused.db")
    marker = tmp_path / "at-fence"
    pid = driver.start(other, uri, "promote", stop_at_fence=marker)
    _wait_for(marker)
    time.sleep(4)  # the lease runs out while the process is stopped
    newer = _promote_elsewhere(third, uri, monkeypatch)
    os.kill(pid, signal.SIGCONT)
    result = driver.result()
    assert result["status"] == 1, result["stderr"]
    last = result["stderr"].strip().splitlines()[-1]
    assert "lost the drcl-lock ticket" in last and "nothing was committed" in last, last
    check_consistent(uri, committed=["1", "2", newer], before=newer, after="never")


def test_a_promoter_whose_lock_was_broken_by_hand_does_not_commit(
        champions, driver, tmp_path, monkeypatch):
    other, third = champions["other"], champions["third"]
    uri = copy_store(champions["db"], tmp_path / "broken.db")
    marker = tmp_path / "at-fence"
    pid = driver.start(other, uri, "promote", stop_at_fence=marker)
    _wait_for(marker)
    from drcl.registry_lock import TicketLock

    (held,) = [t for t in TicketLock(MlflowClient(tracking_uri=uri), "drcl-lock").tickets()
               if t.live]
    unlocked = subprocess.run(["drcl", "unlock", "--holder", held.holder], cwd=third,
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                              capture_output=True, text=True, check=False)
    assert unlocked.returncode == 0, unlocked.stderr
    newer = _promote_elsewhere(third, uri, monkeypatch)
    os.kill(pid, signal.SIGCONT)
    result = driver.result()
    assert result["status"] == 1, result["stderr"]
    assert "broken by" in result["stderr"].strip().splitlines()[-1]
    check_consistent(uri, committed=["1", "2", newer], before=newer, after="never")


def _wait_for(marker: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert time.monotonic() < deadline, "the promoter never reached its commit"
        time.sleep(0.1)


def _promote_elsewhere(project: Path, uri: str, monkeypatch) -> str:
    """Another promotion while the first promoter is stopped: a newer champion (set v4; the
    stopped one made v3) that the stopped one never measured against."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["promote"])
    assert result.exit_code == 0, result.output
    assert "champion: drcl-set v4 (replaces v2)" in result.stdout, result.stdout
    return "4"
