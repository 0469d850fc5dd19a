"""Credentials are refused wherever they hide in params: URLs, token formats, random keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drcl.config import parse_params
from drcl.credentials import credential_in, entropy_bits, looks_like_secret, url_credentials
from drcl.errors import DrclError

ROOT = Path(__file__).resolve().parents[2]
PAT = "ghp_" + "a1B2c3D4e5" * 4


@pytest.mark.parametrize(("value", "why"), [
    ("https://bob:hunter2@github.com/acme/scenes.git", "a user name and password"),
    ("s3://KEY:secret@bucket/kfp", "a user name and password"),
    (f"https://{PAT}@github.com/acme/scenes.git", "a token as its user name"),
    ("https://example.com/data.git?token=abc", "a credential in its query (token=...)"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Signature=00ff", "(X-Amz-Signature=...)"),
])
def test_urls_with_credentials(value, why):
    assert why in url_credentials(value)


@pytest.mark.parametrize("value", [
    "https://github.com/acme/scenes.git", "git@github.com:acme/scenes.git",
    "s3://drcl-artifacts/drcl-store", "http://mlflow:5000", "file:///srv/scenes",
    "https://example.com/x?rev=main", "data/scene.npz",
])
def test_urls_without_credentials(value):
    assert credential_in(value) is None


@pytest.mark.parametrize("value", [
    PAT, "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv", "glpat-abcdefghij0123456789",
    "AKIAIOSFODNN7EXAMPLE", "Zx8kQ2mP9vL4nR7tY1wB3cD6fG",
])
def test_token_like_values(value):
    assert looks_like_secret(value)


@pytest.mark.parametrize("value", [
    "registry.example.com/drcl:0.1.0-cuda", "0123456789abcdef0123456789abcdef01234567",
    "efficientnet_lite0", "drcl-experiment-nightly-2026", "sentence-transformers/all-MiniLM",
])
def test_ordinary_values_pass(value):
    assert credential_in(value) is None


def test_entropy_by_hand():
    assert entropy_bits("aaaa") == 0.0
    assert entropy_bits("abcd") == 2.0
    assert entropy_bits("0123456789abcdef" * 2) == 4.0  # hex digests: never above the bar


@pytest.mark.parametrize(("raw", "key"), [
    ({"data": {"source": "npz", "path": "x.npz",
               "dvc": {"repo": "https://bob:hunter2@github.com/acme/scenes.git"}}},
     "data.dvc.repo: the URL carries a user name and password"),
    ({"kubeflow": {"pipeline_root": "s3://KEY:secret@bucket/kfp"}},
     "kubeflow.pipeline_root: the URL carries a user name and password"),
    ({"kubeflow": {"env": {"GITHUB_PAT": PAT}}},
     "kubeflow.env.GITHUB_PAT: the value has the form of an issued access token"),
    ({"kubeflow": {"env": {"DATA_URL": "https://example.com/d?token=abc"}}},
     "kubeflow.env.DATA_URL: the URL carries a credential in its query"),
])
def test_params_refuse_them_naming_the_key(raw, key):
    with pytest.raises(DrclError, match=key.replace(".", r"\.").replace("(", r"\(")):
        parse_params(raw)


def test_compile_refuses_and_writes_nothing(tmp_path):
    """As a user types it: `drcl pipeline compile` on such a params file."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] |= {"source": "npz", "path": "data/scene.npz", "dvc": {
        "repo": "https://bob:hunter2@github.com/acme/scenes.git", "rev": "main"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([str(Path(sys.executable).parent / "drcl"), "pipeline", "compile",
                           "-o", "out.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "data.dvc.repo: the URL carries a user name and password" in done.stderr
    assert "hunter2" not in done.stderr and not (tmp_path / "out.yaml").exists()
