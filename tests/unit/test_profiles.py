"""Data-set profiles: applied to params.yaml with its comments kept, validated before anything is
written, and undone by applying the default data set's profile."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drcl.cli import app
from drcl.config import load_params
from drcl.errors import DrclError
from drcl.profiles import apply_profile, find_profile, list_profiles

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "params").glob("*.yaml"))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_params_yaml_is_the_default_data_sets_profile(project):
    assert apply_profile(Path("params/uci_mfeat.yaml"), Path("params.yaml")) == []
    assert (project / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_each_profile_applies_and_the_default_one_restores_the_file(project, profile):
    changes = apply_profile(Path("params") / profile.name, Path("params.yaml"))
    params = load_params("params.yaml")
    settings = yaml.safe_load(profile.read_text())
    assert params.data.source == settings["data"]["source"]
    assert params.data.modalities == settings["data"]["modalities"]
    text = (project / "params.yaml").read_text()
    assert "# Every knob of the pipeline" in text and "# stage prepare" in text  # comments kept
    assert all(c.key.split(".")[0] in settings for c in changes)  # nothing else touched
    apply_profile(Path("params/uci_mfeat.yaml"), Path("params.yaml"))
    restored, original = ((p / "params.yaml").read_text() for p in (project, ROOT))
    assert yaml.safe_load(restored) == yaml.safe_load(original)
    # the same lines, but for the space before a comment that a longer value pushed right
    assert [" ".join(line.split()) for line in restored.splitlines()] == \
        [" ".join(line.split()) for line in original.splitlines()]


def test_other_keys_and_their_edits_survive(project):
    text = (project / "params.yaml").read_text().replace("epochs: 60", "epochs: 7")
    (project / "params.yaml").write_text(text)
    apply_profile(Path("params/wikipedia_lda.yaml"), Path("params.yaml"))
    params = load_params("params.yaml")
    assert params.train.epochs == 7 and params.data.path == Path("data/wikipedia")
    assert "  modalities: [image, text]" in (project / "params.yaml").read_text()


@pytest.mark.parametrize(("profile", "message"), [
    ("data:\n  sorce: npz\n", "bad.yaml: data.sorce: unknown key"),
    ("data:\n  source: npz\n", "bad.yaml: data: data.path is required when data.source is 'npz'"),
    ("[1, 2]\n", "bad.yaml: a profile is a mapping of params"),
    ("data: {source: [\n", "bad.yaml: not valid YAML"),
])
def test_a_bad_profile_changes_nothing(project, profile, message):
    (project / "bad.yaml").write_text(profile)
    before = (project / "params.yaml").read_text()
    with pytest.raises(DrclError, match=message):
        apply_profile(project / "bad.yaml", Path("params.yaml"))
    assert (project / "params.yaml").read_text() == before


def test_a_result_that_fails_the_schema_changes_nothing(project):
    text = (project / "params.yaml").read_text().replace("lr_per_modality: {}",
                                                         "lr_per_modality: {fou: 1.0e-3}")
    (project / "params.yaml").write_text(text)
    with pytest.raises(DrclError, match=r"params.yaml with profile .*wikipedia_lda.yaml: "
                                        r"train.lr_per_modality names fou, not in "
                                        r"data.modalities \[image, text\]"):
        apply_profile(Path("params/wikipedia_lda.yaml"), Path("params.yaml"))
    assert (project / "params.yaml").read_text() == text


def test_profiles_are_found_by_name_and_listed(project):
    assert find_profile("wikipedia_lda") == Path("params/wikipedia_lda.yaml")
    with pytest.raises(DrclError, match=r"profile 'wiki': no params/wiki.yaml \(profiles: "
                                        r"openclipart, uci_mfeat, wikipedia_lda, "
                                        r"wikipedia_minilm\)"):
        find_profile("wiki")
    names = dict(list_profiles())
    assert set(names) == {p.stem for p in PROFILES}
    assert all(names.values())  # each says what it is


def test_the_command(project):
    runner = CliRunner()
    result = runner.invoke(app, ["profile", "apply", "wikipedia_minilm"])
    assert result.exit_code == 0, result.output
    assert "params.yaml: data.source: uci_mfeat -> extracted" in result.stdout
    assert "params.yaml: extract.manifest: null -> data/wikipedia" in result.stdout
    again = runner.invoke(app, ["profile", "apply", "wikipedia_minilm"])
    assert again.exit_code == 0 and "nothing changed" in again.stdout
    missing = runner.invoke(app, ["profile", "apply", "nope"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("drcl: error: profile 'nope': no params/nope.yaml")
    listed = runner.invoke(app, ["profile", "list"])
    assert listed.exit_code == 0 and "wikipedia_lda" in listed.stdout


def test_a_new_key_joins_its_group_before_the_blank_line(project):
    (project / "scenes.yaml").write_text(
        "data:\n  source: npz\n  path: scenes.npz\n"
        "  dvc: {repo: 'https://git.example.com/acme/scenes.git', rev: v2}\n")
    apply_profile(project / "scenes.yaml", Path("params.yaml"))
    lines = (project / "params.yaml").read_text().splitlines()
    at = lines.index("  dvc: {repo: 'https://git.example.com/acme/scenes.git', rev: v2}")
    assert lines[at - 1].startswith("  class_text: {}") and lines[at + 1] == ""
    assert load_params("params.yaml").data.dvc.rev == "v2"
