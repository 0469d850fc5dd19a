"""A feature data set versioned with DVC on a real S3 server (SeaweedFS on 127.0.0.1): push,
lose the local cache and outputs, pull back the same bytes; and the bucket check's errors."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest

from drcl.errors import DrclError
from drcl.storage import check_bucket
from tests.integration.project import copy_pipeline, run, write_features, write_params

pytestmark = pytest.mark.slow
TRACKED = ("data/extracted", "data/prepared")


def checksums(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in TRACKED for p in sorted((repo / folder).rglob("*")) if p.is_file()}


@pytest.fixture
def repo(tmp_path) -> Path:
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(cmd, tmp_path).returncode == 0
    copy_pipeline(tmp_path)
    write_features(tmp_path / "features.npz")
    write_params(tmp_path, data={"source": "npz", "path": "features.npz",
                                 "modalities": ["image", "text", "audio"]})
    return tmp_path


def test_push_then_pull_restores_identical_data(repo, s3_server):
    env = s3_server.env()
    made = run(["dvc", "repro", "prepare"], repo, env)
    assert made.returncode == 0, made.stdout + made.stderr
    before = checksums(repo)
    assert "data/prepared/manifest.json" in before and "data/extracted/extraction.json" in before

    check = run(["drcl", "storage", "check", "--bucket", "s3://drcl-features/dvc", "--create"],
                repo, env)
    assert check.returncode == 0, check.stderr
    assert "bucket 'drcl-features'" in check.stdout and "created" in check.stdout
    for cmd in (["dvc", "remote", "add", "-d", "store", "s3://drcl-features/dvc"],
                ["dvc", "remote", "modify", "store", "endpointurl", s3_server.endpoint]):
        assert run(cmd, repo, env).returncode == 0
    pushed = run(["dvc", "push"], repo, env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr

    shutil.rmtree(repo / ".dvc" / "cache")
    for folder in TRACKED:
        shutil.rmtree(repo / folder)
    pulled = run(["dvc", "pull", "--with-deps", "prepare"], repo, env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert checksums(repo) == before
    status = run(["dvc", "status", "prepare"], repo, env)
    # the pulled outputs match dvc.lock (the stage itself always runs: it reads outside files)
    assert "modified" not in status.stdout and "deleted" not in status.stdout, status.stdout


def test_wrong_credentials_are_named(repo, s3_server):
    env = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    result = run(["drcl", "storage", "check", "--bucket", "drcl-denied", "--create"], repo, env)
    assert result.returncode == 1
    assert result.stderr.startswith("drcl: error: S3 at http://127.0.0.1:")
    assert "refused the credentials for bucket 'drcl-denied'" in result.stderr
    assert "AWS_SECRET_ACCESS_KEY" in result.stderr and result.stderr.count("\n") == 1


def test_missing_bucket_and_unreachable_endpoint(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    with pytest.raises(DrclError, match="bucket 'drcl-absent' does not exist at .*--create"):
        check_bucket("drcl-absent")
    assert check_bucket("drcl-absent", create=True).created
    assert not check_bucket("drcl-absent").created
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(DrclError, match=f"S3 endpoint {closed} is unreachable"):
        check_bucket("drcl-absent", endpoint_url=closed, timeout=2)
    with pytest.raises(DrclError, match="does not name a bucket"):
        check_bucket("s3://ab/prefix")


def test_a_fresh_clone_pulls_a_run_it_need_not_repeat(tmp_path, s3_server):
    """Models and data from the remote, metrics and plots from git: the clone's `dvc repro`
    reruns nothing after the data steps, and `dvc metrics show` has the results."""
    env = s3_server.env()
    origin = tmp_path / "origin"
    origin.mkdir()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(cmd, origin, env).returncode == 0
    copy_pipeline(origin)
    write_features(origin / "features.npz")
    write_params(origin, data={"source": "npz", "path": "features.npz",
                               "modalities": ["image", "text"]})
    assert run(["drcl", "storage", "check", "--bucket", "drcl-runs", "--create"], origin,
               env).returncode == 0
    assert run(["dvc", "remote", "add", "-d", "store", "s3://drcl-runs/dvc"], origin,
               env).returncode == 0
    made = run(["dvc", "repro"], origin, env)
    assert made.returncode == 0, made.stderr
    assert run(["dvc", "push"], origin, env).returncode == 0
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    assert run(["git", "add", "-A"], origin, env).returncode == 0
    assert run([*git, "commit", "-qm", "a run"], origin, env).returncode == 0
    clone = tmp_path / "clone"
    assert run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env).returncode == 0
    shutil.copy(origin / "features.npz", clone / "features.npz")  # the user's own file
    pulled = run(["dvc", "pull"], clone, env)
    assert pulled.returncode == 0, pulled.stderr
    shown = run(["dvc", "metrics", "show", "--json"], clone, env)
    assert "image->text" in shown.stdout
    again = run(["dvc", "repro"], clone, env)
    assert again.returncode == 0, again.stderr
    ran = {line.split("'")[1] for line in again.stdout.splitlines()
           if line.startswith("Running stage")}
    assert ran == {"resolve", "extract", "prepare"}, again.stdout
