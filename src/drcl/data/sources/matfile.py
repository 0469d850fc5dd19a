"""Read the arrays of a MATLAB .mat file (v5 or v7.3) or a plain HDF5 file, by variable name.

MATLAB v7.3 files are HDF5 files with a 512-byte MATLAB header; MATLAB stores matrices
column-major, so each array comes back transposed to the shape MATLAB shows (``n x d``). Plain
HDF5 files written from Python (the community's ``.h5py`` files) are row-major and read as they
are. Cell arrays come back as lists of arrays, in MATLAB's column-major element order.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import scipy.sparse

from drcl.errors import DrclError

MATLAB_73_MAGIC = b"MATLAB 7.3 MAT-file"

Value = np.ndarray | list[np.ndarray]


def read_arrays(path: str | Path, keys: Iterable[str], *, kind: str) -> dict[str, Value]:
    """Load ``keys`` from ``path``; a missing key names every expected and every found key.

    ``kind`` names the expected format in messages (for example "Wikipedia wiki.mat").
    """
    path = Path(path)
    wanted = list(keys)
    if not path.is_file():
        raise DrclError(f"{path}: {kind} file not found")
    if h5py.is_hdf5(path):
        return _read_hdf5(path, wanted, kind=kind)
    return _read_v5(path, wanted, kind=kind)


def _missing(path: Path, wanted: list[str], found: Iterable[str], kind: str) -> DrclError:
    found = sorted(k for k in found if not k.startswith(("__", "#")))
    missing = [k for k in wanted if k not in found]
    return DrclError(f"{path}: not a {kind} file: missing {', '.join(missing)}; expected keys "
                     f"{', '.join(wanted)}; found {', '.join(found) or 'none'}")


def _read_v5(path: Path, wanted: list[str], *, kind: str) -> dict[str, Value]:
    try:
        found = [name for name, _, _ in scipy.io.whosmat(path)]
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise DrclError(f"{path}: not a readable MATLAB .mat or HDF5 file ({exc})") from None
    if any(k not in found for k in wanted):
        raise _missing(path, wanted, found, kind)
    try:
        raw = scipy.io.loadmat(path, variable_names=wanted)
    except (ValueError, TypeError, OSError) as exc:
        raise DrclError(f"{path}: not a readable MATLAB .mat file ({exc})") from None
    return {k: _from_v5(raw[k]) for k in wanted}


def _from_v5(value: np.ndarray) -> Value:
    if scipy.sparse.issparse(value):  # bag-of-words features are often stored sparse
        return value.toarray()
    if value.dtype == object:  # a cell array
        return [_from_v5(cell) for cell in value.ravel(order="F")]
    return value


def _read_hdf5(path: Path, wanted: list[str], *, kind: str) -> dict[str, Value]:
    matlab = _has_matlab_header(path)
    try:
        with h5py.File(path, "r") as fh:
            if any(k not in fh for k in wanted):
                raise _missing(path, wanted, fh.keys(), kind)
            return {k: _from_hdf5(fh, fh[k], matlab=matlab, where=f"{path}:{k}") for k in wanted}
    except OSError as exc:
        raise DrclError(f"{path}: not a readable HDF5 file ({exc})") from None


def _has_matlab_header(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(MATLAB_73_MAGIC)) == MATLAB_73_MAGIC


def _from_hdf5(fh: h5py.File, node: h5py.HLObject, *, matlab: bool, where: str) -> Value:
    if isinstance(node, h5py.Group) and {"data", "ir", "jc"} <= set(node):
        # MATLAB v7.3 sparse matrix: compressed columns, row count in an attribute
        jc = node["jc"][()]
        shape = (int(node.attrs.get("MATLAB_sparse", 0)), len(jc) - 1)
        return scipy.sparse.csc_matrix((node["data"][()], node["ir"][()], jc),
                                       shape=shape).toarray()
    if not isinstance(node, h5py.Dataset):
        raise DrclError(f"{where}: expected an array, found an HDF5 group")
    data = node[()]
    if node.dtype == h5py.ref_dtype:  # a cell array: references to its elements
        # HDF5 holds MATLAB's column-major buffer, so C order here is MATLAB's element order
        return [_from_hdf5(fh, fh[ref], matlab=matlab, where=f"{where}{{{i + 1}}}")
                for i, ref in enumerate(np.asarray(data).ravel())]
    return _as_array(data, matlab)


def _as_array(data: np.ndarray, matlab: bool) -> np.ndarray:
    data = np.asarray(data)
    return data.T if matlab else data
