"""Fixtures for end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.project import write_features, write_params


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A working folder with a small npz source and params for it; the cwd during the test."""
    write_features(tmp_path / "features.npz")
    write_params(tmp_path, data={"source": "npz", "path": "features.npz",
                                 "modalities": ["image", "text", "audio"]})
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def uci_cache(tmp_path_factory) -> Path:
    """One download of the default data set's wheel for the whole session."""
    return tmp_path_factory.mktemp("drcl-cache")


@pytest.fixture(scope="session")
def projects(tmp_path_factory):
    """Registry candidates (data, prior, encoders), each kind built once per session."""
    from tests.integration.registry_helpers import Projects

    return Projects(tmp_path_factory.mktemp("candidates"))


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow sqlite file with its schema; tests copy it rather than wait for a new one."""
    from tests.integration.registry_helpers import empty_store

    return empty_store(tmp_path_factory.mktemp("mlflow-template") / "mlflow.db")


@pytest.fixture
def mlflow_store(tmp_path, empty_mlflow_store, monkeypatch) -> str:
    """A fresh sqlite store for this test, named by MLFLOW_TRACKING_URI."""
    import shutil

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_mlflow_store, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("DRCL_PIPELINE_RUN_ID", raising=False)
    return uri
