"""A run's account of itself: which tasks ran, which were reused from which earlier run, what
each read and wrote, and what promotion did."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drcl.atomic import write_json, write_text


def status(report: Mapping[str, Any], run: str) -> str:
    """One task: `ran`, or `reused from run X` (and how it was found)."""
    if report.get("reused") == "store":
        return f"reused from run {report['run']} (same key in the store)"
    if report.get("run") != run:
        return f"reused from run {report['run']} (Kubeflow's cache)"
    return "ran"


def summarize(run: str, tasks: Sequence[Mapping[str, Any]], *,
              source: Mapping[str, Any] | None, outcome: Mapping[str, Any] | None
              ) -> dict[str, Any]:
    rows = []
    for t in tasks:
        here = t["run"] == run and not t.get("reused")  # bytes moved by this run's pods
        rows.append({"task": t["task"], "status": status(t, run), "ran": here,
                     "from_run": t["run"], "key": t["key"], "outputs": t.get("outputs", {}),
                     "read": t.get("read", 0) if here else 0,
                     "written": t.get("written", 0) if here else 0,
                     "seconds": t.get("seconds", 0.0) if here else 0.0})
    return {"run": run, "source": dict(source) if source else None, "tasks": rows,
            "outcome": dict(outcome) if outcome else None}


def write_summary(run: str, *, tasks: Sequence[Mapping[str, Any]],
                  source: Mapping[str, Any] | None, outcome: str | Path | None,
                  tracking: Mapping[str, Any], json_path: str | Path,
                  page_path: str | Path) -> dict[str, Any]:
    """Write summary.json and a Markdown page; tag the MLflow parent run with each task's
    status."""
    from drcl.config import parse_params
    from drcl.kfp.tracking import open_pipeline_run, tag_lineage

    found = Path(outcome) if outcome else None
    promoted = json.loads(found.read_text()) if found and found.is_file() else None
    result = summarize(run, tasks, source=source, outcome=promoted)
    Path(json_path).mkdir(parents=True, exist_ok=True)
    write_json(Path(json_path) / "summary.json", result)
    write_text(page_path, page(result))
    params = parse_params({"tracking": dict(tracking)}, source="pipeline arguments")
    open_pipeline_run(params, run, source=source)
    tag_lineage(params, run, {t["task"]: t["status"] for t in result["tasks"]})
    for row in result["tasks"]:
        print(f"drcl: {row['task']}: {row['status']}")
    return result


def page(result: Mapping[str, Any]) -> str:
    lines = [f"# Run {result['run']}", "", "| task | status | seconds |", "|---|---|---|"]
    lines += [f"| {t['task']} | {t['status']} | {t['seconds']} |" for t in result["tasks"]]
    return "\n".join(lines) + "\n"
