"""Git credentials for a private data repository, from the environment.

A cluster's tasks get `DRCL_GIT_USERNAME` and `DRCL_GIT_PASSWORD` (a token) from a Kubernetes
Secret listed in `kubeflow.secrets`; a laptop exports them. drcl hands them to git and DVC
through `GIT_ASKPASS` (the `drcl-git-askpass` program), which both honour, so a credential never
sits in a URL, params.yaml, a compiled pipeline or an MLflow tag.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

USERNAME_ENV = "DRCL_GIT_USERNAME"
PASSWORD_ENV = "DRCL_GIT_PASSWORD"
ASKPASS = "drcl-git-askpass"
DEFAULT_USERNAME = "git"  # hosts that take a token as the password accept any user name


def configure() -> None:
    """Let git and DVC answer a host's password prompt from the environment (when
    `DRCL_GIT_PASSWORD` is set and no `GIT_ASKPASS` of the user's own is), and never wait at a
    terminal prompt in a task."""
    if os.environ.get(PASSWORD_ENV) and not os.environ.get("GIT_ASKPASS"):
        os.environ["GIT_ASKPASS"] = askpass_program()
    os.environ.setdefault("GIT_TERMINAL_PROMPT", "0")


def askpass_program() -> str:
    beside = Path(sys.executable).parent / ASKPASS
    return str(beside) if beside.is_file() else (shutil.which(ASKPASS) or ASKPASS)


def askpass() -> None:
    """`drcl-git-askpass PROMPT`: git's askpass protocol, the answer on standard output."""
    prompt = sys.argv[1] if len(sys.argv) > 1 else ""
    if prompt.lower().startswith("username"):
        print(os.environ.get(USERNAME_ENV) or DEFAULT_USERNAME)
    else:
        print(os.environ.get(PASSWORD_ENV, ""))
