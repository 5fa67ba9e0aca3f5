"""Loss curves. Every function returns the matplotlib Figure, so tests (and you) can inspect it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def moving_average(x: Sequence[float], w: int = 5) -> np.ndarray:
    """Mean of every window of ``w`` consecutive values (``len(x) - w + 1`` values)."""
    x = np.asarray(x, dtype=float)
    if w < 1:
        raise ValueError(f"Invalid window: {w} (must be at least 1)")
    if len(x) < w:
        raise ValueError(f"moving_average needs at least w={w} values, got {len(x)}")
    return np.convolve(x, np.ones(w), "valid") / w


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize)


def _finish(ax: Axes, title: str | None, ymin: float | None, ymax: float | None) -> None:
    ax.set_title(title)
    ax.set_xlabel("Update steps")
    ax.set_ylabel("Loss")
    ax.set_ylim(bottom=ymin, top=ymax)
    ax.grid(True)


def plot_loss(
    loss: Sequence[float],
    title: str | None = None,
    ymin: float | None = 0,
    ymax: float | None = None,
    figsize: tuple[float, float] = (15, 5),
    ax: Axes | None = None,
) -> Figure:
    """Plot the per-step loss of one run. ``ymax`` zooms in (e.g. to cut off an early spike)."""
    fig, ax = _axes(ax, figsize)
    ax.plot(loss)
    _finish(ax, title, ymin, ymax)
    return fig


def plot_losses(
    losses: Sequence[Sequence[float]],
    labels: Sequence[str],
    title: str | None = None,
    ymin: float | None = 0,
    ymax: float | None = None,
    figsize: tuple[float, float] = (15, 5),
    ax: Axes | None = None,
) -> Figure:
    """Plot several runs' losses on one set of axes, one labelled line each."""
    losses, labels = list(losses), [str(label) for label in labels]
    if len(losses) != len(labels):
        raise ValueError(f"plot_losses got {len(losses)} loss curves but {len(labels)} labels")
    fig, ax = _axes(ax, figsize)
    for loss, label in zip(losses, labels):
        ax.plot(loss, label=label)
    _finish(ax, title, ymin, ymax)
    ax.legend(loc="upper right")
    return fig
