"""A real `mlflow server` on 127.0.0.1 for tests, stopped (with its workers) when done."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services import HOST, free_ports


@contextmanager
def mlflow_server(workdir: Path, *, artifacts: str, env: dict[str, str],
                  store_template: Path | None = None, timeout: float = 90.0) -> Iterator[str]:
    """Serve a sqlite backend with artifacts proxied to `artifacts` (an s3:// URI); yields
    the URL. `env` carries the server's S3 endpoint and credentials; clients need none."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "mlflow.db"
    if store_template is not None:
        shutil.copyfile(store_template, store)  # creating the schema takes seconds
    (port,) = free_ports(1)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", HOST,
           "--port", str(port), "--backend-store-uri", f"sqlite:///{store}",
           "--artifacts-destination", artifacts, "--workers", "1"]
    server_env = {**os.environ, **env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=workdir, env=server_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}; see "
                                   f"{workdir}/server.log")
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server not up after {timeout}s") from None
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
