"""Shared fixtures: small synthetic data sets in the project's format."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # several workers share the cores: one thread each (and in every process they start), or
    # torch's spinning thread pools slow each other down; the models here are tiny
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import numpy as np
import pytest

from drcl.config import parse_params
from drcl.data.dataset import ModalityData, Split


def make_modality(name: str, *, dim: int, sizes: tuple[int, int, int], classes: int,
                  signal: float, seed: int) -> ModalityData:
    """Class-dependent Gaussian features: `signal` sets how separable the classes are."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    parts = []
    for n in sizes:
        ids = np.arange(n) % classes
        rng.shuffle(ids)
        x = signal * centers[ids] + rng.normal(size=(n, dim))
        parts.append(Split(features=x.astype(np.float32),
                           labels=np.eye(classes, dtype=np.float32)[ids]))
    return ModalityData(name=name, train=parts[0], val=parts[1], test=parts[2])


@pytest.fixture
def synthetic_modality():
    """The factory above, as a fixture (test modules do not import conftest)."""
    return make_modality


@pytest.fixture
def tiny_params():
    """Small widths and few epochs: the whole method in a second or two."""
    def build(**overrides):
        raw = {
            "seed": 0, "device": "cpu", "precision": "fp32",  # the same on any hardware
            "model": {"hidden_dim": 32, "common_dim": 16},
            "train": {"epochs": 5, "batch_size": 32, "lr": 1e-3},
        }
        for key, value in overrides.items():
            node = raw
            *path, last = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
            node[last] = value
        return parse_params(raw)
    return build


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1 for the session; stopped at the end."""
    from tests.services import seaweedfs_s3

    with seaweedfs_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end runs first: with several workers (`make test` runs pytest-xdist) they
    start together instead of one of them finishing the suite alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
