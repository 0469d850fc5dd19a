"""A compact view of the pipeline's metrics files, for people rather than `dvc metrics show`."""

from __future__ import annotations

import json
from pathlib import Path

from drcl.errors import DrclError
from drcl.layout import Layout
from drcl.rerank import Rerank


def _read(path: Path) -> dict:
    if not path.is_file():
        raise DrclError(f"{path}: not there yet (run `dvc repro`)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DrclError(f"{path}: not valid JSON ({exc})") from None


def flatten(report: dict, prefix: str = "") -> dict[str, float]:
    """eval.json as `table.direction` names (`map_all.mean`, `unseen.map_all.image->text`):
    MLflow's and Kubeflow's metric names."""
    out: dict[str, float] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = float(value)
    return out


def tables(report: dict, prefix: str = "") -> dict[str, dict[str, float]]:
    """Each direction table of eval.json by name: `map_all`, ..., `unseen map_all`."""
    out: dict[str, dict[str, float]] = {}
    for name, table in report.items():
        if not isinstance(table, dict):
            continue  # a setting's values (`rerank`), not a table
        if "mean" in table:
            out[prefix + name] = table
        else:
            out |= tables(table, f"{prefix}{name} ")
    return out


def mean_figures(report: dict, prefix: str = "") -> dict[str, float]:
    """Each table's mean: `map_all`, `map_at_50`, and with classes held out `unseen.map_all`,
    `seen.map_all`, ... (eval.json's tables, one figure each)."""
    return {name.replace(" ", "."): table["mean"] for name, table in tables(report).items()}


def metrics_summary(layout: Layout) -> str:
    """The prior, each modality's preprocessing and epoch, mean MAP and the MAP@all matrix."""
    evaluation = _read(layout.eval_metrics)
    prior = _read(layout.prior_metrics)
    map_all = evaluation["map_all"]
    at_k = next((k for k in evaluation if k.startswith("map_at_")), None)
    lines = [f"prior: {prior.get('method')}" + (f", chosen {prior['chosen']}"
                                                  if prior.get("chosen") else "")]
    modalities = list(dict.fromkeys(d.split("->")[0] for d in map_all if d != "mean"))
    for m in modalities:
        trained = layout.train_metrics(m)
        if trained.is_file():
            info = json.loads(trained.read_text())
            chosen = info.get("standardize", {})
            how = "standardised" if chosen.get("standardize") else "as given"
            lines.append(f"  {m}: inputs {how} ({chosen.get('how', '?')}), epoch "
                         f"{info.get('best_epoch')}")
    mean = f"MAP@all {map_all['mean']:.4f}"
    if at_k:
        mean += f", {at_k.replace('map_at_', 'MAP@')} {evaluation[at_k]['mean']:.4f}"
    lines.append(f"test, mean over {len(map_all) - 1} directions: {mean}")
    if "reranked" in evaluation:
        chosen = Rerank.from_dict(evaluation.get("rerank"))
        lines.append(f"  re-ranked ({chosen.describe()}, chosen on validation): MAP@all "
                     f"{evaluation['reranked']['map_all']['mean']:.4f}")
    for subset, what in (("unseen", "classes unseen in training (zero-shot)"),
                         ("seen", "classes seen in training")):
        if subset in evaluation:
            lines.append(f"  {what}: MAP@all {evaluation[subset]['map_all']['mean']:.4f}")
    width = max(len(m) for m in modalities + ["query"])
    lines.append("MAP@all  " + "query \\ database".ljust(width) + "  "
                 + "  ".join(m[:6].rjust(6) for m in modalities))
    for q in modalities:
        cells = ["     -" if q == d else f"{map_all.get(f'{q}->{d}', float('nan')):6.3f}"
                 for d in modalities]
        lines.append("         " + q.ljust(max(width, 16)) + "  " + "  ".join(cells))
    return "\n".join(lines)
