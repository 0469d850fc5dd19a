"""Fixtures for the Kubeflow pipeline: the project's params, its compiled YAML, a fake client."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drcl.config import Params, load_params
from drcl.kfp.project import compile_pipeline
from tests.pipeline.fake_kfp import FakeClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def project_params() -> Params:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def compiled_file(tmp_path_factory, project_params) -> Path:
    """What `drcl pipeline compile` writes for the project's params.yaml."""
    out = tmp_path_factory.mktemp("compiled") / "drcl-pipeline.yaml"
    compile_pipeline(project_params, out)
    return out


@pytest.fixture(scope="session")
def compiled(compiled_file) -> tuple[dict, dict]:
    """The pipeline spec and the platform (kfp-kubernetes) spec."""
    spec, platform = yaml.safe_load_all(compiled_file.read_text())
    return spec, platform


@pytest.fixture
def fake_client(monkeypatch) -> FakeClient:
    """Every connection made by drcl.kfp.remote gets this client."""
    client = FakeClient()

    def make(host: str, namespace: str | None) -> FakeClient:
        client.host, client.namespace = host, namespace
        return client

    monkeypatch.setattr("drcl.kfp.remote.make_client", make)
    return client


@pytest.fixture(scope="session")
def uci_cache(tmp_path_factory) -> Path:
    """One download of the default data set's wheel for the session."""
    return tmp_path_factory.mktemp("drcl-cache")
