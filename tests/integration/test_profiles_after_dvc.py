"""`drcl profile apply` on params.yaml as `dvc exp run -S` rewrites it (block lists, bare nulls
with trailing comments), for each `-S` command README.md shows, typed as a user types them."""

from __future__ import annotations

import re
import shlex
import shutil

import pytest
import yaml

from tests.integration.project import ROOT, run

PROFILES = sorted(path.stem for path in (ROOT / "params").glob("*.yaml"))
PARAMS_ONLY = """\
stages:
  record:    # a stage that reads every group, so that `dvc exp run -S` may set any key
    cmd: python -c "pass"
    params: [seed, device, precision, data, model, prior, train, evaluate, extract]
"""


def readme_settings() -> list[list[str]]:
    """The `-S` arguments of each `dvc exp run` command in README.md."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = [line.split("#")[0] for line in text.splitlines()
                if re.match(r"\s*dvc exp run .*-S", line)]
    found = []
    for command in commands:
        words = shlex.split(command)
        found.append([words[i + 1] for i, word in enumerate(words) if word == "-S"])
    return found


SETTINGS = readme_settings()


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory) -> list[tuple[list[str], str]]:
    """params.yaml as DVC leaves it after each README command (one repository, reset between)."""
    repo = tmp_path_factory.mktemp("repo")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(cmd, repo).returncode == 0
    (repo / "dvc.yaml").write_text(PARAMS_ONLY)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    git = ["git", "-c", "user.name=drcl", "-c", "user.email=drcl@example.com"]
    for cmd in (["git", "add", "-A"], [*git, "commit", "-qm", "a project"]):
        assert run(cmd, repo).returncode == 0
    out = []
    for settings in SETTINGS:
        shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
        done = run(["dvc", "exp", "run", *(arg for s in settings for arg in ("-S", s))], repo)
        assert done.returncode == 0, done.stdout + done.stderr
        out.append((settings, (repo / "params.yaml").read_text()))
    return out


def test_readme_shows_the_commands_checked_here():
    assert len(SETTINGS) >= 6
    assert any("data.modalities=[image,text]" in s for s in SETTINGS)


@pytest.mark.parametrize("profile", PROFILES)
def test_a_profile_applies_to_what_dvc_wrote_and_keeps_its_settings(rewritten, profile,
                                                                    tmp_path):
    for settings, text in rewritten:
        assert text != (ROOT / "params.yaml").read_text()  # DVC did rewrite it
        shutil.copytree(ROOT / "params", tmp_path / "params", dirs_exist_ok=True)
        (tmp_path / "params.yaml").write_text(text)
        done = run(["drcl", "profile", "apply", profile], tmp_path)
        assert done.returncode == 0, f"{settings}: {done.stderr}"
        result = yaml.safe_load((tmp_path / "params.yaml").read_text())
        chosen = yaml.safe_load((ROOT / "params" / f"{profile}.yaml").read_text())
        before = yaml.safe_load(text)
        for group in before:  # every key the profile does not name is as DVC left it
            if group not in chosen:
                assert result[group] == before[group], (settings, group)
                continue
            for key, value in before[group].items():
                want = chosen[group].get(key, value)
                assert result[group][key] == want, (settings, f"{group}.{key}")
        # the lines the profile did not touch are DVC's own, byte for byte
        changed = {line for line in (tmp_path / "params.yaml").read_text().splitlines()}
        kept = [line for line in text.splitlines() if line in changed]
        assert len(kept) >= len(text.splitlines()) - 12, settings
