"""Optimiser playground: watch ``torch.optim`` optimisers walk over 2-D surfaces.

Three layers, each usable on its own:

* :func:`run_optimizer` runs one ``torch.optim`` optimiser on a 2-parameter
  tensor and records every iterate, so the path *is* PyTorch's path;
* :func:`plot_paths` draws paths on a contour plot plus a loss-per-step panel
  (a plain matplotlib figure: works everywhere, including static renderers);
* :class:`Playground` wraps both in ipywidgets sliders that redraw live.

    >>> from course_utils.playground import Playground
    >>> Playground("rosenbrock", optimizers=["SGD", "Momentum", "Adam"])   # in a notebook
    >>> Playground("quadratic", extra={"mine": MyAdam})    # your own optimizer class next to torch's

The widget is rendered as a PNG inside an ``ipywidgets.Image``: no extra
dependency (no ipympl), and the same pixels are offered as a plain
``image/png`` fallback wherever widgets cannot render (nbviewer, GitHub, a
notebook executed headless by nbclient). It works with ipywidgets 7 (Colab's
7.7.1) and 8 alike: see :mod:`course_utils.widgets`.

Gradient noise
--------------
``run_optimizer(..., noise=sigma)`` adds ``sigma * xi_k`` to every gradient, with
``xi_k ~ N(0, I)`` drawn from ``torch.Generator().manual_seed(seed)`` (one
``torch.randn(2, dtype=float64)`` per step): gradient descent becomes a model of
SGD, whose mini-batch gradient is the full gradient plus noise. Every optimiser
sees the same noise sequence, so their paths can be compared.

Nesterov convention
-------------------
``torch.optim.SGD(nesterov=True)`` stores, for gradient ``g_k = grad f(p_k)``,
``buf_k = momentum * buf_{k-1} + g_k`` and updates
``p_{k+1} = p_k - lr * (g_k + momentum * buf_k)``.  This is Sutskever et al.'s
Nesterov momentum written in shifted variables: with the "classical" position
``theta_k = p_k + lr * momentum * buf_{k-1}`` (``buf_{-1} = 0``) one has

    look-ahead   p_k        = theta_k - lr * momentum * buf_{k-1}   (momentum jump)
    gradient step theta_{k+1} = p_k - lr * grad f(p_k)

So PyTorch's parameter is always the *look-ahead point*, where the gradient is
taken.  The playground draws PyTorch's iterates as the Nesterov path (marked
with x: "gradient taken here") and, dashed, the zig-zag
``theta_0 -> p_0 -> theta_1 -> p_1 ...`` through the classical positions (o).
"""

from __future__ import annotations

import html
import inspect
import math
from dataclasses import dataclass, field

import matplotlib
import matplotlib.axes
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from course_utils.surfaces import SURFACES, Surface, get_surface
from course_utils.widgets import import_widgets, rgba_png, widget_bundle

__all__ = [
    "OPTIMIZERS",
    "HParam",
    "OptimizerSpec",
    "Trajectory",
    "Playground",
    "custom_optimizer",
    "default_hparams",
    "draw_surface",
    "get_optimizer",
    "make_optimizer",
    "resolve_hparams",
    "plot_paths",
    "run_optimizer",
]

# Parameters beyond this size count as diverged: the run stops and is reported.
DIVERGED_ABS = 1e6


@dataclass(frozen=True)
class HParam:
    """One slider: ``name`` is the slider's name (``beta1``), ``torch_name`` the keyword it feeds."""

    name: str
    torch_name: str
    low: float
    high: float
    log: bool = False
    step: float = 0.01


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimiser: a ``torch.optim`` class, fixed keyword arguments and tunable sliders."""

    name: str
    cls: type[torch.optim.Optimizer]
    fixed: dict = field(default_factory=dict)
    hparams: tuple[HParam, ...] = ()
    color: str = "k"
    defaults: dict = field(default_factory=dict)  # overrides of torch's defaults (besides lr)
    like: str | None = None  # a built-in whose per-surface defaults (lr, ...) this one borrows

    def torch_defaults(self) -> dict:
        """Default value of every tunable keyword: ours if set, otherwise the class's own."""
        sig = inspect.signature(self.cls.__init__).parameters
        out = {}
        for h in self.hparams:
            if h.torch_name in self.defaults:
                out[h.torch_name] = self.defaults[h.torch_name]
            else:
                default = sig[h.torch_name].default
                out[h.torch_name] = tuple(default) if isinstance(default, (tuple, list)) else float(default)
        return out


_LR = HParam("lr", "lr", 1e-4, 10.0, log=True)
_LR_ADADELTA = HParam("lr", "lr", 1e-2, 100.0, log=True)
_MOMENTUM = HParam("momentum", "momentum", 0.0, 0.99)
_EPS = HParam("eps", "eps", 1e-10, 1.0, log=True)

OPTIMIZERS: dict[str, OptimizerSpec] = {
    s.name: s
    for s in [
        OptimizerSpec("SGD", torch.optim.SGD, {}, (_LR,), "tab:blue"),
        OptimizerSpec("Momentum", torch.optim.SGD, {}, (_LR, _MOMENTUM), "tab:orange", {"momentum": 0.9}),
        OptimizerSpec(
            "Nesterov", torch.optim.SGD, {"nesterov": True}, (_LR, _MOMENTUM), "tab:green", {"momentum": 0.9}
        ),
        OptimizerSpec("Adagrad", torch.optim.Adagrad, {}, (_LR, _EPS), "tab:red"),
        OptimizerSpec(
            "Adadelta",
            torch.optim.Adadelta,
            {},
            (_LR_ADADELTA, HParam("rho", "rho", 0.0, 0.999, step=0.001), _EPS),
            "tab:purple",
        ),
        OptimizerSpec(
            "RMSprop",
            torch.optim.RMSprop,
            {},
            (_LR, HParam("alpha", "alpha", 0.0, 0.999, step=0.001), _EPS),
            "tab:brown",
        ),
        OptimizerSpec(
            "Adam",
            torch.optim.Adam,
            {},
            (
                _LR,
                HParam("beta1", "betas", 0.0, 0.99),
                HParam("beta2", "betas", 0.5, 0.9999, step=0.0001),
                _EPS,
            ),
            "tab:pink",
        ),
    ]
}


# Sliders a custom optimizer class gets, for the keyword arguments its __init__ accepts (torch.optim's names).
_CUSTOM_HPARAMS = (
    _LR,
    _MOMENTUM,
    HParam("beta1", "betas", 0.0, 0.99),
    HParam("beta2", "betas", 0.5, 0.9999, step=0.0001),
    HParam("rho", "rho", 0.0, 0.999, step=0.001),
    HParam("alpha", "alpha", 0.0, 0.999, step=0.001),
    _EPS,
)
EXTRA_COLORS = ("k", "tab:olive", "tab:cyan", "tab:gray")


def custom_optimizer(
    name: str, cls: type, like: str | None = None, color: str = "k", defaults: dict | None = None
) -> OptimizerSpec:
    """Describe your own optimizer class so the playground can run it next to ``torch.optim``'s.

    ``cls(params, lr=..., ...)`` must take a list of tensors first and offer ``zero_grad()`` and ``step()``,
    like ``torch.optim`` (subclassing ``torch.optim.Optimizer`` is fine, and not needed). It gets a slider
    for each of ``lr``, ``momentum``, ``betas``, ``rho``, ``alpha``, ``eps`` that its ``__init__`` accepts.

    Args:
        name: the name shown in the playground.
        cls: the optimizer class.
        like: a built-in optimiser (``"Adam"``, ``"Momentum"``, ...) whose per-surface learning rates it
            borrows; by default the built-in whose name is in the class name (``MyAdam`` -> ``"Adam"``).
        color: its colour in the plots.
        defaults: default keyword values, for arguments whose ``__init__`` has no default.
    """
    if not callable(getattr(cls, "step", None)) or not callable(getattr(cls, "zero_grad", None)):
        raise TypeError(
            f"{name}: {cls!r} needs step() and zero_grad() methods, like torch.optim's optimizers."
        )
    if like is None:
        matches = [n for n in OPTIMIZERS if n.lower() in cls.__name__.lower()]
        like = max(matches, key=len) if matches else None
    elif like not in OPTIMIZERS:
        raise ValueError(f"like={like!r} is not a built-in optimiser; choose one of {list(OPTIMIZERS)}.")
    params = inspect.signature(cls.__init__).parameters
    hparams = tuple(h for h in _CUSTOM_HPARAMS if h.torch_name in params)
    if not hparams or hparams[0].torch_name != "lr":
        raise TypeError(f"{name}: {cls.__name__}.__init__ must accept lr= (as torch.optim's optimizers do).")
    defaults = dict(defaults or {})
    borrowed = OPTIMIZERS[like].torch_defaults() if like else {}
    for h in hparams:
        if h.torch_name not in defaults and params[h.torch_name].default is inspect.Parameter.empty:
            if h.torch_name not in borrowed and h.torch_name != "lr":
                raise ValueError(f"{name}: give {h.torch_name} a default value (defaults={{...}}).")
            defaults[h.torch_name] = borrowed.get(h.torch_name, 1e-3)
    return OptimizerSpec(name, cls, {}, hparams, color, defaults, like)


def _spec(optimizer: str | OptimizerSpec | type) -> OptimizerSpec:
    if isinstance(optimizer, OptimizerSpec):
        return optimizer
    if isinstance(optimizer, type):
        return custom_optimizer(optimizer.__name__, optimizer)
    return get_optimizer(optimizer)


def get_optimizer(name: str) -> OptimizerSpec:
    """Look up an optimiser by its playground name (``"SGD"``, ``"Momentum"``, ``"Adam"``, ...)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}.")
    return OPTIMIZERS[name]


def default_hparams(optimizer: str | OptimizerSpec | type, surface: str | Surface) -> dict:
    """Keyword arguments for ``optimizer`` on ``surface``: the surface's suggestions, torch defaults otherwise."""
    spec, surface = _spec(optimizer), get_surface(surface)
    hp = spec.torch_defaults()
    key = spec.name if spec.name in surface.lr else spec.like
    hp["lr"] = surface.lr.get(key, hp["lr"])
    hp.update({k: v for k, v in surface.hparams.get(key, {}).items() if k in hp})
    return hp


def resolve_hparams(
    optimizer: str | OptimizerSpec | type, surface: str | Surface, hparams: dict | None
) -> dict:
    """Defaults for ``optimizer`` on ``surface`` updated with ``hparams``; unknown names are rejected."""
    spec = _spec(optimizer)
    hp = default_hparams(spec, surface)
    for key, value in (hparams or {}).items():
        if key not in hp:
            raise ValueError(
                f"Unknown hyperparameter {key!r} for {spec.name}; valid names are {sorted(hp)} "
                f"(torch.optim keyword names, e.g. betas=(0.9, 0.999) for Adam)."
            )
        hp[key] = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else float(value)
    return hp


def make_optimizer(
    optimizer: str | OptimizerSpec | type, params: list[torch.Tensor], hparams: dict
) -> torch.optim.Optimizer:
    """Build the optimiser ``optimizer`` describes; torch (or your class) validates every value."""
    spec = _spec(optimizer)
    return spec.cls(params, **spec.fixed, **hparams)


@dataclass
class Trajectory:
    """One optimiser run on a surface.

    Attributes:
        points: (n + 1, 2) iterates ``p_0 = start, p_1, ..., p_n`` exactly as ``torch.optim`` produced them.
        losses: (n + 1,) ``f(p_k)``.
        grads: (n, 2) the gradient that step ``k`` received.
        positions: Nesterov only, (n + 1, 2) classical positions ``theta_k = p_k + lr*momentum*buf_{k-1}``;
            ``p_k`` is then the look-ahead point (see the module docstring).
        diverged_at: the step after which the parameters were non-finite or beyond ``DIVERGED_ABS``
            (the run stops there), else None.
    """

    optimizer: str
    surface: str
    hparams: dict
    points: np.ndarray
    losses: np.ndarray
    grads: np.ndarray
    positions: np.ndarray | None = None
    diverged_at: int | None = None

    @property
    def steps(self) -> int:
        """Number of optimiser steps actually taken."""
        return len(self.points) - 1

    @property
    def step_lengths(self) -> np.ndarray:
        """(n,) Euclidean length of every step."""
        return np.linalg.norm(np.diff(self.points, axis=0), axis=1)


def run_optimizer(
    surface: str | Surface,
    optimizer: str | OptimizerSpec | type,
    start: tuple[float, float] | None = None,
    steps: int = 100,
    hparams: dict | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> Trajectory:
    """Run ``steps`` steps of an optimiser on ``surface`` and record the path.

    Args:
        surface: a name from ``SURFACES`` or a :class:`Surface`.
        optimizer: a name from ``OPTIMIZERS`` (``"SGD"``, ``"Momentum"``, ``"Nesterov"``, ``"Adagrad"``,
            ``"Adadelta"``, ``"RMSprop"``, ``"Adam"``), your own optimizer class, or an
            :class:`OptimizerSpec` from :func:`custom_optimizer`.
        start: start point ``(x, y)``; the surface's default when None.
        steps: number of optimiser steps.
        hparams: ``torch.optim`` keyword arguments overriding the defaults (``lr``, ``momentum``,
            ``betas``, ``eps``, ``rho``, ``alpha`` as the optimiser accepts).
        noise: standard deviation of the Gaussian noise added to each gradient component (0: exact
            gradients, i.e. gradient descent; > 0: a model of SGD's mini-batch noise).
        seed: seed of the noise (the same seed gives every optimiser the same noise).

    The parameter is a float64 tensor of shape (2,) so paths are free of float32 rounding noise.
    """
    surface = get_surface(surface)
    spec = _spec(optimizer)
    hp = resolve_hparams(spec, surface, hparams)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
    start = surface.start if start is None else start
    if len(start) != 2 or not all(math.isfinite(float(v)) for v in start):
        raise ValueError(f"start must be two finite numbers (x, y), got {start!r}.")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}.")

    theta = torch.tensor([float(v) for v in start], dtype=torch.float64, requires_grad=True)
    opt = make_optimizer(spec, [theta], hp)
    nesterov = spec.fixed.get("nesterov", False)
    generator = torch.Generator().manual_seed(seed)

    # Python floats are exact copies of the float64 values and much cheaper to collect than tensors.
    points, losses, grads = [theta.tolist()], [], []
    positions = [theta.tolist()] if nesterov else None
    diverged_at = None
    for k in range(steps):
        opt.zero_grad()
        loss = surface.loss(theta)
        loss.backward()
        if noise:
            theta.grad.add_(noise * torch.randn(2, generator=generator, dtype=torch.float64))
        losses.append(loss.item())
        grads.append(theta.grad.tolist())
        opt.step()
        x, y = theta.tolist()
        points.append([x, y])
        if nesterov:
            buf = opt.state[theta]["momentum_buffer"]
            positions.append((theta.detach() + hp["lr"] * hp["momentum"] * buf).tolist())
        if not (math.isfinite(x) and math.isfinite(y)) or max(abs(x), abs(y)) > DIVERGED_ABS:
            diverged_at = k + 1
            break
    with torch.no_grad():
        losses.append(surface.loss(theta).item())

    return Trajectory(
        optimizer=spec.name,
        surface=surface.name,
        hparams=hp,
        points=np.array(points, dtype=np.float64),
        losses=np.array(losses, dtype=np.float64),
        grads=np.array(grads, dtype=np.float64).reshape(-1, 2),
        positions=np.array(positions, dtype=np.float64) if nesterov else None,
        diverged_at=diverged_at,
    )


# ----------------------------------------------------------------------------- drawing


def _contour_levels(surface: Surface, z: np.ndarray, n: int = 20) -> np.ndarray:
    gap = z - surface.f_min  # >= 0 up to rounding
    high = float(gap.max())
    return np.geomspace(high * 1e-5, high, n)


def draw_surface(ax: matplotlib.axes.Axes, surface: Surface, grid: int = 160) -> None:
    """Filled log-spaced contours of ``f - f_min`` on ``ax``, minima as stars and saddles as crosses."""
    X, Y, Z = surface.grid(grid)  # (grid, grid) each
    levels = _contour_levels(surface, Z)
    gap = np.clip(Z - surface.f_min, levels[0], None)
    ax.contourf(X, Y, gap, levels=levels, norm=LogNorm(), cmap="Greys_r", extend="both", alpha=0.55)
    ax.contour(X, Y, gap, levels=levels, norm=LogNorm(), colors="0.45", linewidths=0.4)
    for mx, my in surface.minima:
        ax.plot(mx, my, marker="*", color="gold", markeredgecolor="k", markersize=12, zorder=5)
    for sx, sy in surface.saddles:
        ax.plot(sx, sy, marker="x", color="k", markersize=7, zorder=5)
    ax.set_xlim(surface.xlim)
    ax.set_ylim(surface.ylim)
    ax.set_title(surface.title, fontsize=10)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


class _Canvas:
    """A figure with a contour panel and a loss panel whose lines are updated in place.

    The contour is computed once per surface, and drawn once: ``png`` restores the rendered contour
    panel from a saved bitmap and draws only the lines on top (blitting), then redraws the loss panel,
    whose axes rescale with the data.
    """

    def __init__(self, figsize: tuple[float, float] = (11.0, 4.4), dpi: int = 80, legend: bool = True):
        self.fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(self.fig)
        self.ax, self.ax_loss = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
        self.fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
        self.legend = legend
        self.surface: Surface | None = None
        self._lines: dict[str, dict] = {}
        self._background = None  # Agg bitmap of the figure without lines and without the loss panel

    def set_surface(self, surface: Surface, grid: int = 160) -> None:
        if self.surface is not None and self.surface.name == surface.name:
            return
        self.surface = surface
        self._background = None
        ax = self.ax
        ax.clear()
        draw_surface(ax, surface, grid)
        (self._start,) = ax.plot([], [], marker="o", color="w", markeredgecolor="k", markersize=8, zorder=6)
        self.ax_loss.clear()
        self.ax_loss.set_yscale("log")
        self.ax_loss.set_xlabel("step")
        self.ax_loss.set_ylabel("f - f_min")
        self.ax_loss.set_title("loss against step", fontsize=10)
        self.ax_loss.grid(True, which="major", alpha=0.3)
        self._lines = {}

    def _artists(self, name: str, color: str, nesterov: bool) -> dict:
        if name not in self._lines:
            ax = self.ax
            lines = {
                "path": ax.plot([], [], "-o", color=color, lw=1.6, markersize=2.5, label=name, zorder=4)[0],
                "end": ax.plot([], [], "o", color=color, markeredgecolor="k", markersize=7, zorder=6)[0],
                "loss": self.ax_loss.plot([], [], "-", color=color, lw=1.6, label=name)[0],
            }
            if nesterov:
                lines["zigzag"] = ax.plot([], [], "--", color=color, lw=0.8, zorder=3)[0]
                lines["theta"] = ax.plot(
                    [], [], "o", mfc="none", mec=color, markersize=4, zorder=4, label="Nesterov θ (classical)"
                )[0]
                lines["lookahead"] = ax.plot(
                    [], [], "x", color="k", markersize=4, zorder=5, label="Nesterov look-ahead (grad here)"
                )[0]
            self._lines[name] = lines
        return self._lines[name]

    def draw(
        self,
        paths: list[Trajectory],
        start: tuple[float, float],
        labels: bool = True,
        colors: dict[str, str] | None = None,
    ) -> None:
        """Put ``paths`` on the canvas (hiding all others); ``colors`` by optimiser name (built-ins known)."""
        assert self.surface is not None, "call set_surface first"
        colors = {**{n: s.color for n, s in OPTIMIZERS.items()}, **(colors or {})}
        shown = set()
        for path in paths:
            art = self._artists(path.optimizer, colors.get(path.optimizer, "k"), path.positions is not None)
            shown.add(path.optimizer)
            pts = path.points
            art["path"].set_data(pts[:, 0], pts[:, 1])
            art["end"].set_data(pts[-1:, 0], pts[-1:, 1])
            gap = np.clip(path.losses - self.surface.f_min, 1e-12, None)
            art["loss"].set_data(np.arange(len(gap)), gap)
            if "zigzag" in art and path.positions is not None:
                n = len(pts) - 1
                zig = np.empty((2 * n + 1, 2))
                zig[0::2] = path.positions  # theta_0 .. theta_n
                zig[1::2] = pts[:-1]  # p_0 .. p_{n-1}: look-ahead points, gradient taken there
                art["zigzag"].set_data(zig[:, 0], zig[:, 1])
                art["theta"].set_data(path.positions[1:, 0], path.positions[1:, 1])
                art["lookahead"].set_data(pts[1:-1, 0], pts[1:-1, 1])
        for name, art in self._lines.items():
            for line in art.values():
                line.set_visible(name in shown)
        self._start.set_data([start[0]], [start[1]])

        ax = self.ax_loss
        ax.set_xlim(0, max([p.steps for p in paths], default=1) or 1)
        if paths:
            gaps = np.concatenate([np.clip(p.losses - self.surface.f_min, 1e-12, None) for p in paths])
            gaps = gaps[np.isfinite(gaps)]
            # Whole decades, so that the axis stays put while a slider is dragged; a diverging run
            # must not stretch it to 1e300 and flatten every other curve.
            first = max(float(np.clip(p.losses[0] - self.surface.f_min, 1e-12, None)) for p in paths)
            low = 10.0 ** np.floor(np.log10(gaps.min()))
            high = 10.0 ** np.ceil(np.log10(min(gaps.max(), first * 1e4)))
            ax.set_ylim(low, high if high > low else low * 10)
        if self.legend and labels and paths:
            ax.legend(loc="upper right", fontsize=8)
            handles = [
                a[k] for n, a in self._lines.items() if n in shown for k in ("theta", "lookahead") if k in a
            ]
            if handles:
                self.ax.legend(handles=handles, loc="lower left", fontsize=7)
            elif self.ax.get_legend():
                self.ax.get_legend().remove()
        else:
            for a in (ax, self.ax):
                if a.get_legend():
                    a.get_legend().remove()

    def png(self) -> bytes:
        """The figure as PNG bytes, drawing only what can have changed since the last call."""
        canvas = self.fig.canvas
        dynamic = [a for a in (*self.ax.lines, self.ax.get_legend()) if a is not None and a.get_visible()]
        if self._background is None:
            for a in (*dynamic, self.ax_loss):
                a.set_visible(False)
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
            for a in (*dynamic, self.ax_loss):
                a.set_visible(True)
        canvas.restore_region(self._background)
        for a in sorted(dynamic, key=lambda a: a.get_zorder()):
            self.ax.draw_artist(a)
        self.ax_loss.draw(canvas.get_renderer())
        return rgba_png(np.asarray(canvas.buffer_rgba()))  # (height, width, 4) uint8


def plot_paths(
    surface: str | Surface,
    paths: list[Trajectory],
    start: tuple[float, float] | None = None,
    figsize: tuple[float, float] = (11.0, 4.4),
    labels: bool = True,
    colors: dict[str, str] | None = None,
) -> Figure:
    """Static figure: ``paths`` on the contour of ``surface`` (left) and ``f - f_min`` per step (right).

    Returns a matplotlib ``Figure`` not registered with pyplot; a notebook shows it when it is the
    value of a cell, ``fig.savefig`` writes it to a file. ``colors`` maps optimiser names to colours
    (the built-ins have theirs; others are black unless given).
    """
    surface = get_surface(surface)
    for p in paths:
        if p.surface != surface.name:
            raise ValueError(f"Path of {p.optimizer} was run on {p.surface!r}, not on {surface.name!r}.")
    canvas = _Canvas(figsize=figsize, dpi=matplotlib.rcParams["figure.dpi"])
    canvas.set_surface(surface)
    canvas.draw(
        paths,
        start if start is not None else (paths[0].points[0] if paths else surface.start),
        labels,
        colors,
    )
    return canvas.fig


# ----------------------------------------------------------------------------- widget


class Playground:
    """Interactive playground: pick a surface, a start point and optimisers; sliders redraw live.

    Args:
        surface: initial surface name (see ``course_utils.surfaces.SURFACES``).
        optimizers: optimisers ticked initially.
        start: initial start point; the surface's default when None.
        steps: initial number of steps.
        continuous_update: redraw while a linear slider is dragged (True) or on release (False).
            The logarithmic ``lr`` and ``eps`` sliders always redraw on release: with continuous
            updates, ipywidgets' FloatLogSlider sends every value set from Python back to the kernel
            (rounded to its grid), and a late echo would overwrite a newer value set from code.
        noise: initial gradient noise (standard deviation per component, see :func:`run_optimizer`).
        extra: your own optimizers, ``{name: class}`` (or :func:`custom_optimizer` specs), shown
            ticked next to the built-ins, e.g. ``Playground(extra={"mine": MyAdam})``.

    Driving it from Python (as the tests do)::

        pg = Playground("quadratic", ["SGD", "Adam"])
        pg.sliders["Adam"]["lr"].value = 0.05    # redraws
        pg.noise.value = 2.0                     # every gradient gets N(0, 2²) noise
        pg.paths["Adam"].points                  # (steps + 1, 2) iterates

    Attributes:
        widget: the ipywidgets box to display (the object itself displays it too).
        optimizers: every optimiser on offer, by name (built-ins first, then ``extra``).
        paths: the :class:`Trajectory` currently drawn, by optimiser name.
        errors: ``{optimizer: message}`` for ticked optimisers whose settings were rejected.
        sliders: ``{optimizer: {slider name: widget}}``; ``surface``, ``start_x``, ``start_y``,
            ``steps``, ``noise`` and ``checkboxes`` are the common controls.
    """

    def __init__(
        self,
        surface: str = "rosenbrock",
        optimizers: tuple[str, ...] | list[str] = ("SGD", "Momentum", "Adam"),
        start: tuple[float, float] | None = None,
        steps: int = 100,
        continuous_update: bool = True,
        noise: float = 0.0,
        extra: dict[str, type | OptimizerSpec] | None = None,
    ):
        w = import_widgets()  # imported here: the rest of the module works without ipywidgets
        surf = get_surface(surface)
        self.optimizers: dict[str, OptimizerSpec] = dict(OPTIMIZERS)
        for i, (name, cls) in enumerate((extra or {}).items()):
            if name in OPTIMIZERS:
                raise ValueError(f"extra optimizer {name!r} clashes with a built-in; choose another name.")
            spec = (
                cls
                if isinstance(cls, OptimizerSpec)
                else custom_optimizer(name, cls, color=EXTRA_COLORS[i % len(EXTRA_COLORS)])
            )
            self.optimizers[name] = (
                spec
                if spec.name == name
                else OptimizerSpec(
                    name, spec.cls, spec.fixed, spec.hparams, spec.color, spec.defaults, spec.like
                )
            )
        ticked = [*optimizers, *(extra or {})]
        for name in ticked:
            if name not in self.optimizers:
                get_optimizer(name)  # raises with the list of names
        self._busy = False  # set while several controls change at once: redraw once at the end
        self._cache: dict[tuple, Trajectory] = {}
        self.paths: dict[str, Trajectory] = {}
        self.errors: dict[str, str] = {}
        self.canvas = _Canvas()
        cu = continuous_update

        self.surface = w.Dropdown(options=list(SURFACES), value=surf.name, description="function")
        self.start_x = w.FloatSlider(description="start x", step=0.05, continuous_update=cu)
        self.start_y = w.FloatSlider(description="start y", step=0.01, continuous_update=cu)
        self.steps = w.IntSlider(value=steps, min=1, max=500, description="steps", continuous_update=cu)
        self.noise = w.FloatSlider(
            value=noise, min=0.0, max=10.0, step=0.1, description="grad noise σ", continuous_update=cu,
            readout_format=".1f", style={"description_width": "initial"},
        )  # fmt: skip
        self.reset_button = w.Button(description="reset hyperparameters", layout=w.Layout(width="190px"))
        self.checkboxes = {
            name: w.Checkbox(
                value=name in ticked, description=name, indent=False, layout=w.Layout(width="105px")
            )
            for name in self.optimizers
        }
        self.sliders: dict[str, dict[str, w.Widget]] = {}
        tabs = []
        for name, spec in self.optimizers.items():
            row = {}
            for h in spec.hparams:
                common = {"description": h.name, "layout": w.Layout(width="330px")}
                if h.log:
                    row[h.name] = w.FloatLogSlider(
                        base=10,
                        min=math.log10(h.low),
                        max=math.log10(h.high),
                        step=0.05,
                        readout_format=".2g",
                        continuous_update=False,  # see the class docstring
                        **common,
                    )
                else:
                    row[h.name] = w.FloatSlider(
                        min=h.low,
                        max=h.high,
                        step=h.step,
                        readout_format=".4g",
                        continuous_update=cu,
                        **common,
                    )
            self.sliders[name] = row
            tabs.append(w.HBox([w.VBox(list(row.values()))]))
        self.tabs = w.Tab(children=tabs)
        for i, name in enumerate(self.optimizers):
            self.tabs.set_title(i, name)
        self.image = w.Image(format="png", layout=w.Layout(width="880px"))
        self.status = w.HTML()

        self._load_surface(surf, start)
        self.update()

        for control in [self.start_x, self.start_y, self.steps, self.noise, *self.checkboxes.values()]:
            control.observe(self._on_change, names="value")
        for row in self.sliders.values():
            for slider in row.values():
                slider.observe(self._on_change, names="value")
        self.surface.observe(self._on_surface, names="value")
        self.reset_button.on_click(lambda _: self.reset())

        self.widget = w.VBox(
            [
                w.HBox([self.surface, self.steps, self.reset_button]),
                w.HBox([self.start_x, self.start_y, self.noise]),
                w.HBox(list(self.checkboxes.values())),
                self.tabs,
                self.image,
                self.status,
            ]
        )

    # -- state -----------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        """Ticked optimisers, built-ins first, in ``OPTIMIZERS`` order."""
        return [name for name, box in self.checkboxes.items() if box.value]

    def hparams(self, optimizer: str) -> dict:
        """The keyword arguments the sliders of ``optimizer`` currently describe."""
        values = {name: s.value for name, s in self.sliders[optimizer].items()}
        hp = {}
        for h in self.optimizers[optimizer].hparams:
            if h.torch_name == "betas":
                hp["betas"] = (values["beta1"], values["beta2"])
            else:
                hp[h.torch_name] = values[h.name]
        return hp

    def _load_surface(self, surface: Surface, start: tuple[float, float] | None = None) -> None:
        """Set start sliders' ranges and all hyperparameters to the surface's defaults (no redraw)."""
        self._busy = True
        try:
            x0, y0 = start if start is not None else surface.start
            for slider, (lo, hi), v in [(self.start_x, surface.xlim, x0), (self.start_y, surface.ylim, y0)]:
                # Widen first so that setting min/max never clamps the old value into an invalid state.
                slider.min, slider.max = min(slider.min, lo), max(slider.max, hi)
                slider.value = v
                slider.min, slider.max = lo, hi
            self.reset(redraw=False, surface=surface)
            self.canvas.set_surface(surface)
        finally:
            self._busy = False

    def reset(self, redraw: bool = True, surface: Surface | None = None) -> None:
        """Put every hyperparameter slider back to its default for the current surface."""
        surface = surface or get_surface(self.surface.value)
        busy, self._busy = self._busy, True
        try:
            for name, spec in self.optimizers.items():
                hp = default_hparams(spec, surface)
                for h in spec.hparams:
                    v = hp[h.torch_name]
                    if h.name == "beta1":
                        v = v[0]
                    elif h.name == "beta2":
                        v = v[1]
                    self.sliders[name][h.name].value = v
        finally:
            self._busy = busy
        if redraw:
            self.update()

    # -- events ----------------------------------------------------------------------
    def _on_change(self, change: dict) -> None:
        if not self._busy:
            self.update()

    def _on_surface(self, change: dict) -> None:
        self._load_surface(get_surface(change["new"]))
        self.update()

    def compute(self) -> tuple[dict[str, Trajectory], dict[str, str]]:
        """Run every ticked optimiser with the current settings.

        Returns ``(paths, errors)``: an optimiser whose settings are rejected (e.g. Nesterov with momentum
        0, or your class raising) lands in ``errors`` with the message. Unchanged runs come from a cache.
        """
        surface = self.surface.value
        start = (float(self.start_x.value), float(self.start_y.value))
        steps, noise = int(self.steps.value), float(self.noise.value)
        paths, errors = {}, {}
        for name in self.selected:
            hp = self.hparams(name)
            key = (surface, name, start, steps, noise, tuple(sorted(hp.items())))
            if key not in self._cache:
                if len(self._cache) > 256:
                    self._cache.clear()
                try:
                    self._cache[key] = run_optimizer(
                        surface, self.optimizers[name], start, steps, hp, noise=noise
                    )
                except (ValueError, TypeError, RuntimeError) as err:
                    errors[name] = f"{type(err).__name__}: {err}" if name not in OPTIMIZERS else str(err)
                    continue
            paths[name] = self._cache[key]
        return paths, errors

    def update(self) -> None:
        """Recompute the ticked paths and redraw the figure (called by every control)."""
        self.paths, self.errors = self.compute()
        start = (float(self.start_x.value), float(self.start_y.value))
        colors = {name: spec.color for name, spec in self.optimizers.items()}
        self.canvas.draw(list(self.paths.values()), start, colors=colors)
        self.image.value = self.canvas.png()
        self.status.value = self._summary()

    def _summary(self) -> str:
        parts = []
        for name, p in self.paths.items():
            gap = p.losses[-1] - get_surface(p.surface).f_min
            if p.diverged_at is not None:
                parts.append(
                    f"<b style='color:#b00'>{html.escape(name)} diverged at step {p.diverged_at}: lower its lr</b>"
                )
            else:
                x, y = p.points[-1]
                parts.append(f"{html.escape(name)}: ({x:.3g}, {y:.3g}), f-f<sub>min</sub> = {gap:.2e}")
        for name, err in self.errors.items():
            parts.append(f"<b style='color:#b00'>{html.escape(name)}: {html.escape(err)}</b>")
        return " &nbsp;|&nbsp; ".join(parts) or "Tick at least one optimiser."

    # -- display ---------------------------------------------------------------------
    def png(self) -> bytes:
        """The current figure as PNG bytes."""
        return self.canvas.png()

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        # Widget view for live frontends, the same picture as image/png for static ones.
        text = f"<Playground {self.surface.value}: {', '.join(self.selected)}>"
        return widget_bundle(self.widget, self.image.value, text)
