"""A real `mlflow server` on 127.0.0.1 for tests, stopped (with its workers) when done."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services import HOST, free_ports, running


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
    url = f"http://{HOST}:{port}"
    with running(cmd, health=url + "/health", cwd=workdir, env=server_env,
                 log=workdir / "server.log", timeout=timeout):
        yield url
