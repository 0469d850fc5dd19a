"""The commands of README.md, run as a user types them.

Every ```bash block of the README carries a marker on the line above it,
``<!-- readme-test: SCENARIO -->``, or ``<!-- readme-test: none (why) -->`` for a block that
cannot run here (a cluster). Each scenario below copies the working tree into a temporary git
repository, gives it what the README says the user has (their feature file, manifest or
credentials), sets fast params (small widths, few epochs: the README's commands are unchanged,
the slice is small), runs the scenario's blocks in README order with bash, and checks what they
left. A README edit that breaks a command, or a block without a scenario, fails the suite.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from drcl.examples import write_scene
from drcl.profiles import apply_profile, read_profile
from drcl.tensor_files import read_tensor_metadata
from tests.integration.project import validation_map

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
REAL_WIKIPEDIA = ROOT.parent / "shared" / "data" / "wikipedia"
MARKER = re.compile(r"^<!-- readme-test: (?P<scenario>[a-z0-9-]+)(?: \((?P<why>[^)]+)\))? -->$")
FAST = {"device": "cpu",
        "model": {"hidden_dim": 32, "common_dim": 16},
        "train": {"epochs": 4, "batch_size": 32, "lr": 3e-3},
        "promotion": {"min_mean_map": 0.0, "min_direction_map": 0.0}}


@dataclass(frozen=True)
class Block:
    line: int
    scenario: str
    why: str | None
    code: str


def readme_blocks(text: str) -> list[Block]:
    """The README's ```bash blocks with the scenario each one's marker names."""
    lines = text.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != "```bash":
            continue
        above = next((lines[i] for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.match(above.strip())
        end = lines.index("```", number + 1)
        blocks.append(Block(number + 1, marker["scenario"] if marker else "",
                            marker["why"] if marker else None, "\n".join(lines[number + 1:end])))
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_every_block_has_a_scenario_or_says_why_not():
    known = {*SCENARIOS, *PARTS, "none"}
    for block in BLOCKS:
        assert block.scenario in known, (
            f"README.md:{block.line}: mark the block with <!-- readme-test: SCENARIO --> "
            f"(one of {sorted(SCENARIOS)}) or <!-- readme-test: none (why) -->")
        if block.scenario == "none":
            assert block.why, f"README.md:{block.line}: say why the block is not run"
    assert {b.scenario for b in BLOCKS} >= {*SCENARIOS, *PARTS}, "a scenario lost its README block"


# ---------------------------------------------------------------- the temporary project


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    def run_blocks(self, scenario: str, given: dict[str, str] | None = None,
                   between: Callable[[int], None] | None = None) -> list[str]:
        """Run the scenario's blocks in order; `given` values replace the README's
        placeholders in `export NAME=...` lines (the user's own credentials); `between(i)`
        runs after block i (what the README says happens meanwhile)."""
        outputs = []
        for index, block in enumerate(b for b in BLOCKS if b.scenario == scenario):
            if between is not None and index:
                between(index - 1)
            code = _with_given(block.code, given or {})
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=self.root,
                                    env=self.env, capture_output=True, text=True, timeout=900,
                                    check=False)
            assert result.returncode == 0, (
                f"README.md:{block.line} failed ({result.returncode}):\n{code}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
            outputs.append(result.stdout)
        return outputs

    def git(self, *args: str) -> None:
        subprocess.run(["git", *args], cwd=self.root, env=self.env, check=True,
                       capture_output=True)


def _with_given(code: str, given: dict[str, str]) -> str:
    lines = []
    for line in code.splitlines():
        if line.startswith("export ") and given:
            words = shlex.split(line.split("#", 1)[0])[1:]
            names = [w.split("=", 1)[0] for w in words]
            line = "export " + " ".join(f"{n}={shlex.quote(given[n])}" if n in given
                                        else w for n, w in zip(names, words, strict=True))
        lines.append(line)
    return "\n".join(lines)


def _working_tree() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    return [p for p in listed.split("\0") if p and (ROOT / p).is_file()]


@pytest.fixture
def project(tmp_path, uci_cache, empty_mlflow_store) -> Callable[..., Project]:
    """A copy of the working tree as a fresh git repository with fast params committed."""
    def make(**groups: dict) -> Project:
        root = tmp_path / "repo"
        for relative in _working_tree():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, root / relative)
        venv = Path(sys.prefix)
        if (venv / "bin" / "activate").is_file():
            (root / ".venv").symlink_to(venv)
        store = tmp_path / "store" / "mlflow.db"
        store.parent.mkdir()
        shutil.copyfile(empty_mlflow_store, store)
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DRCL_CACHE_DIR": str(uci_cache),
               "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
        for name in ("MLFLOW_REGISTRY_URI", "DRCL_PIPELINE_RUN_ID", "VIRTUAL_ENV"):
            env.pop(name, None)
        settings = tmp_path / "fast.yaml"
        settings.write_text(yaml.safe_dump(_merged(FAST, groups)))
        apply_profile(settings, root / "params.yaml")
        found = Project(root, env)
        found.git("init", "-q")
        found.git("add", "-A")
        found.git("commit", "-qm", "the project, with fast params")
        return found
    return make


def _merged(base: dict, more: dict) -> dict:
    out = dict(base)
    for key, value in more.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def metrics(project: Project) -> dict:
    return json.loads((project.root / "metrics" / "eval.json").read_text())


# ---------------------------------------------------------------- what the user brings


def write_wikipedia_slice(dest: Path, *, train: int = 120, test: int = 260) -> Path:
    """The first rows of the real release in its own layout: the README's commands unchanged,
    a fraction of the work (the protocol keeps 231 test rows for validation)."""
    from scipy.io import loadmat, savemat

    dest.mkdir(parents=True)
    shutil.copy(REAL_WIKIPEDIA / "categories.list", dest)
    kept = {}
    for name, rows in (("trainset_txt_img_cat.list", train), ("testset_txt_img_cat.list", test)):
        lines = (REAL_WIKIPEDIA / name).read_text().splitlines()[:rows]
        (dest / name).write_text("\n".join(lines) + "\n")
        kept[name] = [line.split("\t")[0] for line in lines]
    (dest / "texts").mkdir()
    for text_id in (t for ids in kept.values() for t in ids):
        (dest / "texts" / f"{text_id}.xml").symlink_to(REAL_WIKIPEDIA / "texts" / f"{text_id}.xml")
    features = loadmat(REAL_WIKIPEDIA / "raw_features.mat")
    savemat(dest / "raw_features.mat", {
        "I_tr": features["I_tr"][:train], "T_tr": features["T_tr"][:train],
        "I_te": features["I_te"][:test], "T_te": features["T_te"][:test]})
    return dest


# ---------------------------------------------------------------- the scenarios


def scenario_dvc(project):
    """Quick start: the DVC commands after `make repro`, on three views of the default data."""
    p = project(data={"modalities": ["kar", "mor"]})
    out = p.run_blocks("dvc")
    assert "kar->mor" in out[0]  # dvc metrics show
    assert (p.root / "dvc_plots" / "index.html").is_file()
    assert yaml.safe_load((p.root / "params.yaml").read_text())["precision"] == "bf16"
    assert json.loads((p.root / "metrics/prior.json").read_text())["precision"] == "bf16"
    experiments = subprocess.run(["dvc", "exp", "list", "--name-only"], cwd=p.root, env=p.env,
                                 capture_output=True, text=True, check=True).stdout.split()
    assert len(experiments) == 1
    assert metrics(p)["map_all"]["mean"] > 0.3  # ten classes: chance is about 0.1

    # the validation search, applied and reproduced by `dvc repro`
    out = p.run_blocks("tune")
    assert "Running stage 'prior'" not in out[0]  # the search and the rerun kept the prior
    best = yaml.safe_load((p.root / "tune" / "best.yaml").read_text())["train"]["per_modality"]
    assert yaml.safe_load((p.root / "params.yaml").read_text())["train"]["per_modality"] == best
    rows = list(csv.DictReader((p.root / "tune" / "trials.csv").open()))
    assert {r["study"] for r in rows} == {"drcl.kar", "drcl.mor"}
    last = max(float(r["val_map_all"]) for r in rows
               if r["study"] == "drcl.mor" and r["state"] == "COMPLETE")
    assert validation_map(p.root) == pytest.approx(last, abs=1e-6)

    # zero-shot on the same data, two digits held out under the semantic prior
    out = p.run_blocks("zero-shot")
    report = metrics(p)
    assert set(report) == {"map_all", "map_at_50", "unseen", "seen"}
    manifest = json.loads((p.root / "data/prepared/manifest.json").read_text())
    assert manifest["unseen_classes"] == ["3", "8"]
    assert "classes unseen in training (zero-shot): MAP@all" in out[0]

    # re-ranking, chosen on validation: only evaluate reruns
    out = p.run_blocks("rerank")
    assert "Running stage 'evaluate'" in out[0] and "Running stage 'train" not in out[0]
    report = metrics(p)
    chosen = report["rerank"]
    assert chosen["dba_k"] in (0, 5, 10) and chosen["qe_k"] in (0, 5, 10)
    assert chosen["val_map_all"] >= chosen["val_map_all_off"]
    assert "re-ranked (" in out[0] and "chosen on validation): MAP@all " in out[0]

    # seed ensembles: the same prior, every encoder three members
    out = p.run_blocks("ensemble")
    assert "Running stage 'prior'" not in out[0] and "Running stage 'train@kar'" in out[0]
    for m in ("kar", "mor"):
        meta = read_tensor_metadata(p.root / f"models/encoders/{m}.safetensors")
        assert meta["ensemble"] == "3"
    assert metrics(p)["map_all"]["mean"] > 0.3


def scenario_own_npz(project):
    """Your own features: a three-view npz file, versioned with DVC, trained with -S settings
    and nothing else; then the same data with shared label noise, corrected with the
    cross-modal cost (the README's noise block)."""
    p = project(train={"correction": {"warmup": 2}})  # the fast params train 4 epochs
    out = p.run_blocks("own-npz")
    report = metrics(p)
    assert set(report["map_all"]) == {"mean"} | {f"view{a}->view{b}" for a in range(3)
                                                 for b in range(3) if a != b}
    assert report["map_all"]["mean"] > 0.5  # four classes: chance is about 0.25
    assert "view0->view1" in out[0]  # dvc metrics show
    manifest = json.loads((p.root / "data/prepared/manifest.json").read_text())
    assert manifest["paired"] is True  # view0 and view1 share ids
    chosen = {v: json.loads((p.root / f"metrics/train/{v}.json").read_text())["standardize"]
              for v in ("view0", "view1", "view2")}
    assert all(c["how"] == "auto" for c in chosen.values())

    out = p.run_blocks("noise")
    noise = json.loads((p.root / "data/prepared/manifest.json").read_text())["noise"]
    assert (noise["kind"], noise["rate"], noise["scope"]) == ("symmetric", 0.4, "shared")
    realised = noise["realised"]
    assert realised["view0"] == realised["view1"]  # one draw per item: paired views agree
    assert abs(realised["view2"]["train"] - 0.4) < 0.15  # its own items, drawn with the rest
    for view in ("view0", "view1", "view2"):
        history = (p.root / f"plots/train/{view}.csv").read_text()
        assert "correction_label_accuracy" in history.splitlines()[0]
    rows = [line.split()[0] for line in out[0].splitlines()[-3:]]
    assert rows == ["view0", "view1", "view2"]  # drcl metrics: the MAP table, a row per query


def scenario_raw(project):
    """Raw photos and captions listed in a manifest (the example's): extracted, trained,
    promoted, indexed and searched, the results naming the manifest's items; then served, and a
    third modality added to the champions, rolled back and forth."""
    p = project()
    out = p.run_blocks("raw")
    with (p.root / "data/raw/manifest.csv").open() as rows:
        ids = sorted({row["id"] for row in csv.DictReader(rows)})
    report = json.loads((p.root / "data/extracted/extraction.json").read_text())
    assert report["extractors"] == {"image": "efficientnet_lite0", "scan": "efficientnet_lite0",
                                    "text": "minilm"}
    assert json.loads((p.root / "data/prepared/manifest.json").read_text())["paired"] is True
    assert out[1].startswith("champion: drcl-set v1")
    table = [line.split() for line in out[1].splitlines()
             if line.startswith("d") and line.split()[1:2] in (["1"], ["2"], ["3"])]
    assert table, out[1]
    assert {row[0] for row in table} | {row[2] for row in table} <= set(ids)
    serve_the_champions(p, ids)
    the_registry(p)
    indexes(p, ids)


def serve_the_champions(p: Project, ids: list[str]) -> None:
    """The champions through plain MLflow: loaded by alias, then `mlflow models serve` started
    as the README shows it (in the background, as in a second terminal) and asked with curl."""
    from tests.services import running

    (server,) = [b.code for b in BLOCKS if b.scenario == "serve-server"]
    with running(server, health="http://127.0.0.1:5001/ping", cwd=p.root, env=p.env,
                 log=p.root.parent / "serve.log", timeout=120):
        out = p.run_blocks("serve")
    assert out[0].startswith("drcl-set v1: models:/drcl-set@champion")
    assert "image: drcl-encoder-image v1, 1280-d efficientnet_lite0 features" in out[0]
    (line,) = [x for x in out[0].splitlines() if x.startswith("q1 ")]
    by_python = [m[0] for m in ast.literal_eval(line.removeprefix("q1 "))]
    answers, rest = [], out[1].strip()
    while rest:
        answer, end = json.JSONDecoder().raw_decode(rest)
        answers.append(answer)
        rest = rest[end:].strip()
    found, refused = answers
    (q1,) = found["predictions"]
    assert q1["query"] == "q1" and [m["id"] for m in q1["matches"]] == by_python
    assert set(by_python) <= set(ids) and len(by_python) == 3
    assert refused == {**refused, "error_code": "INVALID_PARAMETER_VALUE",
                       "message": "query q2: 3-d features, but the image encoder "
                                  "(drcl-encoder-image v1) takes 1280-d efficientnet_lite0 "
                                  "features"}


def indexes(p: Project, ids: list[str]) -> None:
    """An index built, grown and shrunk by id, then searched."""
    out = p.run_blocks("index")
    lines = out[0].strip().splitlines()
    assert lines[0].startswith("texts.npz: ") and lines[0].endswith("exact (flat, inner product)")
    assert lines[3] == "texts.npz: 2 items removed, 58 left", lines
    found = [line.split() for line in lines[4:] if line.split()[1:2] in (["1"], ["2"], ["3"])]
    assert found and {row[2] for row in found} <= set(ids) - {"d007", "d042"}


def the_registry(p: Project) -> None:
    """History, rollbacks and a new modality, after the raw block's promotion."""
    from mlflow import MlflowClient

    out = p.run_blocks("registry")
    assert "champion: drcl-set v2" in out[0], out[0]
    assert "promote   v2" in out[0] and "(was v1)" in out[0]
    client = MlflowClient(tracking_uri=p.env["MLFLOW_TRACKING_URI"])
    set_model = client.get_registered_model("drcl-set")
    assert str(set_model.aliases["champion"]) == "2"
    champion = client.get_model_version("drcl-set", "2")
    assert set(json.loads(champion.tags["drcl.members"])) == {"image", "text", "scan"}
    history = json.loads(subprocess.run(["drcl", "history", "--format", "json"], cwd=p.root,
                                        env=p.env, capture_output=True, text=True,
                                        check=True).stdout)
    assert [(e["action"], e["champion"]) for e in history] == [
        ("promote", "1"), ("promote", "2"), ("rollback", "1"), ("rollback", "2")]
    assert history[2]["reason"] == "v2 ranks our queries worse"


def scenario_profiles(project, tmp_path):
    """The Wikipedia profiles, then the same data set as -S settings (a slice of the release)."""
    if not REAL_WIKIPEDIA.is_dir():
        pytest.skip(f"the Wikipedia release is not at {REAL_WIKIPEDIA}")
    p = project()
    (p.root / "data").mkdir(exist_ok=True)
    (p.root / "data" / "wikipedia").symlink_to(write_wikipedia_slice(tmp_path / "wikipedia"))
    out = p.run_blocks("profiles")
    assert {"uci_mfeat", "wikipedia_lda", "wikipedia_minilm"} <= set(out[0].split())
    assert set(metrics(p)["map_all"]) == {"mean", "image->text", "text->image"}
    experiments = subprocess.run(["dvc", "exp", "list", "--name-only"], cwd=p.root, env=p.env,
                                 capture_output=True, text=True, check=True).stdout.split()
    assert len(experiments) == 2
    # the profile and the -S settings name the same data set
    lda = read_profile(p.root / "params" / "wikipedia_lda.yaml")["data"]
    assert (lda["source"], lda["path"], lda["modalities"]) == (
        "wikipedia_svcl", "data/wikipedia", ["image", "text"])


def scenario_s3(project, s3_server):
    """The data set pushed to a real S3 server with the user's credentials from the
    environment."""
    import boto3

    p = project(data={"source": "npz", "path": "data/scene.npz", "modalities": ["view0"]})
    write_scene(p.root / "data" / "scene.npz")
    made = subprocess.run(["dvc", "repro", "prepare"], cwd=p.root, env=p.env,
                          capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    env = s3_server.env()
    p.env = {k: v for k, v in p.env.items() if not k.startswith("AWS_")}
    p.env["AWS_DEFAULT_REGION"] = env["AWS_DEFAULT_REGION"]
    p.run_blocks("s3", given=env)
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    assert s3.list_objects_v2(Bucket="drcl-data", Prefix="dvc/").get("KeyCount", 0) > 0


def scenario_kubeflow(project, s3_server, tmp_path):
    """The pipeline reads a data set by DVC reference (a git origin, its DVC remote on the S3
    server): a first run, a new revision pushed to the branch and a run that trains on it, then
    a run with nothing changed that trains nothing. The data set holds two classes out and the
    prior is the semantic one, so zero-shot retrieval runs on the cluster's path too. Then the
    tuning pipeline on the same data (reusing its prior), its result applied and trained."""
    from mlflow import MlflowClient

    from tests.integration.data_repo import GIT, data_repository, git_server

    p = project(train={"epochs": 3}, prior={"method": "semantic"},
                tune={"trials": 2, "workers": 2})
    env = s3_server.env()
    p.env.update(env)
    (tmp_path / "scenes").mkdir()
    origin, work = data_repository(tmp_path / "scenes", p.env, "drcl-scenes")
    commits = []

    def publish(seed: int) -> None:
        (work / "data" / "scene.npz").unlink(missing_ok=True)
        write_scene(work / "data" / "scene.npz", seed=seed)
        for cmd in (["dvc", "add", "-q", "data/scene.npz"], ["dvc", "push", "-q"],
                    ["git", "add", "-A"], [*GIT, "commit", "-qm", f"scenes {seed}"],
                    ["git", "push", "-q", "origin", "HEAD:main"]):
            subprocess.run(cmd, cwd=work, env=p.env, check=True, capture_output=True)
        commits.append(subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, env=p.env,
                                      capture_output=True, text=True, check=True).stdout.strip())

    publish(0)
    with git_server(origin.parent) as server:  # reached over the network, as from a cluster
        (p.root / "params" / "scenes.yaml").write_text(yaml.safe_dump({"data": {
            "source": "npz", "path": "data/scene.npz",
            "dvc": {"repo": f"{server}/{origin.name}", "rev": "main"},
            "modalities": ["view0", "view1"], "unseen_classes": ["city", "snow"]}}))
        out = p.run_blocks("kubeflow", between=lambda _: publish(1))
        # the tuning pipeline on the same data: its first tasks are the training pipeline's
        tuned = p.run_blocks("tune-kubeflow")
    lines = tuned[0].splitlines()  # the search's summary, then the training run's
    assert lines[0].startswith("validation MAP@all ") and lines[1].startswith("trials: 4, by 2")
    best = yaml.safe_load((p.root / "tune" / "best.yaml").read_text())["train"]["per_modality"]
    assert yaml.safe_load((p.root / "params.yaml").read_text())["train"]["per_modality"] == best
    runs = [Path(line.removeprefix("outputs in ")).parent for line in lines
            if line.startswith("outputs in ")]
    assert len(runs) == 2
    # the training runs' tasks, from Kubeflow's cache (kfp's log is coloured)
    log = re.sub(r"\x1b\[[0-9;]*m", "", (runs[0] / "kfp.log").read_text())
    assert "Executing task 'tune'" in log and "Executing task 'prior'" not in log
    assert "Executing task 'prepare'" not in log
    assert {line.split()[0] for line in lines if line.endswith("  ran")} <= {
        "train@view0", "train@view1", "evaluate"}
    first = out[0].splitlines()
    assert any(line.startswith("test MAP@all ") and "unseen.MAP@all " in line for line in first)
    assert f"at {commits[0][:12]}" in next(line for line in first if line.startswith("data: "))
    assert any(line.startswith("promotion: champion: drcl-set v1") for line in first)
    assert (p.root / "build" / "drcl-pipeline.yaml").is_file()
    second = out[1].splitlines()
    assert f"at {commits[1][:12]}" in next(line for line in second if line.startswith("data: "))
    assert "train@view0  ran" in second and "train@view1  ran" in second  # new features
    assert second[-2].startswith("nothing changed: every task reused from earlier runs")
    client = MlflowClient(tracking_uri=p.env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("drcl").experiment_id],
                              filter_string="tags.`drcl.kind` = 'pipeline'")
    # one parent run per Kubeflow training run, the tuned one too (the search ran no stage:
    # its trials are the study's own MLflow run)
    assert sorted(r.data.tags["drcl.data_commit"] for r in runs) == sorted(
        [commits[0], *[commits[1]] * 3])
    assert {r.info.status for r in runs} == {"FINISHED"}
    latest = client.get_model_version("drcl-set", max(
        int(v.version) for v in client.search_model_versions("name = 'drcl-set'")))
    assert latest.tags["drcl.data_commit"] == commits[1]


# blocks run inside another scenario: the serving blocks need the raw scenario's champions,
# the noise block a paired data set of the user's
PARTS = {"serve": "raw", "serve-server": "raw", "registry": "raw", "index": "raw",
         "noise": "own-npz",
         "zero-shot": "dvc", "tune": "dvc", "rerank": "dvc",
         "ensemble": "dvc", "tune-kubeflow": "kubeflow"}
SCENARIOS = {"dvc": scenario_dvc, "own-npz": scenario_own_npz, "raw": scenario_raw,
             "profiles": scenario_profiles, "s3": scenario_s3,
             "kubeflow": scenario_kubeflow}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_readme_scenario(name, request):
    scenario = SCENARIOS[name]
    wanted = scenario.__code__.co_varnames[:scenario.__code__.co_argcount]
    scenario(*(request.getfixturevalue(f) for f in wanted))
