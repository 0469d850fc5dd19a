"""Naming a process so another one can later tell whether it is still alive.

An identity is `user@host/machine:pid:start`. `start` is the process's start time as the kernel
counts it (so a recycled pid is not mistaken for the old process). `machine` names the kernel
and the pid namespace the pid belongs to (the kernel's boot id and the namespace's inode): two
containers, or two machines, that share a host name have different ones, so neither takes the
other's live process for a dead one of its own. Only a process of the same machine can be
judged; anything else is presumed alive (its lease decides).
"""

from __future__ import annotations

import getpass
import os
import socket
from functools import cache
from pathlib import Path


def identity(pid: int | None = None) -> str:
    """This process (or `pid` of this machine) as `user@host/machine:pid:start`."""
    pid = os.getpid() if pid is None else pid
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}/{machine()}:{pid}:{_start_time(pid) or '?'}"


def is_dead(name: str) -> bool:
    """True only when `name` is a process of this machine (kernel and pid namespace) that has
    ended."""
    try:
        who, pid_text, start = name.rsplit(":", 2)
        host, _, where = who.split("@", 1)[1].partition("/")
        pid = int(pid_text)
    except (ValueError, IndexError):
        return False
    if host != socket.gethostname() or where != machine() or where == "?":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    now = _start_time(pid)
    return start != "?" and now is not None and now != start  # the pid was reused


@cache
def machine() -> str:
    """The kernel's boot id and this pid namespace's inode; '?' where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "?"
    return f"{boot[:16]}.{namespace}"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot); None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
