"""The `drcl` command: thin shells around the library functions of each step (drcl.steps)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drcl.cli_common import ParamsOption, run_step
from drcl.kfp.cli import pipeline_app

if TYPE_CHECKING:
    from drcl.vector_index import VectorIndex

app = typer.Typer(
    name="drcl",
    help="Deep Reversible Consistency Learning for cross-modal retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(pipeline_app, name="pipeline")

def _layout():
    """The workspace, with any output set a crash left half-landed finished first."""
    from drcl.atomic import recover
    from drcl.layout import Layout

    layout = Layout()
    recover(layout.out)
    return layout


@app.command()
def resolve(params: ParamsOption = Path("params.yaml")) -> None:
    """Check all of params.yaml; write what device and precision resolve to (resolved.yaml)."""
    from drcl.config import load_params
    from drcl.resolved import RESOLVED_FILE, write_resolved

    def step() -> None:
        resolved = write_resolved(load_params(params))
        typer.echo(f"{RESOLVED_FILE}: device {resolved['device']}, "
                   f"precision {resolved['precision']}")

    run_step(step)


@app.command()
def extract(params: ParamsOption = Path("params.yaml")) -> None:
    """Embed the raw items listed in extract.manifest; writes data/extracted."""
    from drcl.config import load_params
    from drcl.extract.step import extract_dataset

    def step() -> None:
        report = extract_dataset(load_params(params))
        if report.name is None:
            typer.echo("extract: extract.manifest is null; nothing to extract")
            return
        sizes = ", ".join(f"{m} {report.dims[m]}-d {s['train']}/{s['val']}/{s['test']}"
                          for m, s in report.sizes.items())
        typer.echo(f"{report.name}: {sizes}; {report.embedded} embedded, {report.cached} from "
                   f"the cache, {len(report.skipped)} bad item(s) skipped")
        for bad in report.skipped:
            typer.echo(f"skipped {bad.where} ({bad.modality} {bad.id!r}): {bad.reason}", err=True)

    run_step(step)


@app.command()
def prepare(params: ParamsOption = Path("params.yaml")) -> None:
    """Import the configured data source, validate it, split it, write data/prepared."""
    from drcl.config import load_params
    from drcl.data.prepare import prepare_dataset

    def step() -> None:
        manifest = prepare_dataset(load_params(params), out_dir=_layout().data)
        sizes = ", ".join(f"{m} {i.dim}-d {i.sizes['train']}/{i.sizes['val']}/{i.sizes['test']}"
                          for m, i in manifest.modalities.items())
        typer.echo(f"{manifest.name}: {manifest.num_classes} classes; {sizes}")

    run_step(step)


@app.command()
def prior(params: ParamsOption = Path("params.yaml")) -> None:
    """Stage 1: learn the class prior W (SPL), or take the orthogonal baseline."""
    from drcl.config import load_params
    from drcl.stages.prior import fit_prior

    def step() -> None:
        result = fit_prior(load_params(params), _layout())
        scores = ", ".join(f"{m} {s:.4f}" for m, s in result.summary()["scores"].items())
        typer.echo(f"prior: {result.method}" + (f"; chosen {result.chosen} ({scores})"
                                                  if result.chosen else ""))

    run_step(step)


@app.command()
def train(
    modality: Annotated[str, typer.Option("--modality", "-m", help="The modality to train.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Stage 2: RSC training of one modality's encoder against the frozen prior."""
    from drcl.config import load_params
    from drcl.stages.train import train_modality

    def step() -> None:
        result = train_modality(load_params(params), _layout(), modality=modality)
        typer.echo(f"{modality}: best epoch {result.best_epoch}, "
                   f"validation loss {result.best_val_loss:.5f}")

    run_step(step)


@app.command()
def evaluate(params: ParamsOption = Path("params.yaml")) -> None:
    """Evaluate every ordered pair of modalities on the test split; writes metrics/eval.json."""
    from drcl.config import load_params
    from drcl.stages.evaluate import evaluate_encoders

    def step() -> None:
        from drcl.report import mean_figures

        report = evaluate_encoders(load_params(params), _layout())
        typer.echo(json.dumps({name: round(v, 4) for name, v in mean_figures(report).items()}))

    run_step(step)


@app.command()
def tune(
    trials: Annotated[int | None, typer.Option(
        "--trials", min=1, help="Trials a search, instead of tune.trials.")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Search the train settings in tune.space for the best validation MAP@all (the prior
    fixed); writes tune/best.yaml, a profile `drcl profile apply` sets in params.yaml."""
    from drcl.config import load_params
    from drcl.tune import tune as run_tune

    def step() -> None:
        try:
            result = run_tune(load_params(params), _layout(), trials=trials, echo=typer.echo)
        except KeyboardInterrupt:
            typer.echo("drcl: interrupted; finished trials are kept in the study: run "
                       "`drcl tune` again to go on", err=True)
            raise typer.Exit(code=130) from None
        typer.echo(f"validation MAP@all {result.best_map:.4f} (before: "
                   f"{result.baseline_map:.4f}); apply with `drcl profile apply "
                   f"{result.best_file}`, then `dvc repro`")

    run_step(step)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


@app.command()
def metrics() -> None:
    """The last run's results in a terminal's width: the prior, each modality's preprocessing,
    mean MAP, and MAP@all as a query x database matrix (`dvc metrics show` lists every key)."""
    from drcl.report import metrics_summary

    run_step(lambda: typer.echo(metrics_summary(_layout())))


EXIT_CHALLENGER = 3
"""`drcl promote` / `drcl add-modality`: 0 champion (or already), 3 challenger, 1 error."""

ReportOption = Annotated[Path | None, typer.Option(
    "--report", help="Also write the outcome as JSON to this file.", dir_okay=False)]


def _promotion_exit(outcome) -> None:
    typer.echo(outcome.describe())
    if outcome.verdict == "challenger":
        raise typer.Exit(code=EXIT_CHALLENGER)


@app.command()
def promote(
    modality: Annotated[list[str] | None, typer.Option(
        "--modality", "-m", help="Promote only this modality's encoder (trained against the "
        "champions' prior) into the champion set; repeatable. Default: the whole pipeline.")
    ] = None,
    report: ReportOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Register the encoders; make them champion if they clear the MAP gate (params promotion).

    Exit code 0: champion (or already champion); 3: kept as challenger; 1: error.
    """
    from drcl.config import load_params
    from drcl.promotion import promote as promote_candidates

    def step():
        return promote_candidates(load_params(params), _layout(), modalities=modality or [],
                                  report=report)

    _promotion_exit(run_step(step))


@app.command("add-modality")
def add_modality(
    modality: Annotated[str, typer.Option("--modality", "-m", help="The new modality.")],
    report: ReportOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Train a modality against the champions' prior and promote it alone (exit codes as promote).
    """
    from drcl.config import load_params
    from drcl.promotion import add_modality as add

    _promotion_exit(run_step(lambda: add(load_params(params), _layout(), modality=modality,
                                     report=report)))


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option(
        "--to", help="The set version to make champion (`drcl history` lists them). Default: "
        "the champion before this one, so a second rollback undoes the first.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
    force: Annotated[bool, typer.Option(
        "--force", help="Allow --to a set that never was champion (never cleared the gate); "
        "needs --reason.")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Make an earlier set the champion again."""
    from drcl.config import load_params
    from drcl.promotion import rollback as roll_back

    def step() -> None:
        was, now = roll_back(load_params(params), to=to, reason=reason, force=force)
        typer.echo(f"champion: set v{now} (was v{was})")

    run_step(step)


@app.command()
def history(
    output: Annotated[OutputFormat, typer.Option("--format", help="table or json.")
                      ] = OutputFormat.table,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Every promotion and rollback of the champion set: when, who, from which set, why."""
    from datetime import UTC, datetime

    from drcl.config import load_params
    from drcl.promotion import history as read_history

    def step() -> None:
        events = read_history(load_params(params))
        if output is OutputFormat.json:
            typer.echo(json.dumps(events, indent=2))
            return
        if not events:
            typer.echo("no promotion yet")
        for e in events:
            when = datetime.fromtimestamp(e.get("at", 0) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            typer.echo(f"{when}  {e['action']:8s}  v{e['champion']:<4} (was "
                       f"{'v' + e['replaces'] if e.get('replaces') else 'none'})  "
                       f"by {e.get('by', '?')}" + (f"  {e['reason']}" if e.get("reason") else ""))

    run_step(step)


@app.command()
def champion(
    storage_uri: Annotated[bool, typer.Option(
        "--storage-uri", help="Print only where the set's MLflow Model is stored (a serving "
        "runtime's storageUri).")] = False,
    artifacts_destination: Annotated[str | None, typer.Option(
        help="The tracking server's --artifacts-destination, when it proxies artifacts.")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """The champion set: its version, its encoders, and the MLflow Model that serves it."""
    from drcl.config import load_params
    from drcl.errors import DrclError
    from drcl.registry import Registry

    def step() -> None:
        registry = Registry.open(load_params(params))
        found = registry.champion()
        if found is None:
            raise DrclError(f"registry: {registry.set_model} has no champion yet; promote one "
                            "with `drcl promote`")
        if storage_uri:
            typer.echo(registry.storage_uri(found.version,
                                            artifacts_destination=artifacts_destination))
            return
        typer.echo(f"{registry.set_model} v{found.version}: models:/{registry.set_model}"
                   f"@champion, prior {found.prior_sha256[:12]}")
        for modality, member in found.members.items():
            tags = registry.client.get_model_version(member.model, member.version).tags
            typer.echo(f"  {modality}: {member.describe()}, {tags.get('drcl.input_dim', '?')}-d "
                       f"{tags.get('drcl.extractor', 'precomputed')} features")

    run_step(step)


@app.command()
def serve(
    model: Annotated[str, typer.Option(
        "--model", "-m", help="The model to serve: a registry URI or an MLflow Model folder.")]
    = "models:/drcl-set@champion",
    host: Annotated[str, typer.Option(envvar="DRCL_SERVE_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="DRCL_SERVE_PORT")] = 5001,
    workers: Annotated[int, typer.Option(min=1, envvar="DRCL_SERVE_WORKERS",
                                         help="Processes, each with the model loaded.")] = 1,
    max_request_mb: Annotated[float, typer.Option(
        min=0.001, envvar="DRCL_SERVE_MAX_REQUEST_MB",
        help="Larger request bodies get a 413 before they are read whole.")] = 16.0,
) -> None:
    """Serve a set (or an encoder) over HTTP: MLflow's scoring server (POST /invocations, GET
    /ping) with request limits in front; the model config comes from
    MLFLOW_PYFUNC_INFERENCE_CONFIG, as for `mlflow models serve`."""
    import os

    from drcl.errors import DrclError

    def step() -> None:
        import uvicorn
        from mlflow.exceptions import MlflowException

        from drcl.serving import server

        os.environ[server.MODEL_ENV] = model
        os.environ[server.LIMIT_ENV] = str(max_request_mb)
        try:
            loaded = server.load(model)  # a model that cannot load stops here, in one line
        except MlflowException as exc:
            raise DrclError(f"{model}: {str(exc.message).splitlines()[0]}") from None
        if workers == 1:
            uvicorn.run(server.create_app(loaded), host=host, port=port, log_level="info")
        else:
            del loaded
            uvicorn.run("drcl.serving.server:create_app", factory=True, host=host, port=port,
                        workers=workers, log_level="info")

    run_step(step)


@app.command()
def unlock(
    holder: Annotated[str, typer.Option(
        "--holder", help="The holder the lock error names (user@host/machine:pid:start).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Break the registry's commit lock of a holder that died where drcl cannot tell (another
    host). A holder on this host that died is detected at once, with no need for this."""
    from drcl.config import load_params
    from drcl.registry import Registry

    def step() -> None:
        Registry.open(load_params(params)).unlock(holder)
        typer.echo(f"lock of {holder} broken")

    run_step(step)


FeaturesKeyOption = Annotated[str, typer.Option(
    "--key", help="The array to read from a .npz features file.")]


@app.command()
def index(
    modality: Annotated[str, typer.Option("--modality", "-m", help="The database's modality.")],
    features: Annotated[Path, typer.Option(help="Database features: .npy, or .npz (with ids).",
                                           dir_okay=False)],
    out: Annotated[Path, typer.Option(help="The index file to write (.npz).", dir_okay=False)],
    key: FeaturesKeyOption = "features",
    queries: Annotated[Path | None, typer.Option(
        help="Queries to measure an approximate index's recall on, as it will be asked (e.g. "
        "the validation split of the other modality); default: held-back database items.",
        dir_okay=False)] = None,
    query_modality: Annotated[str | None, typer.Option(
        "--query-modality", "-q", help="The modality of --queries.")] = None,
    queries_key: Annotated[str, typer.Option(
        "--queries-key", help="The array to read from a .npz queries file.")] = "features",
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Embed a database once with the champion encoder, so searches need not re-embed it:
    searched exactly up to `index.exact_max_items` items, above that by the approximate index
    that reaches `index.recall_at_10` (params.yaml `index`)."""
    from drcl.config import load_params
    from drcl.search import build_index, read_features

    def step() -> None:
        built = build_index(load_params(params), modality=modality,
                            features=read_features(features, key=key), out=out,
                            queries=None if queries is None else read_features(
                                queries, key=queries_key),
                            query_modality=query_modality,
                            log=lambda line: typer.echo(line, err=True))
        typer.echo(f"{out}: {built.vectors.size} {modality} items embedded by "
                   f"{built.meta['model']} v{built.meta['version']}; "
                   f"{_index_summary(built.vectors)}")

    run_step(step)


def _index_summary(vectors: VectorIndex) -> str:
    if vectors.layout.kind == "flat":
        return vectors.layout.describe()
    on = ("held-back items" if vectors.meta.get("calibrated_on") == "database items"
          else "given queries")
    return (f"{vectors.layout.describe()}, nprobe {vectors.nprobe}, recall@10 "
            f"{vectors.meta['recall_at_10']:.3f} on {vectors.meta['calibration_queries']} {on}")


@app.command("index-add")
def index_add(
    index_file: Annotated[Path, typer.Argument(help="An index from `drcl index`.",
                                               dir_okay=False)],
    features: Annotated[Path, typer.Option(help="New items' features: .npy, or .npz (with "
                                           "ids).", dir_okay=False)],
    key: FeaturesKeyOption = "features",
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Add items to an index by id, embedded by the encoder that built it; no rebuild."""
    from drcl.config import load_params
    from drcl.search import read_features, update_index

    def step() -> None:
        index, added = update_index(load_params(params), index_file,
                                    add=read_features(features, key=key))
        typer.echo(f"{index_file}: {added} items added, {index.vectors.size} in all")

    run_step(step)


@app.command("index-remove")
def index_remove(
    index_file: Annotated[Path, typer.Argument(help="An index from `drcl index`.",
                                               dir_okay=False)],
    ids: Annotated[list[str], typer.Argument(help="Ids of the items to remove.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Remove items from an index by id; every id must be in it. No rebuild."""
    from drcl.config import load_params
    from drcl.search import update_index

    def step() -> None:
        index, added = update_index(load_params(params), index_file, remove=ids)
        typer.echo(f"{index_file}: {-added} items removed, {index.vectors.size} left")

    run_step(step)


@app.command()
def search(
    database: Annotated[list[Path], typer.Option(
        help="An index from `drcl index`, or features; repeated: the shards of one database "
        "(indexes each), searched in turn and merged.", dir_okay=False)],
    query_modality: Annotated[str | None, typer.Option("--query-modality", "-q",
                                                       help="The queries' modality.")] = None,
    queries: Annotated[Path | None, typer.Option(
        help="Query features: .npy, or .npz (with ids); with --raw, a text file (one item a "
        "line) or a folder of images.")] = None,
    class_text: Annotated[list[str] | None, typer.Option(
        "--class-text", help="Search by class instead: a class name of the champion set, or "
        "any text describing a class, seen in training or not (a semantic prior's set); "
        "repeatable.")] = None,
    database_modality: Annotated[str | None, typer.Option(
        "--database-modality", "-d", help="The database's modality (read from an index).")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Matches per query.")] = 10,
    output: Annotated[OutputFormat, typer.Option("--format", help="table or json.")
                      ] = OutputFormat.table,
    raw: Annotated[bool, typer.Option(
        "--raw", help="The queries are raw items for the extractor the champion encoder "
        "expects (recorded in the registry).")] = False,
    key: FeaturesKeyOption = "features",
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Top k database items for each query, by the champion encoders (models:/NAME@champion)."""
    from drcl.config import load_params
    from drcl.search import search as run_search

    def step() -> None:
        result = run_search(load_params(params), query_modality=query_modality, queries=queries,
                            database=database, database_modality=database_modality, key=key,
                            k=top_k, raw=raw, class_texts=class_text)
        typer.echo(result.to_json() if output is OutputFormat.json else result.to_table())

    run_step(step)


profile_app = typer.Typer(help="Data-set profiles: the params that select a data set.",
                          no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("list")
def profile_list() -> None:
    """The profiles in params/ and what each selects."""
    from drcl.profiles import list_profiles

    for name, description in list_profiles():
        typer.echo(f"{name:20s} {description}")


@profile_app.command("apply")
def profile_apply(
    name: Annotated[str, typer.Argument(help="A profile in params/ (e.g. wikipedia_lda), or the "
                                        "path of a profile file.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Write a profile's keys into params.yaml (comments and other keys kept); `dvc repro`,
    `dvc exp run` and every drcl command then use that data set."""
    from drcl.profiles import apply_profile, find_profile

    def step() -> None:
        profile = find_profile(name)
        changes = apply_profile(profile, params)
        if not changes:
            typer.echo(f"{params}: already set as {profile} says; nothing changed")
        for change in changes:
            typer.echo(f"{params}: {change}")

    run_step(step)


example_app = typer.Typer(help="Example data sets that README.md's walk-throughs run on.",
                          no_args_is_help=True)
app.add_typer(example_app, name="example")


@example_app.command("scene")
def example_scene(
    path: Annotated[Path, typer.Argument(help="The .npz file to write.")]
    = Path("data/scene.npz"),
) -> None:
    """A feature file in the .npz format: three views of four scene classes."""
    from drcl.examples import write_scene

    run_step(lambda: typer.echo(f"wrote {write_scene(path)}: views view0, view1 (paired by id), "
                                "view2; classes beach, city, forest, snow"))


@example_app.command("raw")
def example_raw(
    folder: Annotated[Path, typer.Argument(help="The folder to write (manifest.csv inside).")]
    = Path("data/raw"),
) -> None:
    """Raw items and their manifest: digit photos (image), captions (text) and scans (scan)."""
    from drcl.examples import write_raw

    run_step(lambda: typer.echo(f"wrote {len(write_raw(folder))} items to {folder}/manifest.csv:"
                                " modalities image, text, scan; classes zero, one, two"))


storage_app = typer.Typer(help="The S3 bucket behind the DVC remote.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")


@storage_app.command("check")
def storage_check(
    bucket: Annotated[str, typer.Option(help="Bucket name, or the remote's s3://bucket/prefix.")],
    create: Annotated[bool, typer.Option(help="Create the bucket when it is missing.")] = False,
    endpoint: Annotated[str | None, typer.Option(
        help="S3 endpoint URL; default $AWS_ENDPOINT_URL, else AWS.")] = None,
) -> None:
    """Check that the bucket answers with the credentials in the environment."""
    from drcl.storage import check_bucket

    def step() -> None:
        status = check_bucket(bucket, create=create, endpoint_url=endpoint)
        action = "created" if status.created else "reachable"
        typer.echo(f"bucket {status.bucket!r} at {status.endpoint}: {action}, credentials accepted")

    run_step(step)
