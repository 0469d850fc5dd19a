"""Data sets read by reference from a DVC repository whose remote is a real S3 server: the
revision is resolved on every read, what was read is recorded, and bad references fail in
one line."""

from __future__ import annotations

import json

import pytest

from drcl.config import parse_params
from drcl.data.dataset import load_manifest, load_modality
from drcl.data.prepare import prepare_dataset
from drcl.errors import DrclError
from tests.integration.data_repo import data_repository, git_http_server, publish
from tests.integration.project import run, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path, s3_server, monkeypatch):
    env = s3_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DRCL_CACHE_DIR", str(tmp_path / "cache"))
    origin, work = data_repository(tmp_path, env, "drcl-versioned")
    return origin, work, env


def params(origin, rev="main", path="data/features.npz"):
    return parse_params({"seed": 0, "data": {"source": "npz", "path": path,
                                             "dvc": {"repo": f"file://{origin}", "rev": rev},
                                             "modalities": ["image", "text"]}})


def test_a_branch_is_followed_and_what_was_read_is_recorded(repo, tmp_path):
    origin, work, env = repo
    first = publish(work, env, seed=0, message="revision A")
    manifest = prepare_dataset(params(origin), out_dir=tmp_path / "a")
    assert manifest.source["commit"] == first and manifest.source["rev"] == "main"
    md5_a = manifest.source["dvc_md5"]
    assert load_manifest(tmp_path / "a").source == manifest.source
    second = publish(work, env, seed=1, message="revision B")
    again = prepare_dataset(params(origin), out_dir=tmp_path / "b")
    assert again.source["commit"] == second and again.source["dvc_md5"] != md5_a
    pinned = prepare_dataset(params(origin, rev=first), out_dir=tmp_path / "c")
    assert pinned.source["dvc_md5"] == md5_a
    assert (load_modality(tmp_path / "c", "image").train.features
            == load_modality(tmp_path / "a", "image").train.features).all()


def test_bad_references_are_one_line(repo, tmp_path):
    origin, work, env = repo
    publish(work, env, seed=0, message="revision A")
    (work / "notes.npz").write_bytes(b"x")
    for cmd in (["git", "add", "notes.npz"],
                ["git", "-c", "user.name=d", "-c", "user.email=d@e", "commit", "-qm", "git"],
                ["git", "push", "-q", "origin", "HEAD:main"]):
        assert run(cmd, work, env).returncode == 0
    for data, message in (
            (params(origin, rev="no-such-branch"), "unknown Git revision 'no-such-branch'"),
            (params(origin, path="data/absent.npz"), "data.path: 'data/absent.npz' is not in"),
            (params(origin, path="notes.npz"), "is not tracked by DVC"),
            (params(tmp_path / "nowhere"), "No git repository was found at")):
        with pytest.raises(DrclError) as err:
            prepare_dataset(data, out_dir=tmp_path / "out")
        assert message in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / "out").exists()


def test_data_on_s3_named_by_url_is_refused_at_once():
    with pytest.raises(DrclError, match=r"data.path: 's3://bucket/features.npz' is "
                                        r"a URL, which no step can read"):
        parse_params({"data": {"source": "npz", "path": "s3://bucket/features.npz"}})


def test_a_prepared_data_set_is_a_source(repo, tmp_path):
    """Another run's data/prepared, DVC-tracked and pushed, read by reference as it is."""
    origin, work, env = repo
    publish(work, env, seed=0, message="features")
    made = prepare_dataset(params(origin), out_dir=work / "data" / "prepared")
    for cmd in (["dvc", "add", "-q", "data/prepared"], ["dvc", "push", "-q"],
                ["git", "add", "-A"],
                ["git", "-c", "user.name=d", "-c", "user.email=d@e", "commit", "-qm", "prep"],
                ["git", "push", "-q", "origin", "HEAD:main"]):
        done = run(cmd, work, env)
        assert done.returncode == 0, (cmd, done.stderr)
    reread = prepare_dataset(parse_params({"data": {
        "source": "prepared", "path": "data/prepared",
        "dvc": {"repo": f"file://{origin}", "rev": "main"}}}), out_dir=tmp_path / "again")
    assert reread.source["dvc_md5"].endswith(".dir")
    for m in made.modalities:
        before, after = (load_modality(d, m) for d in (work / "data/prepared", tmp_path / "again"))
        assert (before.test.features == after.test.features).all()
        assert before.test.ids.tolist() == after.test.ids.tolist()
    assert json.loads((tmp_path / "again/manifest.json").read_text())["paired"] is False


def test_a_private_data_repository_is_read_with_credentials_from_the_environment(repo, tmp_path):
    """A git host that wants a password: `drcl prepare` without credentials stops with one line
    that says which variables to set; with DRCL_GIT_USERNAME/DRCL_GIT_PASSWORD exported (a
    Secret's keys on a cluster) it reads the data, and the password is written nowhere."""
    origin, work, env = repo
    commit = publish(work, env, seed=0, message="revision A")
    project = tmp_path / "project"
    project.mkdir()
    password = "tok-3f9a1c7e5b"
    with git_http_server(origin.parent, username="bob", password=password) as (url, seen):
        write_params(project, data={"source": "npz", "path": "data/features.npz",
                                    "modalities": ["image", "text"],
                                    "dvc": {"repo": f"{url}/{origin.name}", "rev": "main"}})
        refused = run(["drcl", "prepare"], project, {**env, "GIT_ASKPASS": ""})
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "DRCL_GIT_USERNAME and DRCL_GIT_PASSWORD" in lines[0], lines
        assert not (project / "data/prepared").exists() and ("bob", 200) not in seen

        wrong = run(["drcl", "prepare"], project, {**env, "GIT_ASKPASS": "",
                                                  "DRCL_GIT_USERNAME": "bob",
                                                  "DRCL_GIT_PASSWORD": "not-it"})
        assert wrong.returncode == 1 and "DRCL_GIT_PASSWORD" in wrong.stderr, wrong.stderr

        done = run(["drcl", "prepare"], project, {**env, "GIT_ASKPASS": "",
                                                 "DRCL_GIT_USERNAME": "bob",
                                                 "DRCL_GIT_PASSWORD": password})
        assert done.returncode == 0, done.stderr
        assert ("bob", 200) in seen
    assert load_manifest(project / "data/prepared").source["commit"] == commit
    written = [p for p in project.rglob("*") if p.is_file()]
    assert written and not any(password.encode() in p.read_bytes() for p in written)
