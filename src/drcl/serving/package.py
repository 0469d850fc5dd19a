"""Write a registered version's artifacts as an MLflow Model folder, and find drcl's files in it.

The folder MLflow loads (`MLmodel` with a python_function flavor, `model_code.py`, environment
files, a signature and an input example) holds drcl's own files under `artifacts/drcl/`:

    drcl-model.json        format, the prior's checksum, per modality: the registered encoder,
                           its weights' checksum, input width, output width, extractor
    prior.safetensors      the W every member was trained against
    <modality>/encoder.safetensors
    set.json | encoder.json   the registry's record of the version

Versions registered before they were MLflow Models hold one encoder's files at the top.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from drcl.data.dataset import file_sha256
from drcl.errors import DrclError
from drcl.model import read_metadata
from drcl.serving.schema import DEFAULT_PARAMS, ServingConfig

PAYLOAD = "drcl"
MANIFEST = "drcl-model.json"
FORMAT = "drcl-model/1"
ENCODER_FILE = "encoder.safetensors"
PRIOR_FILE = "prior.safetensors"
MODEL_CODE = Path(__file__).with_name("model_code.py")
# how a loaded model runs (drcl.serving.schema.ServingConfig), saved with every version
MODEL_CONFIG: dict[str, object] = ServingConfig().model_dump()


@dataclass(frozen=True)
class PackagedMember:
    """An encoder going into a version: its registered name and version ("" while the version
    being written is its own) and its weights on disk."""

    modality: str
    model: str
    version: str
    weights: Path
    extractor: str


def payload(root: Path) -> Path:
    """drcl's files in a downloaded version."""
    return root / "artifacts" / PAYLOAD if (root / "MLmodel").is_file() else root


def member_weights(root: Path, modality: str) -> Path:
    inner = payload(root)
    return inner / modality / ENCODER_FILE if inner != root else root / ENCODER_FILE


def prior_file(root: Path) -> Path:
    return payload(root) / PRIOR_FILE


def read_manifest(folder: Path) -> dict:
    """The manifest of a payload folder, checked for the fields the loader needs."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        if manifest["format"] != FORMAT:
            raise DrclError(f"{path}: format {manifest['format']!r}, expected {FORMAT!r}")
        for entry in manifest["members"].values():
            entry["weights_sha256"], int(entry["input_dim"]), entry["extractor"]  # noqa: B018
        manifest["prior_sha256"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DrclError(f"{path}: not a drcl model manifest ({exc!r})") from None
    return manifest


def requirements() -> list[str]:
    """drcl's own dependencies, pinned to the versions it was registered with (drcl itself is
    installed from its repository or image, not from an index)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = []
    for line in requires("drcl") or []:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        try:
            pins.append(f"{req.name}=={Version(version(req.name)).public}")
        except PackageNotFoundError:
            pins.append(str(req))
    return pins


def write_model(dest: Path, *, members: Mapping[str, PackagedMember], prior: Path,
                prior_sha256: str, record_name: str, record: Mapping[str, object],
                measured_with: Mapping[str, str] | None = None) -> None:
    """Write the MLflow Model of these members into `dest` (which must not exist yet).

    `measured_with` (`device`, `precision`: the arithmetic the promotion measured MAP in) is
    recorded, and its precision becomes the model's default, so a deployment computes as the
    gate did unless its model config says otherwise."""
    import mlflow

    entries = {}
    for m, member in members.items():
        meta = read_metadata(member.weights)
        entries[m] = {"model": member.model, "version": member.version,
                      "weights_sha256": file_sha256(member.weights),
                      "input_dim": int(meta["input_dim"]), "common_dim": int(meta["common_dim"]),
                      "extractor": member.extractor}
    manifest = {"format": FORMAT, "prior_sha256": prior_sha256, "members": entries}
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / PAYLOAD
        files.mkdir()
        shutil.copyfile(prior, files / PRIOR_FILE)
        for m, member in members.items():
            (files / m).mkdir()
            shutil.copyfile(member.weights, files / m / ENCODER_FILE)
        (files / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (files / record_name).write_text(json.dumps(record, indent=2, default=str) + "\n")
        first = next(iter(entries))
        example = [{"modality": first, "features": [0.0] * entries[first]["input_dim"]}]
        with _quiet("mlflow"):  # it announces the trial prediction it makes of the example
            mlflow.pyfunc.save_model(
                path=str(dest), python_model=str(MODEL_CODE), artifacts={PAYLOAD: str(files)},
                input_example=(example, dict(DEFAULT_PARAMS)), pip_requirements=requirements(),
                model_config=dict(MODEL_CONFIG) | (
                    {"precision": measured_with["precision"]} if measured_with else {}),
                metadata={"drcl": {"format": FORMAT, "prior_sha256": prior_sha256,
                                   "measured_with": dict(measured_with or {}),
                                   "modalities": {m: {k: e[k] for k in
                                                      ("input_dim", "common_dim", "extractor")}
                                                  for m, e in entries.items()}}})


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only warnings and errors from `logger` meanwhile."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)
