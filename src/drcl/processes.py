"""Naming a process so another one can later tell whether it is still alive.

An identity is `user@host:pid:start`, where `start` is the process's start time as the kernel
counts it (so a recycled pid is not mistaken for the old process). Only a process of the same
host can be judged; anything else is presumed alive.
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path


def identity(pid: int | None = None) -> str:
    """This process (or `pid` on this host) as `user@host:pid:start`."""
    pid = os.getpid() if pid is None else pid
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def is_dead(name: str) -> bool:
    """True only when `name` is a process of this host that has ended."""
    try:
        who, pid_text, start = name.rsplit(":", 2)
        host = who.split("@", 1)[1]
        pid = int(pid_text)
    except (ValueError, IndexError):
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    now = _start_time(pid)
    return start != "?" and now is not None and now != start  # the pid was reused


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot); None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
