"""`drcl example`: the README's example data, written whole, never over something there."""

from __future__ import annotations

import csv

import numpy as np
from typer.testing import CliRunner

from drcl.cli import app


def test_the_examples_are_written_and_never_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["example", "scene"]).exit_code == 0
    assert runner.invoke(app, ["example", "raw"]).exit_code == 0
    with np.load(tmp_path / "data/scene.npz") as npz:
        assert list(npz["classes"]) == ["beach", "city", "forest", "snow"]
        assert npz["view1.train.features"].shape == (80, 7)
    with (tmp_path / "data/raw/manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["modality"] for r in rows} == {"image", "text", "scan"} and len(rows) == 180
    assert all((tmp_path / "data/raw" / r["path"]).is_file() for r in rows if r["path"])
    before = (tmp_path / "data/scene.npz").read_bytes()
    again = runner.invoke(app, ["example", "scene"])
    assert again.exit_code == 1
    assert again.stderr == ("drcl: error: data/scene.npz: exists already; remove it or name "
                            "another path\n")
    assert (tmp_path / "data/scene.npz").read_bytes() == before
    assert runner.invoke(app, ["example", "raw"]).exit_code == 1
