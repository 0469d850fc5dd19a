"""Schedule files: the project's are valid; a bad one stops with one line naming file and key."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from drcl.cli import app
from drcl.errors import DrclError
from drcl.kfp.schedules import load_schedules
from tests.pipeline.conftest import ROOT


def test_the_projects_schedules_are_valid():
    specs = load_schedules(ROOT / "infra" / "schedules")
    assert specs, "infra/schedules declares no schedule"
    for spec in specs:
        assert spec.max_concurrency == 1 and spec.catchup is False


@pytest.mark.parametrize(("files", "message"), [
    ({"a.yaml": "name: a\ncron: '0 0 2 * * *'\ncatch_up: true\n"}, "a.yaml: catch_up: unknown key"),
    ({"a.yaml": "name: a\ncron: '0 2 * * *'\n"}, "a.yaml: cron: '0 2 * * *' has 5 fields"),
    ({"a.yaml": "cron: '0 0 2 * * *'\n"}, "a.yaml: name: Field required"),
    ({"a.yaml": "name: Nightly\ncron: '0 0 2 * * *'\n"}, "a.yaml: name: String should match"),
    ({"a.yaml": "name: a\ncron: '0 0 2 * * *'\nmax_concurrency: 0\n"},
     "a.yaml: max_concurrency: Input should be greater than or equal to 1"),
    ({"a.yaml": "name: a\ncron: [unclosed\n"}, "a.yaml: not valid YAML"),
    ({"a.yaml": "name: a\ncron: '0 0 2 * * *'\n", "b.yaml": "name: a\ncron: '0 0 3 * * *'\n"},
     "b.yaml: name: 'a' is declared twice"),
])
def test_bad_schedule_files(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DrclError) as err:
        load_schedules(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_folder_through_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["pipeline", "reconcile", "--schedules",
                                      str(tmp_path / "nope"), "--host", "http://kfp.test"])
    assert result.exit_code == 1
    assert result.stderr == f"drcl: error: {tmp_path / 'nope'}: schedules folder not found\n"
