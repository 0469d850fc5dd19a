"""The DVC promotion stage is off by default: outside `dvc repro`, after evaluation when asked."""

from __future__ import annotations

import shutil

from tests.integration.project import ROOT, run


def test_promotion_runs_only_when_asked_and_after_evaluation(tmp_path):
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    shutil.copytree(ROOT / "release", tmp_path / "release")
    assert run(["dvc", "init", "--no-scm", "-q"], tmp_path).returncode == 0
    default = run(["dvc", "dag", "--md", "dvc.yaml"], tmp_path)
    assert default.returncode == 0, default.stderr
    assert "evaluate" in default.stdout and "promote" not in default.stdout
    asked = run(["dvc", "dag", "--md", "release/dvc.yaml:promote"], tmp_path)
    assert asked.returncode == 0, asked.stderr
    nodes = {line.split('["')[1].rstrip('"]'): line.split("[")[0].strip()
             for line in asked.stdout.splitlines() if '["' in line}
    assert f"{nodes['evaluate']}-->{nodes['release/dvc.yaml:promote']}" in asked.stdout
