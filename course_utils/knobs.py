"""Knobs: sliders that redraw a lecture's figure, with a static picture wherever widgets cannot run.

A lecture writes one function that draws a matplotlib figure from a few keyword arguments, and
:class:`Knobs` puts a slider on each argument::

    def draw(lr, momentum):
        fig, ax = plt.subplots()
        ...                                      # run something cheap, or look up a precomputed run
        return fig

    Knobs(draw, [Knob.log("lr", 1e-3, 1e-1, value=1e-2), Knob("momentum", [0.0, 0.5, 0.9, 0.99])])

Every slider is an ``ipywidgets.SelectionSlider`` over a fixed list of values, the figure is shown as a
PNG in an ``ipywidgets.Image``, and nothing else of ipywidgets is used, so the same code runs with
ipywidgets 7.7 (Colab) and 8.x (JupyterLab 4, Notebook 7, VS Code). Displaying a :class:`Knobs`
offers both the widget and the same picture as plain ``image/png``: renderers without a kernel or
without widget support (GitHub, nbviewer, the course's HTML site) show the figure for the initial
values. Without ipywidgets installed the picture is all there is.

Fixed lists of values make precomputed sweeps easy (one slider position per finished run) and let
:class:`Knobs` cache every picture it has drawn, so going back to a position is instant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from course_utils.widgets import figure_png, import_widgets, widget_bundle

__all__ = ["Knob", "Knobs", "linear_values", "log_values", "sweep_knobs"]


def log_values(low: float, high: float, per_decade: int = 4) -> list[float]:
    """Values from ``low`` to ``high`` (both included) evenly spaced on a log scale, rounded to 3 digits."""
    if not 0 < low < high:
        raise ValueError(f"Invalid log range: {low} .. {high} (need 0 < low < high)")
    if per_decade < 1:
        raise ValueError(f"Invalid per_decade: {per_decade} (must be at least 1)")
    n = round(math.log10(high / low) * per_decade) + 1
    return [float(f"{v:.3g}") for v in np.logspace(math.log10(low), math.log10(high), n)]


def linear_values(low: float, high: float, step: float) -> list[float]:
    """``low, low + step, ..., high`` (``high`` included when it is on the grid), free of rounding noise."""
    if step <= 0 or high < low:
        raise ValueError(f"Invalid linear range: {low} .. {high} by {step}")
    n = int(math.floor((high - low) / step + 1e-9)) + 1
    return [round(low + i * step, 10) for i in range(n)]


@dataclass(frozen=True)
class Knob:
    """One slider: the keyword ``name`` it sets, the ``values`` it can take and where it starts.

    ``value`` defaults to the middle of ``values``; a value that is not on the list snaps to the
    nearest one. ``fmt`` formats the readout, ``description`` labels the slider (default: ``name``).
    """

    name: str
    values: tuple
    value: object = None
    description: str | None = None
    fmt: str = "{:.3g}"

    def __init__(
        self,
        name: str,
        values: Sequence,
        value: object = None,
        description: str | None = None,
        fmt: str = "{:.3g}",
    ) -> None:
        values = tuple(values)
        if not values:
            raise ValueError(f"Knob {name!r} has no values")
        if len(set(values)) != len(values):
            raise ValueError(f"Knob {name!r} has repeated values: {values}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "description", description or name)
        object.__setattr__(self, "fmt", fmt)
        object.__setattr__(self, "value", self.snap(values[len(values) // 2] if value is None else value))

    @classmethod
    def log(cls, name: str, low: float, high: float, per_decade: int = 4, **kwargs: object) -> Knob:
        """A slider over :func:`log_values` (for learning rates, eps, ...)."""
        return cls(name, log_values(low, high, per_decade), **kwargs)

    @classmethod
    def linear(cls, name: str, low: float, high: float, step: float, **kwargs: object) -> Knob:
        """A slider over :func:`linear_values`."""
        return cls(name, linear_values(low, high, step), **kwargs)

    def snap(self, value: object) -> object:
        """``value`` itself when it is one of the values, else the nearest number among them."""
        if value in self.values:
            return value
        try:
            return min(self.values, key=lambda v: abs(float(v) - float(value)))
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a value of knob {self.name!r}: {self.values}") from None

    def label(self, value: object) -> str:
        """The readout shown for ``value``."""
        try:
            return self.fmt.format(value)
        except (TypeError, ValueError):
            return str(value)


class Knobs:
    """Sliders over the keyword arguments of ``draw``, which returns a matplotlib Figure.

    Args:
        draw: ``draw(**values) -> Figure``, called with one value per knob.
        knobs: the sliders, in display order.
        continuous_update: redraw while a slider is dragged (cheap ``draw``) or only on release.
        dpi: resolution of the PNG.

    Attributes:
        values: the current value of every knob, ``{name: value}``.
        png: the current picture (PNG bytes).
        widget: the ipywidgets box, or ``None`` when ipywidgets is not installed.
        sliders: ``{name: SelectionSlider}`` (empty without ipywidgets).

    Drive it from Python as the tests do: ``knobs.set(lr=0.03)`` redraws and moves the slider.
    """

    def __init__(
        self,
        draw: Callable[..., Figure],
        knobs: Sequence[Knob],
        continuous_update: bool = True,
        dpi: int = 80,
    ) -> None:
        knobs = list(knobs)
        names = [k.name for k in knobs]
        if not knobs or len(set(names)) != len(names):
            raise ValueError(f"Knobs needs at least one knob and unique names, got {names}")
        self.draw, self.knobs, self.dpi = draw, {k.name: k for k in knobs}, dpi
        self.values = {k.name: k.value for k in knobs}
        self._cache: dict[tuple, bytes] = {}
        self._busy = False
        self.png = self.render(**self.values)
        self.sliders: dict = {}
        self.widget = None
        self.image = None
        try:  # the widget is optional: the picture alone works everywhere
            w = import_widgets()
        except ImportError:
            return
        for knob in knobs:
            options = [(knob.label(v), v) for v in knob.values]
            slider = w.SelectionSlider(
                options=options,
                value=knob.value,
                description=knob.description,
                continuous_update=continuous_update,
                style={"description_width": "initial"},
                layout=w.Layout(width="360px"),
            )
            slider.observe(self._on_change, names="value")
            self.sliders[knob.name] = slider
        self.image = w.Image(value=self.png, format="png")
        self.widget = w.VBox([w.HBox(list(self.sliders.values())), self.image])

    def render(self, **values: object) -> bytes:
        """The PNG for these knob values (drawn once per combination, then cached)."""
        key = tuple(values[name] for name in self.knobs)
        if key not in self._cache:
            fig = self.draw(**values)
            if not isinstance(fig, Figure):
                raise TypeError(f"draw must return a matplotlib Figure, got {type(fig).__name__}")
            if len(self._cache) >= 512:
                self._cache.clear()
            self._cache[key] = figure_png(fig, self.dpi)
        return self._cache[key]

    def set(self, **values: object) -> None:
        """Move knobs (nearest allowed value) and redraw once."""
        unknown = set(values) - set(self.knobs)
        if unknown:
            raise ValueError(f"Unknown knob(s) {sorted(unknown)}; knobs are {list(self.knobs)}")
        self._busy = True
        try:
            for name, value in values.items():
                self.values[name] = self.knobs[name].snap(value)
                if name in self.sliders:
                    self.sliders[name].value = self.values[name]
        finally:
            self._busy = False
        self._update()

    def _on_change(self, change: dict) -> None:
        if self._busy:
            return
        for name, slider in self.sliders.items():
            self.values[name] = slider.value
        self._update()

    def _update(self) -> None:
        self.png = self.render(**self.values)
        if self.image is not None:
            self.image.value = self.png

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        settings = ", ".join(f"{name}={self.knobs[name].label(v)}" for name, v in self.values.items())
        return widget_bundle(self.widget, self.png, f"<Knobs {settings}>")


def sweep_knobs(
    runs: dict,
    name: str,
    smooth: int,
    first_steps: int = 60,
    value: object = None,
    fmt: str = "{:g}",
) -> Knobs:
    """A slider over finished runs, ``{setting: per-step losses}``, for precomputed sweeps.

    The left panel shows the first ``first_steps`` losses (early spikes), the right one every run smoothed
    over ``smooth`` steps on a log scale (see :func:`course_utils.plotting.smoothed`); the chosen run is
    drawn in colour, the others in grey. ``name`` labels the slider and is the keyword of the draw function.
    """
    from course_utils.plotting import smoothed  # plotting imports pyplot; keep `import knobs` light

    if not runs:
        raise ValueError("sweep_knobs needs at least one run")

    def draw(**chosen_value: object) -> Figure:
        chosen = chosen_value[name]
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4), layout="constrained")
        for setting, loss in runs.items():
            style = (
                dict(color="C3", linewidth=2.0, zorder=3) if setting == chosen else dict(color="lightgray")
            )
            left.plot(np.arange(min(first_steps, len(loss))), loss[:first_steps], **style)
            right.plot(*smoothed(loss, smooth), **style)
        label = f"{name} = {fmt.format(chosen)}"
        left.set(xlabel="Update steps", ylabel="Loss")
        left.set_title(
            f"{label}: highest loss in the first {first_steps} steps {max(runs[chosen][:first_steps]):.2f}"
        )
        right.set_yscale("log")
        right.set(xlabel="Update steps", ylabel=f"Loss (moving average of {smooth} steps)")
        right.set_title(f"{label}: loss at the end {smoothed(runs[chosen], smooth)[1][-1]:.3f}")
        for ax in (left, right):
            ax.grid(True, which="both", alpha=0.5)
        return fig

    start = next(iter(runs)) if value is None else value
    return Knobs(draw, [Knob(name, list(runs), value=start, fmt=fmt)])
