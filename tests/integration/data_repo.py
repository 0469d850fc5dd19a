"""A data repository as a user keeps one: git (a local bare repo as its origin), DVC with its
remote on the S3 test server, and a feature file added, pushed and committed per revision."""

from __future__ import annotations

from pathlib import Path

from tests.integration.project import run, write_features

GIT = ["git", "-c", "user.name=data", "-c", "user.email=data@example.com"]


def data_repository(root: Path, env: dict[str, str], bucket: str) -> tuple[Path, Path]:
    """An origin (bare) and a working clone whose DVC remote is s3://bucket/dvc."""
    origin, work = root / "origin.git", root / "work"
    steps = [(["git", "init", "-q", "--bare", "-b", "main", str(origin)], root),
             (["git", "clone", "-q", str(origin), str(work)], root),
             (["dvc", "init", "-q"], work),
             (["drcl", "storage", "check", "--bucket", bucket, "--create"], work),
             (["dvc", "remote", "add", "-d", "store", f"s3://{bucket}/dvc"], work)]
    for cmd, cwd in steps:
        done = run(cmd, cwd, env)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return origin, work


def publish(work: Path, env: dict[str, str], *, seed: int, message: str) -> str:
    """Write features (from `seed`), dvc add + push them, commit and push; the commit."""
    (work / "data").mkdir(exist_ok=True)
    write_features(work / "data" / "features.npz", seed=seed)
    for cmd in (["dvc", "add", "-q", "data/features.npz"], ["dvc", "push", "-q"],
                ["git", "add", "-A"], [*GIT, "commit", "-qm", message],
                ["git", "push", "-q", "origin", "HEAD:main"]):
        done = run(cmd, work, env)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return run(["git", "rev-parse", "HEAD"], work, env).stdout.strip()
