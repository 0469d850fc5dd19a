"""Pictures people would rather look at than read: training curves and PR curves (PNG)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from drcl.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def training_curve_png(history: Sequence[Mapping[str, float]], path: str | Path, *,
                       title: str, best_epoch: int) -> None:
    """Training and validation loss per epoch, with the selected epoch marked; with label
    correction, a second panel shows the share of items kept and, where clean labels exist,
    how many of the labels trained on were right."""
    corrected = [h for h in history if "correction_kept" in h]
    fig, axes = plt.subplots(2 if corrected else 1, 1, figsize=(6, 6.5 if corrected else 4),
                             squeeze=False, sharex=True, layout="constrained")
    ax = axes[0, 0]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss (mixup)")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax.axvline(best_epoch, color="grey", linestyle=":", label=f"selected epoch {best_epoch}")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    if corrected:
        share = axes[1, 0]
        at = [h["epoch"] for h in corrected]
        share.plot(at, [h["correction_kept"] for h in corrected], label="items kept")
        share.plot(at, [h["correction_mass"] for h in corrected], linestyle="--",
                   label="trusted mass")
        if "correction_label_accuracy" in corrected[0]:
            share.plot(at, [h["correction_label_accuracy"] for h in corrected],
                       label="labels right (of kept)")
        share.set_ylim(0, 1.02)
        share.set_ylabel("share")
        share.legend()
    axes[-1, 0].set_xlabel("epoch")
    _save(fig, path)


def spl_scores_png(histories: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path, *,
                   title: str, chosen: str | None) -> None:
    """SPL's quality score S_k per epoch, one line per modality, the chosen one drawn bold."""
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, history in sorted(histories.items()):
        ax.plot([h["epoch"] for h in history], [h["score"] for h in history],
                label=f"{name} (chosen)" if name == chosen else name,
                linewidth=2.5 if name == chosen else 1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("quality score S_k")
    ax.set_title(title)
    if histories:
        ax.legend(fontsize="small")
    _save(fig, path)


def pr_curves_png(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                  path: str | Path, *, title: str) -> None:
    """One panel per query modality, one line per database modality."""
    by_query: dict[str, list[tuple[str, Sequence[float], Sequence[float]]]] = {}
    for direction, (recall, precision) in curves.items():
        query, database = direction.split("->")
        by_query.setdefault(query, []).append((database, recall, precision))
    cols = min(3, len(by_query)) or 1
    rows = math.ceil(len(by_query) / cols) or 1
    # constrained layout keeps each panel's title clear of the x label of the panel above
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(by_query):]:
        ax.axis("off")
    for ax, (query, lines) in zip(axes.flat, sorted(by_query.items()), strict=False):
        for database, recall, precision in lines:
            ax.plot(recall, precision, label=f"-> {database}")
        ax.set_title(f"query: {query}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    _save(fig, path)
