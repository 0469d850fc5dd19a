"""The `drcl` command: thin shells around the step functions in drcl.stages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from drcl.errors import DrclError

T = TypeVar("T")

app = typer.Typer(
    name="drcl",
    help="Deep Reversible Consistency Learning for cross-modal retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="The params.yaml to read.", dir_okay=False)
]


def _run(step: Callable[[], T]) -> T:
    """Run a step; a DrclError becomes one line on stderr and exit code 1."""
    try:
        return step()
    except DrclError as exc:
        typer.echo(f"drcl: error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        typer.echo("drcl: interrupted; no output was written", err=True)
        raise typer.Exit(code=130) from None


def _layout():
    from drcl.layout import Layout

    return Layout()


@app.command()
def prepare(params: ParamsOption = Path("params.yaml")) -> None:
    """Import the configured data source, validate it, split it, write data/prepared."""
    from drcl.config import load_params
    from drcl.data.prepare import prepare_dataset

    def step() -> None:
        p = load_params(params)
        manifest = prepare_dataset(p.data, seed=p.seed, out_dir=_layout().data)
        sizes = ", ".join(f"{m} {i.dim}-d {i.sizes['train']}/{i.sizes['val']}/{i.sizes['test']}"
                          for m, i in manifest.modalities.items())
        typer.echo(f"{manifest.name}: {manifest.num_classes} classes; {sizes}")

    _run(step)


@app.command()
def prior(params: ParamsOption = Path("params.yaml")) -> None:
    """Stage 1: learn the class prior W (SPL), or take the orthogonal baseline."""
    from drcl.stages import fit_prior, params_for_data

    def step() -> None:
        layout = _layout()
        p, manifest = params_for_data(params, layout)
        result = fit_prior(p, manifest, layout)
        scores = ", ".join(f"{m} {s:.4f}" for m, s in result.summary()["scores"].items())
        typer.echo(f"prior: {result.method}" + (f"; chosen {result.chosen} ({scores})"
                                                  if result.chosen else ""))

    _run(step)


@app.command()
def train(
    modality: Annotated[str, typer.Option("--modality", "-m", help="The modality to train.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Stage 2: RSC training of one modality's encoder against the frozen prior."""
    from drcl.stages import train_modality

    def step() -> None:
        result = train_modality(params, _layout(), modality=modality)
        typer.echo(f"{modality}: best epoch {result.best_epoch}, "
                   f"validation loss {result.best_val_loss:.5f}")

    _run(step)


@app.command()
def evaluate(params: ParamsOption = Path("params.yaml")) -> None:
    """Evaluate every ordered pair of modalities on the test split; writes metrics/eval.json."""
    from drcl.config import load_params
    from drcl.data.dataset import load_manifest
    from drcl.stages import evaluate_encoders

    def step() -> None:
        layout = _layout()
        report = evaluate_encoders(load_params(params), load_manifest(layout.data), layout)
        summary = {name: round(table["mean"], 4) for name, table in report.items()}
        typer.echo(json.dumps(summary))

    _run(step)
