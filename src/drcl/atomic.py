"""Write outputs to a temporary sibling path, then rename: readers never see half a file.

A folder replaces a folder by exchanging the two in one rename (Linux's renameat2 with
RENAME_EXCHANGE), so the path always holds the old folder or the new one. A step with several
outputs lands them as a set (`output_set`): a journal names every output before the first one
moves, and `recover` finishes a set that a crash interrupted, so a reader who recovers first
never sees new metrics beside old weights.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it over ``target``.

    Works for files and directories. On error the temporary path is removed and ``target``
    is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    inner = tmp / target.name
    try:
        yield inner
        _replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(new: Path, target: Path) -> None:
    """Move `new` over `target`; a folder over a folder is exchanged in one step (the old one
    is left at `new`, for the caller to remove), never removed first."""
    if target.is_dir() and not target.is_symlink() and new.is_dir():
        if not exchange(new, target):
            aside = new.with_name(new.name + ".old")
            os.replace(target, aside)  # where the exchange is missing: two renames
            os.replace(new, target)
            os.replace(aside, new)
        return
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(new, target)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one rename; False where the system cannot (not Linux, or a file
    system without RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


JOURNAL = ".drcl-landing.json"
_MARK = ".drcl-landing-"


class OutputSet:
    """A step's outputs, staged beside their targets and landed together (see `output_set`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = secrets.token_hex(6)
        self.staged: list[tuple[Path, Path, Path]] = []  # (new, target, its staging folder)

    def path(self, target: str | os.PathLike[str]) -> Path:
        """Where to write `target`'s new content (a file, or a folder to create)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                       dir=target.parent))
        self.staged.append((folder / target.name, target, folder))
        return folder / target.name

    def land(self) -> None:
        for new, _, _ in self.staged:
            if new.is_dir():  # tells, after a crash, whether the exchange already happened
                (new / f"{_MARK}{self.token}").touch()
        entries = [{"new": str(new), "target": str(target), "folder": str(folder)}
                   for new, target, folder in self.staged if new.exists()]
        journal = self.root / JOURNAL
        with atomic_path(journal) as tmp, tmp.open("w") as fh:
            json.dump({"token": self.token, "outputs": entries}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _finish(journal)

    def discard(self) -> None:
        for _, _, folder in self.staged:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def output_set(root: str | os.PathLike[str]) -> Iterator[OutputSet]:
    """Stage outputs with `out.path(target)`; when the block succeeds they land together,
    when it fails none does and the last good outputs stay."""
    recover(root)
    staged = OutputSet(Path(root))
    try:
        yield staged
        staged.land()
    finally:
        staged.discard()


def recover(root: str | os.PathLike[str]) -> bool:
    """Finish landing an output set that a crash interrupted; True when there was one."""
    journal = Path(root) / JOURNAL
    if not journal.is_file():
        return False
    _finish(journal)
    return True


def _finish(journal: Path) -> None:
    """Move every output the journal names into place (each move done once), then forget it."""
    record = json.loads(journal.read_text())
    mark = f"{_MARK}{record['token']}"
    for entry in record["outputs"]:
        new, target, folder = (Path(entry[k]) for k in ("new", "target", "folder"))
        landed = (target / mark).exists() if target.is_dir() else not new.exists()
        if not landed and new.exists():
            _replace(new, target)
        if target.is_dir():
            (target / mark).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    journal.unlink()


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_csv(target: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Write dict rows as CSV with a header, atomically; a column some rows lack (a figure
    from a later epoch on) is left empty in them."""
    import csv

    fields = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(target) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
