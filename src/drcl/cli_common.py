"""What every `drcl` command shares: the --params option and the one error edge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from drcl.errors import DrclError

T = TypeVar("T")

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="The params.yaml to read.", dir_okay=False)
]


def run_step(step: Callable[[], T]) -> T:
    """Run a step; a DrclError becomes one line on stderr and exit code 1."""
    try:
        return step()
    except DrclError as exc:
        typer.echo(f"drcl: error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        typer.echo("drcl: interrupted; no output was written", err=True)
        raise typer.Exit(code=130) from None
