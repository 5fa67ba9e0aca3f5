"""Loss curves. Every function returns the matplotlib Figure, so tests (and you) can inspect it.

Smoothing: ``plot_loss(..., smooth=w)`` and ``plot_losses(..., smooth=w)`` draw the moving average of
``w`` steps. The value at step ``i`` is the mean of steps ``i - w + 1 ... i`` (the window *ending* at
``i``), so the smoothed curve starts at step ``w - 1`` and never runs ahead of the data it averages.

Legends are drawn outside the axes (to the right), so they never hide a curve; ``logy=True`` puts the
loss on a log scale, which separates curves that overlap near the bottom of a linear plot.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

LEGEND_PLACES = ("outside", "inside", "none")


def moving_average(x: Sequence[float], w: int = 5) -> np.ndarray:
    """Mean of every window of ``w`` consecutive values (``len(x) - w + 1`` values).

    Value ``k`` is the mean of ``x[k : k + w]``: it belongs at step ``k + w - 1``, where its window ends
    (see :func:`smoothed`).
    """
    x = np.asarray(x, dtype=float)
    if w < 1:
        raise ValueError(f"Invalid window: {w} (must be at least 1)")
    if len(x) < w:
        raise ValueError(f"moving_average needs at least w={w} values, got {len(x)}")
    return np.convolve(x, np.ones(w), "valid") / w


def smoothed(x: Sequence[float], w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of the moving average of ``w`` steps, each value at the step where its window ends.

    ``steps`` is ``w - 1, w, ..., len(x) - 1``; ``w = 1`` returns the data itself at ``0 ... len(x) - 1``.
    """
    values = moving_average(x, w)
    return np.arange(w - 1, w - 1 + len(values)), values


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    # "constrained" layout makes room for a legend outside the axes.
    return plt.subplots(figsize=figsize, layout="constrained")


def _finish(
    ax: Axes, title: str | None, ymin: float | None, ymax: float | None, logy: bool, smooth: int | None
) -> None:
    ax.set_title(title)
    ax.set_xlabel("Update steps")
    ax.set_ylabel("Loss" if not smooth or smooth == 1 else f"Loss (moving average of {smooth} steps)")
    if logy:
        ax.set_yscale("log")
        ymin = None if ymin is not None and ymin <= 0 else ymin  # a log axis cannot reach 0
    ax.set_ylim(bottom=ymin, top=ymax)
    ax.grid(True, which="both" if logy else "major", alpha=0.5 if logy else 1.0)


def _check(smooth: int | None, legend: str) -> None:
    if smooth is not None and smooth < 1:
        raise ValueError(f"Invalid smooth window: {smooth} (must be at least 1, or None)")
    if legend not in LEGEND_PLACES:
        raise ValueError(f"Invalid legend place: {legend!r} (choose one of {LEGEND_PLACES})")


def _draw(ax: Axes, loss: Sequence[float], smooth: int | None, **style: object) -> None:
    if smooth:
        steps, values = smoothed(loss, smooth)
        ax.plot(steps, values, **style)
    else:
        ax.plot(np.arange(len(loss)), np.asarray(loss, dtype=float), **style)


def _legend(ax: Axes, legend: str) -> None:
    if legend == "outside":
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    elif legend == "inside":
        ax.legend(loc="best")


def plot_loss(
    loss: Sequence[float],
    title: str | None = None,
    ymin: float | None = 0,
    ymax: float | None = None,
    figsize: tuple[float, float] = (15, 5),
    ax: Axes | None = None,
    smooth: int | None = None,
    logy: bool = False,
) -> Figure:
    """Plot the per-step loss of one run. ``ymax`` zooms in (e.g. to cut off an early spike).

    ``smooth=w`` draws the moving average of ``w`` steps instead, each value at the step where its window
    ends (x = w - 1 ... n - 1). ``logy=True`` uses a log scale for the loss.
    """
    _check(smooth, "none")
    fig, ax = _axes(ax, figsize)
    _draw(ax, loss, smooth)
    _finish(ax, title, ymin, ymax, logy, smooth)
    return fig


def plot_losses(
    losses: Sequence[Sequence[float]],
    labels: Sequence[str],
    title: str | None = None,
    ymin: float | None = 0,
    ymax: float | None = None,
    figsize: tuple[float, float] = (15, 5),
    ax: Axes | None = None,
    smooth: int | None = None,
    logy: bool = False,
    legend: str = "outside",
) -> Figure:
    """Plot several runs' losses on one set of axes, one labelled line each.

    ``smooth=w`` draws each run's moving average of ``w`` steps at the steps where the windows end
    (x = w - 1 ... n - 1). ``logy=True`` uses a log scale, for curves that overlap on a linear one.
    ``legend`` is ``"outside"`` (right of the axes, never on a curve; the default), ``"inside"``
    (matplotlib's best spot) or ``"none"``.
    """
    losses, labels = list(losses), [str(label) for label in labels]
    if len(losses) != len(labels):
        raise ValueError(f"plot_losses got {len(losses)} loss curves but {len(labels)} labels")
    _check(smooth, legend)
    fig, ax = _axes(ax, figsize)
    for loss, label in zip(losses, labels):
        _draw(ax, loss, smooth, label=label)
    _finish(ax, title, ymin, ymax, logy, smooth)
    _legend(ax, legend)
    return fig
