"""A forking driver for fault injection into the registry's commands.

Run as a script, it imports drcl (torch, mlflow) once, opens no store, and reads one JSON request
per line from stdin: `{"cwd", "tracking_uri", "args", "crash_after", "stop_at_fence"}`. For each
it forks a child that runs `drcl <args>` in `cwd` and answers two lines: `{"pid"}` at once, then
`{"status", "writes", "stdout", "stderr"}` when the child is gone.

- `crash_after: k` (k >= 1): the child counts the MLflow client's registry writes (those that
  succeeded) and dies with `os._exit(137)` right after the k-th one: no `finally`, no lock
  release, as under SIGKILL. With 0 it runs to the end, and `writes` says how many it made.
- `stop_at_fence: PATH`: just before the commit's fence the child writes PATH and stops itself
  with SIGSTOP, as a process paused by the machine would be; the test resumes it with SIGCONT.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401 - imported once, for every child
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
from mlflow import MlflowClient

import drcl.cli
import drcl.promotion  # noqa: F401
from drcl.registry_lock import TicketLock

WRITES = ("create_registered_model", "create_model_version", "set_registered_model_alias",
          "delete_registered_model_alias", "set_registered_model_tag",
          "delete_registered_model_tag", "set_model_version_tag", "delete_model_version_tag",
          "delete_model_version", "update_model_version", "update_registered_model")


def child(request: dict, writes_file: Path, out: Path) -> None:
    os.chdir(request["cwd"])
    os.environ["MLFLOW_TRACKING_URI"] = request["tracking_uri"]
    for fd, name in ((1, "stdout"), (2, "stderr")):  # stdout is the driver's answer channel
        os.dup2(os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    count = [0]
    crash_after = int(request.get("crash_after", 0))

    def counted(name: str):
        original = getattr(MlflowClient, name)

        def write(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            count[0] += 1
            writes_file.write_text(str(count[0]))
            if count[0] == crash_after:
                os._exit(137)
            return result
        return write

    for name in WRITES:
        setattr(MlflowClient, name, counted(name))
    marker = request.get("stop_at_fence")
    if marker:
        fence = TicketLock.fence

        def paused_fence(self) -> None:
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)
            fence(self)
        TicketLock.fence = paused_fence
    code = 0
    try:
        drcl.cli.app(args=request["args"], prog_name="drcl")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            writes_file = out / "writes"
            writes_file.write_text("0")
            pid = os.fork()
            if pid == 0:
                try:
                    child(request, writes_file, out)
                finally:
                    os._exit(70)
            print(json.dumps({"pid": pid}), flush=True)
            _, status = os.waitpid(pid, 0)
            print(json.dumps({"status": os.waitstatus_to_exitcode(status),
                              "writes": int(writes_file.read_text() or 0),
                              **{name: (out / name).read_text(errors="replace")
                                 if (out / name).exists() else ""
                                 for name in ("stdout", "stderr")}}), flush=True)


if __name__ == "__main__":
    main()
