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
