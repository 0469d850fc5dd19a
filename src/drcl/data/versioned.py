"""Data sets named by where DVC keeps them: a git repository, a revision and a path in it.

`data.dvc: {repo, rev}` makes `data.path` a path inside that repository, tracked by DVC (a
`dvc add`-ed file or folder, or a pipeline's `data/prepared`). It is read through DVC's own
API from the remote the repository configures, with credentials from the environment (git's
from DRCL_GIT_USERNAME/DRCL_GIT_PASSWORD, drcl.git_credentials), so a
laptop, `dvc repro` and a Kubeflow task read the same bytes. Each read resolves the revision
afresh: a branch is followed, and what was read is recorded as the commit and DVC's content
hash. Downloads are kept by content hash under the cache folder, so the same data is fetched
once.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drcl import git_credentials
from drcl.errors import DrclError


@dataclass(frozen=True)
class DataRef:
    """What a data set reference resolved to."""

    repo: str
    rev: str | None
    path: str
    commit: str
    dvc_md5: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)



def data_tags(source: dict[str, Any] | None) -> dict[str, str]:
    """MLflow tags naming the data a run trained on (none for data not named through DVC)."""
    if not source:
        return {}
    return {"drcl.data_repo": str(source["repo"]), "drcl.data_rev": str(source["rev"] or ""),
            "drcl.data_path": str(source["path"]), "drcl.data_commit": str(source["commit"]),
            "drcl.data_dvc_md5": str(source["dvc_md5"])}


def _filesystem(repo: str, rev: str | None) -> Any:
    from dvc.api import DVCFileSystem

    git_credentials.configure()
    try:
        return DVCFileSystem(url=repo, rev=rev)
    except Exception as exc:  # noqa: BLE001 - git and DVC raise many kinds for a bad repo or rev
        raise DrclError(f"data.dvc: cannot open {repo!r} at {rev or 'its default branch'} "
                        f"({_first_line(exc)})") from None


def resolve(repo: str, rev: str | None, path: str) -> DataRef:
    """The commit `rev` names now and the DVC content hash of `path` there (nothing fetched)."""
    fs = _filesystem(repo, rev)
    try:
        commit = fs.repo.get_rev()
        info = fs.info(path)
    except FileNotFoundError:
        raise DrclError(f"data.path: {path!r} is not in {repo} at {rev or 'HEAD'}") from None
    except Exception as exc:  # noqa: BLE001
        raise DrclError(f"data.dvc: reading {path!r} from {repo} failed "
                        f"({_first_line(exc)})") from None
    finally:
        fs.close()
    dvc_info = info.get("dvc_info") or {}
    tracked = bool(dvc_info.get("isdvc") or info.get("isdvc"))
    md5 = dvc_info.get("md5") or info.get("md5")
    if not tracked or not md5:
        raise DrclError(f"data.path: {path!r} in {repo} at {commit[:12]} is not tracked by DVC; "
                        "`dvc add` it (or name a pipeline output) and push it")
    return DataRef(repo=repo, rev=rev, path=path, commit=commit, dvc_md5=str(md5))


def fetch(ref: DataRef, cache: Path) -> Path:
    """A local copy of the referenced file or folder (downloaded once per content hash)."""
    target = cache / "dvc" / ref.dvc_md5.replace(".dir", "-dir") / Path(ref.path).name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fs = _filesystem(ref.repo, ref.commit)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        staged = Path(tmp) / target.name
        try:
            fs.get(ref.path, str(staged), recursive=True)
        except Exception as exc:  # noqa: BLE001 - the remote's errors come through DVC
            raise DrclError(f"data.dvc: fetching {ref.path!r} ({ref.commit[:12]}) from the "
                            f"DVC remote of {ref.repo} failed ({_first_line(exc)}); is it "
                            "pushed, and are the remote's credentials in the environment?") \
                from None
        finally:
            fs.close()
        try:
            staged.rename(target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(staged, ignore_errors=True)  # another process fetched it meanwhile
    return target


def _first_line(exc: BaseException) -> str:
    """The most specific message in the exception's chain (DVC wraps git's in 'SCM error'),
    with what to do when the git host wanted credentials."""
    messages, names = [], []
    while exc is not None and len(messages) < 5:
        text = str(exc).strip().splitlines()
        if text:
            messages.append(text[0])
        names.append(type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    line = messages[-1] if messages else "unknown error"
    if "HTTPUnauthorized" in names or re.search(r"credentials|authentication|\b401\b", line, re.I):
        line += (f"; a private repository's git host takes a user and token from "
                 f"{git_credentials.USERNAME_ENV} and {git_credentials.PASSWORD_ENV} (README.md, "
                 f"\"A private data repository\")")
    return line
