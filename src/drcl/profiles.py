"""Data-set profiles: the params that select one data set, applied to params.yaml in one step.

A profile (``params/<name>.yaml``) names only the keys that pick a data set: ``data.source``,
``data.path``, ``data.modalities`` and the ``extract`` settings. ``drcl profile apply NAME`` writes
exactly those keys into params.yaml, keeping its comments and every other key, and checks the
result against the schema before it replaces the file. params.yaml then stays the one complete
record of a run: `dvc repro`, `dvc exp run` (which shows the change as params) and every `drcl`
command read the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

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

    Only the values the profile changes are rewritten, in place in the file's text: comments, the
    order of keys and whatever layout wrote the rest (a person, or `dvc exp run -S`, which writes
    block lists and bare nulls) stay as they are. Returns what changed (empty when the profile was
    already applied).
    """
    settings = read_profile(profile)
    load_params(params_path)  # the file as it stands must be valid: refuse to build on a bad one
    text = params_path.read_text()
    expected = yaml.safe_load(text)
    changes = merge_profile(expected, settings)
    if not changes:
        return []
    edited = _splice(text, yaml.compose(text, Loader=yaml.SafeLoader), settings, Params)
    result = yaml.safe_load(edited)
    if result != expected:  # the edit must mean exactly the merge, or nothing is written
        raise DrclError(f"{params_path}: could not apply profile {profile} to this layout; "
                        f"set its keys by hand: {', '.join(c.key for c in changes)}")
    parse_params(result, source=f"{params_path} with profile {profile}")
    with atomic_path(params_path) as tmp:
        tmp.write_text(edited)
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
        name = f"{prefix}{key}"
        sub = _sub_model(schema, key)
        if sub is not None and isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value, sub, f"{name}.", changes)
            continue
        before = target.get(key)
        if before != value or key not in target:
            changes.append(Change(name, before, value))
            target[key] = value


def _sub_model(schema: type[BaseModel], key: str) -> type[BaseModel] | None:
    field = schema.model_fields[key].annotation
    return field if isinstance(field, type) and issubclass(field, BaseModel) else None


def _splice(text: str, node: yaml.MappingNode, settings: dict[str, Any],
            schema: type[BaseModel]) -> str:
    """`text` with the profile's values written over the nodes that hold them.

    Edits are made from the end of the text backwards, so the marks of earlier nodes stay valid.
    """
    edits: list[tuple[int, int, str]] = []
    _plan(text, node, yaml.safe_load(text), settings, schema, edits)
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _plan(text: str, node: yaml.MappingNode, current: dict[str, Any], settings: dict[str, Any],
          schema: type[BaseModel], edits: list[tuple[int, int, str]]) -> None:
    """The edits that set `settings` in the mapping `node`, whose value is `current`."""
    pairs = {key.value: (key, value) for key, value in node.value}
    for name, value in settings.items():
        sub = _sub_model(schema, name)
        if name not in pairs:
            edits.append(_insertion(text, node, name, value))
        elif sub is not None and isinstance(value, dict) and \
                isinstance(pairs[name][1], yaml.MappingNode):
            _plan(text, pairs[name][1], current[name], value, sub, edits)
        elif current[name] != value:
            edits.append(_replacement(text, *pairs[name], value))


def _replacement(text: str, key: yaml.Node, node: yaml.Node, value: Any) -> tuple[int, int, str]:
    """Write `value` inline where `node` stands, its comment kept in its column where it fits."""
    new = _inline(value)
    if node.start_mark.line == key.end_mark.line and not _is_empty(node):
        start, end = node.start_mark.index, _end(node)
        line_end = _line_end(text, end)
        rest = text[end:line_end]
        gap = len(rest) - len(rest.lstrip(" "))
        if rest.strip().startswith("#"):  # keep the comment where it was, or one space after
            spaces = max(1, gap - (len(new) - (end - start)))
            return start, end + gap, new + " " * spaces
        return start, end, new
    # an empty value (`key:`) or a block collection that starts on the next line
    colon = text.index(":", key.end_mark.index) + 1
    key_line_end = _line_end(text, colon)
    rest = text[colon:key_line_end]
    comment = rest.strip()
    end = key_line_end if _is_empty(node) else max(_end(node), key_line_end)
    if comment.startswith("#"):
        spaces = max(1, len(rest) - len(rest.lstrip(" ")) - len(new) - 1)
        return colon, end, f" {new}{' ' * spaces}{comment}"
    return colon, end, f" {new}"


def _insertion(text: str, node: yaml.MappingNode, name: str, value: Any) -> tuple[int, int, str]:
    """A new key after the mapping's last line (before any blank line or comment that follows)."""
    if node.flow_style:
        at = node.end_mark.index - 1
        sep = ", " if node.value else ""
        return at, at, f"{sep}{name}: {_inline(value)}"
    if not node.value:
        return len(text), len(text), f"{name}: {_inline(value)}\n"
    indent = " " * node.value[0][0].start_mark.column
    at = _line_end(text, _end(node.value[-1][1]))
    return at, at, f"\n{indent}{name}: {_inline(value)}"


def _end(node: yaml.Node) -> int:
    """Where a node's own text ends; a block collection ends with its last item, not at the next
    token (which may stand after comment lines that belong to what follows)."""
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _end(node.value[-1])
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _end(node.value[-1][1])
    return node.end_mark.index


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.start_mark.index == node.end_mark.index


def _line_end(text: str, at: int) -> int:
    found = text.find("\n", at)
    return len(text) if found < 0 else found


def _inline(value: Any) -> str:
    """A value in flow style on one line, as params.yaml writes lists and mappings."""
    if value is None:
        return "null"
    dumped = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return dumped.removesuffix("\n...\n").strip()


def _show(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if not isinstance(value, str) else value
