"""`drcl extract` then `drcl prepare` on its output, bad input as one line, and the params
variants shipped in params/ (valid against the schema)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from drcl.cli import app
from drcl.config import parse_params

ROOT = Path(__file__).resolve().parents[2]


def drcl(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """Precomputed vectors for two modalities, a manifest, and params pointing at it."""
    rng = np.random.default_rng(0)
    rows = ["id,modality,label,path"]
    for modality, dim in (("a", 3), ("b", 5)):
        np.save(tmp_path / f"{modality}.npy", rng.normal(size=(30, dim)))
        rows += [f"{modality}{i},{modality},{'xy'[i % 2]},{modality}.npy" for i in range(30)]
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    # every row of a .npy matrix needs its row number: give it through JSONL instead
    lines = [f'{{"id": "{m}{i}", "modality": "{m}", "label": "{"xy"[i % 2]}", '
             f'"path": "{m}.npy", "row": {i}}}' for m in "ab" for i in range(30)]
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    sounds = [f"s{i},b,{'xy'[i % 2]},s{i}.wav" for i in range(30)]  # no extractor suits them
    (tmp_path / "sounds.csv").write_text("\n".join(["id,modality,label,path", *sounds]) + "\n")
    write(tmp_path, "items.jsonl")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRCL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def write(folder: Path, manifest: str | None, **extract) -> None:
    params = {"seed": 0, "device": "cpu",
              "data": {"source": "extracted", "modalities": ["a", "b"]},
              "extract": {"manifest": manifest,
                          "extractors": {"a": "precomputed", "b": "precomputed"}, **extract}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def test_extract_then_prepare(project):
    result = drcl("extract")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("items: a 3-d 18/6/6, b 5-d 18/6/6")
    result = drcl("prepare")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("items: 2 classes; a 3-d 18/6/6, b 5-d 18/6/6")


def test_null_manifest_is_a_quiet_no_op(project):
    write(project, None)
    result = drcl("extract")
    assert result.exit_code == 0 and "nothing to extract" in result.stdout
    result = drcl("prepare")
    assert result.exit_code == 1
    assert "data/extracted/extraction.json: the extract stage ran with extract.manifest null" \
        in result.stderr


@pytest.mark.parametrize(("manifest", "extract", "message"), [
    ("items.csv", {}, "60 bad item(s)"),  # a matrix file needs a row per item
    ("absent.csv", {}, "absent.csv: manifest not found"),
    ("sounds.csv", {"extractors": {}}, "modality 'b': cannot tell which extractor suits"),
    ("items.jsonl", {"classes": ["x"]}, "label 'y' is not in the class list"),
    ("items.jsonl", {"on_error": "maybe"}, "params.yaml: extract.on_error: Input should be"),
])
def test_bad_input_is_one_line_and_writes_nothing(project, manifest, extract, message):
    write(project, manifest, **extract)
    result = drcl("extract")
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("drcl: error: ")
    assert not (project / "data" / "extracted").exists()


def test_skipped_items_are_reported_on_stderr(project):
    lines = (project / "items.jsonl").read_text().splitlines()
    lines[3] = lines[3].replace('"row": 3', '"row": 99')
    (project / "items.jsonl").write_text("\n".join(lines) + "\n")
    write(project, "items.jsonl", on_error="skip")
    result = drcl("extract")
    assert result.exit_code == 0, result.output
    assert "1 bad item(s) skipped" in result.stdout
    assert "items.jsonl:4 (a 'a3'): " in result.stderr and "row 99 is out of range" in result.stderr


@pytest.mark.parametrize(("raw", "message"), [
    ({"extract": {"classes": ["a", "a"]}}, "extract.classes: class names must be non-empty"),
    ({"extract": {"image_size": 16}}, "extract.image_size: Input should be greater than"),
    ({"extract": {"extractors": {"image": "resnet"}}}, "extract.extractors.image: Input should"),
    ({"extract": {"manifest_format": "xml"}}, "extract.manifest_format: Input should be"),
    ({"data": {"source": "xmedia"}}, "data.path is required when data.source is 'xmedia'"),
    ({"data": {"source": "coco"}}, "data.source: Input should be"),
])
def test_extract_and_source_params_name_the_key(raw, message):
    from drcl.errors import DrclError

    with pytest.raises(DrclError, match=message):
        parse_params(raw)


def test_a_missing_wikipedia_release_names_extract_manifest(tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from drcl.cli import app

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(root / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["profile", "apply", "wikipedia_minilm"]).exit_code == 0
    result = CliRunner().invoke(app, ["extract"])
    assert result.exit_code == 1
    assert result.stderr == ("drcl: error: extract.manifest: data/wikipedia is not the "
                             "Wikipedia release folder (no categories.list there); link the "
                             "release there (README, \"Ready data sets: profiles\")\n")
