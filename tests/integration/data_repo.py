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


@contextmanager
def git_http_server(root: Path, *, username: str, password: str) -> Iterator[tuple[str, list]]:
    """The repositories under `root` served over smart HTTP on 127.0.0.1 (git's own
    http-backend), every request needing basic authentication as a private git host does;
    yields the base URL and the list of (user, status) of each request. Stopped when the
    block ends."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    good = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    seen: list[tuple[str, int]] = []
    backend = [*GIT[:1], "http-backend"]

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            given = self.headers.get("Authorization", "")
            user = base64.b64decode(given[6:]).decode().split(":")[0] if given else ""
            if given != good:
                seen.append((user, 401))
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="data"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            url = urlsplit(self.path)
            body = self._body()
            env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(root),
                   "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command,
                   "PATH_INFO": url.path, "QUERY_STRING": url.query, "REMOTE_USER": user,
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "CONTENT_LENGTH": str(len(body)),
                   "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                   "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
            out = subprocess.run(backend, input=body, env=env, capture_output=True,
                                 check=False).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if line]
            status = next((int(v.split()[0]) for k, v in headers if k == "Status"), 200)
            seen.append((user, status))
            self.send_response(status)
            for key, value in headers:
                if key != "Status":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
