"""The pipeline's store: every task output by content hash, and a record of every completed task.

This is DVC's cache and run cache for Kubeflow. Under its root (`kubeflow.store`: a folder, or
`s3://bucket/prefix` on a cluster)::

    objects/<sha256[:2]>/<sha256>    a file some task wrote, named by its content
    tasks/<step>/<key>.json          a completed task: its outputs (path -> sha256) and the run
                                     that made them

Tasks hand each other content hashes, never copies: a task fetches the objects it reads, and a
task whose key (its params, code and inputs' hashes) has a record is reused without running.
Objects are written before the record that names them, each in one atomic step (a rename on a
folder, a single PUT on S3), so a record never points at a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from drcl.errors import DrclError

_CHUNK = 1 << 22


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    """Objects and task records under `root`; counts the bytes this process moved."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        import fsspec

        self.root = str(root).rstrip("/")
        url = self.root.replace("minio://", "s3://", 1)  # KFP's default store speaks S3
        try:
            self.fs, self.base = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise DrclError(f"kubeflow.store: cannot open {self.root!r} ({exc})") from None
        self.local = "file" in _protocols(self.fs)
        self.read = 0
        self.written = 0

    def _path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def object_path(self, sha: str) -> str:
        return self._path("objects", sha[:2], sha)

    def _io(self, what: str, call, *args: Any) -> Any:
        try:
            return call(*args)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise DrclError(f"store {self.root}: {what} failed ({_first_line(exc)}); are its "
                            "credentials in the environment?") from None

    def has(self, sha: str) -> bool:
        return bool(self._io(f"looking up object {sha[:12]}", self.fs.exists,
                             self.object_path(sha)))

    def put(self, path: Path) -> str:
        """Store a file under its content hash (once); returns the hash."""
        sha = sha256_file(path)
        if not self.has(sha):
            self._write(path, self.object_path(sha))
            self.written += path.stat().st_size
        return sha

    def get(self, sha: str, dest: Path) -> Path:
        """Fetch an object to `dest`, checked against its hash."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            self._io(f"fetching object {sha[:12]}", self.fs.get_file, self.object_path(sha),
                     str(partial))
        except FileNotFoundError:
            raise DrclError(f"store {self.root}: object {sha[:12]} is missing (was the store "
                            "cleaned while a record still names it?)") from None
        got = sha256_file(partial)
        if got != sha:
            partial.unlink()
            raise DrclError(f"store {self.root}: object {sha[:12]} holds content "
                            f"{got[:12]}; the store is damaged")
        os.replace(partial, dest)
        self.read += dest.stat().st_size
        return dest

    def record(self, step: str, key: str) -> dict[str, Any] | None:
        """The record of a completed task with this key, if every object it names exists."""
        path = self._path("tasks", step, f"{key}.json")
        try:
            with self.fs.open(path, "rb") as fh:
                found = json.loads(fh.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DrclError(f"store {self.root}: reading {path} failed "
                            f"({_first_line(exc)})") from None
        if not all(self.has(sha) for sha in found.get("outputs", {}).values()):
            return None
        return found

    def save_record(self, step: str, key: str, record: dict[str, Any]) -> None:
        """Write a task's record, after every object it names."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "record.json"
            file.write_text(json.dumps(record, indent=2, sort_keys=True))
            self._write(file, self._path("tasks", step, f"{key}.json"))

    def _write(self, source: Path, target: str) -> None:
        if self.local:
            folder = target.rsplit("/", 1)[0]
            os.makedirs(folder, exist_ok=True)
            partial = f"{target}.{uuid.uuid4().hex}.part"
            shutil.copyfile(source, partial)
            os.replace(partial, target)
            return
        self._io(f"writing {target}", self.fs.put_file, str(source), target)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
