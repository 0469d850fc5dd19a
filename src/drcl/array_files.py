"""Reading .npy and .npz files: any way a file can be broken ends in one line that names it.

numpy raises EOFError for an empty file, zipfile.BadZipFile for a truncated or corrupted
archive (CRC checked on read), ValueError for a short .npy, and refuses pickled objects; all of
them become a DrclError here, so no command shows a traceback or click's bare "Aborted.".
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drcl.errors import DrclError

READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_npz(path: Path, keys: Sequence[str] | None = None, *,
             what: str = "an .npz file") -> tuple[list[str], dict[str, np.ndarray]]:
    """The archive's member names, and the arrays of `keys` that it has (all when None)."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DrclError(f"{path}: holds a single array, not {what}")
            names = list(npz.files)
            wanted = names if keys is None else [k for k in keys if k in names]
            return names, {key: _member(npz, path, key) for key in wanted}
    except DrclError:
        raise
    except READ_ERRORS as exc:
        raise DrclError(f"{path}: not readable as {what} ({_reason(exc)})") from None


def load_npy(path: Path, *, what: str = "an .npy file") -> np.ndarray:
    """One array from an .npy file."""
    path = Path(path)
    if not path.is_file():
        raise DrclError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise DrclError(f"{path}: not readable as {what} ({_reason(exc)})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        loaded.close()
        raise DrclError(f"{path}: an .npz archive, not {what}")
    return loaded


def _member(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DrclError(f"{path}:{key}: cannot be read without pickle; store plain "
                            "numeric or string arrays") from None
        raise


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValueError) and "pickled" in str(exc):
        return "not a numpy file"  # numpy takes anything else for a pickle, and refuses it
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
