"""Data-set profiles: the params that select one data set, applied to params.yaml in one step.

A profile (``params/<name>.yaml``) names only the keys that pick a data set: ``data.source``,
``data.path``, ``data.modalities`` and the ``extract`` settings. ``drcl profile apply NAME`` writes
exactly those keys into params.yaml, keeping its comments and every other key, and checks the
result against the schema before it replaces the file. params.yaml then stays the one complete
record of a run: `dvc repro`, `dvc exp run` (which shows the change as params) and every `drcl`
command read the same file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from drcl.atomic import atomic_path
from drcl.config import Params, load_params, parse_params
from drcl.errors import DrclError

PROFILE_DIR = Path("params")


@dataclass(frozen=True)
class Change:
    key: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.before)} -> {_show(self.after)}"


def find_profile(name: str, folder: Path = PROFILE_DIR) -> Path:
    """A profile by name (``params/<name>.yaml``) or by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = folder / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(name for name, _ in list_profiles(folder)) or "none"
    raise DrclError(f"profile {name!r}: no {candidate} (profiles: {known})")


def list_profiles(folder: Path = PROFILE_DIR) -> list[tuple[str, str]]:
    """(name, the first line of its leading comment) for each profile in `folder`."""
    found = []
    for path in sorted(folder.glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.strip()), "")
        found.append((path.stem, first.lstrip("# ").strip() if first.startswith("#") else ""))
    return found


def read_profile(path: Path) -> dict[str, Any]:
    """The profile's settings, each key checked against the params schema."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DrclError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise DrclError(f"{path}: a profile is a mapping of params, e.g. data: {{source: npz}}")
    parse_params(raw, source=str(path))
    return raw


def apply_profile(profile: Path, params_path: Path = Path("params.yaml")) -> list[Change]:
    """Write the profile's keys into params.yaml; nothing is written unless the result is valid.

    Returns what changed (empty when the profile was already applied).
    """
    settings = read_profile(profile)
    load_params(params_path)  # the file as it stands must be valid: refuse to build on a bad one
    rt = _round_trip()
    document = rt.load(params_path.read_text())
    changes = merge_profile(document, settings)
    text = io.StringIO()
    rt.dump(document, text)
    parse_params(yaml.safe_load(text.getvalue()),
                 source=f"{params_path} with profile {profile}")
    if changes:
        with atomic_path(params_path) as tmp:
            tmp.write_text(text.getvalue())
    return changes


def merge_profile(params: dict[str, Any], settings: dict[str, Any]) -> list[Change]:
    """Set the profile's keys in a params mapping, in place; returns what changed."""
    changes: list[Change] = []
    _merge(params, settings, Params, "", changes)
    return changes


def _merge(target: dict[str, Any], settings: dict[str, Any], schema: type[BaseModel],
           prefix: str, changes: list[Change]) -> None:
    """Set each key of `settings` in `target`; sub-models of the schema are merged key by key,
    every other value (a list, a per-modality mapping) is replaced whole."""
    for key, value in settings.items():
        field = schema.model_fields[key].annotation
        name = f"{prefix}{key}"
        if isinstance(field, type) and issubclass(field, BaseModel) and isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = CommentedMap()
            _merge(target[key], value, field, f"{name}.", changes)
            continue
        before = _plain(target.get(key))
        if before != value or key not in target:
            changes.append(Change(name, before, value))
            target[key] = _styled(value)


def _round_trip() -> YAML:
    """A YAML that reads and writes params.yaml byte for byte as it is laid out."""
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return rt


def _styled(value: Any) -> Any:
    """Lists and mappings written inline, as params.yaml writes them."""
    if isinstance(value, list):
        seq = CommentedSeq([_styled(v) for v in value])
        seq.fa.set_flow_style()
        return seq
    if isinstance(value, dict):
        mapping = CommentedMap((k, _styled(v)) for k, v in value.items())
        mapping.fa.set_flow_style()
        return mapping
    return value


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value)) if value is not None else None


def _show(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if not isinstance(value, str) else value
