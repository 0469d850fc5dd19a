"""Spotting credentials in values that end up in git, compiled pipelines and MLflow tags.

params.yaml is committed, compiled into the pipeline's YAML and copied into run and registry
tags (`drcl.data_repo`), all readable far more widely than a Secret. Checking key names alone
misses a password inside a URL or a token under an innocent name, so every string value is
checked: URLs for a user name with a password, a token as user name, or a credential in the
query; any value for the prefixes of well-known token formats and for long high-entropy text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

# prefixes of issued tokens whose format is published (GitHub, GitLab, Slack, AWS, OpenAI,
# Hugging Face, Google API keys)
TOKEN_PREFIXES = re.compile(
    r"^(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|glpat-[\w-]{20,}|xox[abposr]-[\w-]{10,}"
    r"|(AKIA|ASIA)[A-Z0-9]{16}|sk-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}|AIza[\w-]{35})$")
QUERY_CREDENTIALS = re.compile(
    r"(token|secret|password|passwd|api[-_]?key|access[-_]?key|signature|sig|auth|"
    r"x-amz-credential|x-amz-security-token)$", re.IGNORECASE)
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
MIN_SECRET_LENGTH = 20
MIN_ENTROPY_BITS = 4.0  # per character; hex digests (at most 4.0) and words stay below


def entropy_bits(text: str) -> float:
    """Shannon entropy of the characters of `text`, in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_like_secret(text: str) -> str | None:
    """Why `text` looks like a token or key, or None: a known token format, or a long run of
    letters, digits and symbols with the entropy of random bytes."""
    if TOKEN_PREFIXES.match(text):
        return "has the form of an issued access token"
    if (len(text) >= MIN_SECRET_LENGTH and re.fullmatch(r"[A-Za-z0-9+/=_\-.~]+", text)
            and re.search(r"[A-Z]", text) and re.search(r"[a-z]", text)
            and re.search(r"[0-9]", text) and "." not in text.strip(".")
            and entropy_bits(text) > MIN_ENTROPY_BITS):
        return "looks like a random key or token"
    return None


def url_credentials(value: str) -> str | None:
    """What credential the URL `value` carries, or None (also for a value that is no URL)."""
    if not URL.match(value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.password:
        return "a user name and password"
    if parts.username and looks_like_secret(parts.username):
        return "a token as its user name"
    for key, item in parse_qsl(parts.query, keep_blank_values=True):
        if QUERY_CREDENTIALS.search(key) or (item and looks_like_secret(item)):
            return f"a credential in its query ({key}=...)"
    return None


def credential_in(value: str) -> str | None:
    """Why the string `value` must not be stored in params, or None."""
    found = url_credentials(value)
    if found:
        return f"the URL carries {found}"
    found = looks_like_secret(value)
    return f"the value {found}" if found else None


def walk_strings(node: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a nested structure of dicts and lists, with its dotted key path."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{index}]")
