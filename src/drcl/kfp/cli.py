"""`drcl pipeline ...`: compile, run locally, submit and schedule the Kubeflow pipeline.

Run from the project root: the pipeline is defined in pipelines/ and components/ beside
params.yaml, whose values become the pipeline's defaults and each run's arguments.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from drcl.cli_common import ParamsOption
from drcl.cli_common import run_step as _run

pipeline_app = typer.Typer(
    help="The DRCL pipeline on Kubeflow: compile, run locally, submit, schedule.",
    no_args_is_help=True,
)

HostOption = Annotated[
    str | None,
    typer.Option("--host", help="Kubeflow Pipelines API endpoint (default: kubeflow.host)."),
]
SchedulesOption = Annotated[
    Path, typer.Option("--schedules", help="Folder of schedule files.", file_okay=False)]
TuneOption = Annotated[bool, typer.Option(
    "--tune", help="The tuning pipeline (tune.workers parallel workers of `drcl tune` on one "
                   "study) instead of the training pipeline.")]


@pipeline_app.command("compile")
def compile_(
    params: ParamsOption = Path("params.yaml"),
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the YAML [default: build/drcl-pipeline.yaml, "
                               "with --tune build/drcl-tune-pipeline.yaml].",
        dir_okay=False)] = None,
    tune: TuneOption = False,
) -> None:
    """Write the pipeline YAML, its defaults taken from params.yaml."""
    from drcl.config import load_params
    from drcl.kfp.project import compile_pipeline

    where = output or Path("build/drcl-tune-pipeline.yaml" if tune else
                           "build/drcl-pipeline.yaml")

    def step() -> None:
        seconds = compile_pipeline(load_params(params), where, tuning=tune)
        typer.echo(f"{where}: {where.stat().st_size} bytes, compiled in {seconds:.2f} s")

    _run(step)


@pipeline_app.command()
def run(
    local: Annotated[bool, typer.Option("--local", help="Run every task on this machine "
                                                        "(kfp SubprocessRunner).")] = False,
    params: ParamsOption = Path("params.yaml"),
    pipeline_root: Annotated[Path, typer.Option(
        "--pipeline-root", help="Where local runs keep their artifacts.", file_okay=False,
    )] = Path("build/kfp-local"),
    tune: TuneOption = False,
) -> None:
    """Run the whole pipeline here; `drcl pipeline submit` sends a run to a cluster."""

    from drcl.config import load_params
    from drcl.errors import DrclError
    from drcl.kfp.local import run_local, run_local_tuning

    def step() -> None:
        if not local:
            raise DrclError("--local: `drcl pipeline run` only runs on this machine; pass "
                            "--local, or use `drcl pipeline submit` for a cluster")
        run = run_local_tuning if tune else run_local
        done = run(load_params(params), pipeline_root=pipeline_root)
        typer.echo("\n".join(done.lines()))

    _run(step)


@pipeline_app.command()
def submit(
    params: ParamsOption = Path("params.yaml"),
    host: HostOption = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="Default: drcl-<UTC time>.")]
    = None,
    tune: TuneOption = False,
) -> None:
    """Upload the pipeline (a new version when it changed) and start one run."""
    from drcl.config import load_params
    from drcl.kfp.remote import connect, submit

    def step() -> None:
        p = load_params(params)
        name = run_name or f"{p.kubeflow.pipeline}{'-tune' if tune else ''}-{_utc_stamp()}"
        run_id = submit(connect(p, host, tuning=tune), p, run_name=name, tuning=tune)
        typer.echo(f"run {name!r} created: {run_id}")

    _run(step)


@pipeline_app.command()
def schedule(
    cron: Annotated[str, typer.Option("--cron", help="Six fields, seconds first, e.g. "
                                                     "'0 0 3 * * *' (03:00 daily).")],
    name: Annotated[str, typer.Option("--name", help="The recurring run's name.")]
    = "drcl-scheduled",
    schedules: SchedulesOption = Path("infra/schedules"),
    params: ParamsOption = Path("params.yaml"),
    host: HostOption = None,
) -> None:
    """Declare a recurring run (one run at a time, no catch-up) and apply the schedules.

    Applies the folder's schedules with the new one, then writes its file (NAME.yaml, listed in
    the folder's kustomization) for `drcl pipeline reconcile` and its CronJob; a name declared
    already is refused.
    """
    from pydantic import ValidationError

    from drcl.config import load_params
    from drcl.errors import DrclError
    from drcl.kfp.remote import connect, reconcile
    from drcl.kfp.schedules import ScheduleSpec, check_cron, with_new_schedule, write_schedule

    def step() -> None:
        try:
            spec = ScheduleSpec(name=name, cron=check_cron(cron))
        except ValidationError:
            raise DrclError(f"--name: {name!r} must be lower-case letters, digits and '-'") \
                from None
        p = load_params(params)
        specs = with_new_schedule(schedules, spec)
        for action in reconcile(connect(p, host), p, specs):
            typer.echo(str(action))
        path = write_schedule(schedules, spec)
        typer.echo(f"declared {name!r} ({spec.cron}) in {path}; commit it: the reconciler "
                   "CronJob applies that folder")

    _run(step)


@pipeline_app.command()
def reconcile(
    schedules: SchedulesOption = Path("infra/schedules"),
    params: ParamsOption = Path("params.yaml"),
    host: HostOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
) -> None:
    """Make the cluster's recurring runs match the schedule files (create new, disable old)."""
    from drcl.config import load_params
    from drcl.kfp.remote import connect, reconcile
    from drcl.kfp.schedules import load_schedules

    def step() -> None:
        specs = load_schedules(schedules)
        p = load_params(params)
        plan = reconcile(connect(p, host), p, specs, dry_run=dry_run)
        for action in plan:
            typer.echo(("would " if dry_run else "") + str(action))
        if not plan:
            typer.echo("no schedules declared and none to disable")

    _run(step)


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
