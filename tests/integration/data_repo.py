"""A data repository as a user keeps one: git (a local bare repo as its origin), DVC with its
remote on the S3 test server, and a feature file added, pushed and committed per revision."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def git_server(root: Path) -> Iterator[str]:
    """The repositories under `root` served read-only over git:// on 127.0.0.1 (git daemon), as
    a cluster's tasks reach a git server; yields the base URL. Stopped when the block ends."""
    from tests.services import free_ports

    (port,) = free_ports(1)
    proc = subprocess.Popen(["git", "daemon", f"--base-path={root}", "--export-all",
                             "--reuseaddr", "--listen=127.0.0.1", f"--port={port}", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"git://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["git", "ls-remote", f"{url}/{next(root.glob('*.git')).name}"],
                             capture_output=True, check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"git daemon on port {port} did not start")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
