"""Two-dimensional test functions for watching optimisers move.

Every surface is a function ``f(x, y)`` written with torch operations, so the
same code evaluates a whole grid for the contour plot and builds the autograd
graph for a 2-parameter tensor that ``torch.optim`` updates.

    >>> from course_utils.surfaces import get_surface
    >>> s = get_surface("rosenbrock")
    >>> theta = torch.tensor([-1.2, 1.0], requires_grad=True)
    >>> s.loss(theta).backward()      # theta.grad is now the gradient
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["SURFACES", "Surface", "get_surface"]


@dataclass(frozen=True)
class Surface:
    """A 2-D loss surface plus what the playground needs to draw it.

    Attributes:
        name: short key, e.g. ``"rosenbrock"``.
        title: human readable title for plots.
        fn: ``fn(x, y) -> f`` using torch ops only, elementwise on tensors.
        xlim, ylim: plotting window.
        start: default start point.
        minima: known local minima (the first one is a global minimum).
        f_min: the global minimum value; loss curves plot ``f - f_min``.
        saddles: known saddle points (drawn as crosses).
        lr: a learning rate per optimiser that gives an instructive path
            from ``start`` in about 100 steps (the playground's defaults).
        hparams: other defaults per optimiser on this surface, e.g. ``{"Momentum": {"momentum": 0.6}}``
            (torch.optim's own defaults otherwise).
        about: one-paragraph description for students.
    """

    name: str
    title: str
    fn: Callable[[Tensor, Tensor], Tensor]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    f_min: float
    saddles: tuple[tuple[float, float], ...] = ()
    lr: dict[str, float] = field(default_factory=dict)
    hparams: dict[str, dict[str, float]] = field(default_factory=dict)
    about: str = ""

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Evaluate ``f(x, y)`` elementwise."""
        return self.fn(x, y)

    def loss(self, theta: Tensor) -> Tensor:
        """Scalar loss of a 2-element parameter tensor ``theta = (x, y)``."""
        if theta.shape != (2,):
            raise ValueError(
                f"theta must have shape (2,), got {tuple(theta.shape)}; pass torch.tensor([x, y])."
            )
        return self.fn(theta[0], theta[1])

    def value(self, x: float, y: float) -> float:
        """``f(x, y)`` for plain Python numbers."""
        t = torch.tensor([x, y], dtype=torch.float64)
        return float(self.fn(t[0], t[1]))

    def gradient(self, x: float, y: float) -> np.ndarray:
        """Gradient ``(df/dx, df/dy)`` at a point, via autograd, shape (2,)."""
        theta = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(self.loss(theta), theta)
        return grad.numpy()

    def hessian(self, x: float, y: float) -> np.ndarray:
        """Hessian at a point, via autograd, shape (2, 2)."""
        theta = torch.tensor([x, y], dtype=torch.float64)
        return torch.autograd.functional.hessian(self.loss, theta).numpy()

    def grid(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, Y, Z)`` arrays of shape (n, n) covering ``xlim`` x ``ylim``."""
        xs = torch.linspace(*self.xlim, n, dtype=torch.float64)
        ys = torch.linspace(*self.ylim, n, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")  # (n, n): rows follow y
        with torch.no_grad():
            Z = self.fn(X, Y)
        return X.numpy(), Y.numpy(), Z.numpy()


def _quadratic(x: Tensor, y: Tensor) -> Tensor:
    # Condition number 25: curvature 1 along x, 25 along y.
    return 0.5 * (x**2 + 25.0 * y**2)


def _rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def _saddle(x: Tensor, y: Tensor) -> Tensor:
    # Saddle at the origin (curvature +1 along x, -1 along y), minima at (0, +-1).
    return 0.5 * x**2 + 0.25 * y**4 - 0.5 * y**2


def _himmelblau(x: Tensor, y: Tensor) -> Tensor:
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


SURFACES: dict[str, Surface] = {
    s.name: s
    for s in [
        Surface(
            name="quadratic",
            title="Ill-conditioned quadratic  f = (x² + 25y²)/2",
            fn=_quadratic,
            xlim=(-5.0, 5.0),
            ylim=(-2.5, 2.5),
            start=(-4.5, 1.5),
            minima=((0.0, 0.0),),
            f_min=0.0,
            lr={
                "SGD": 0.07,
                "Momentum": 0.05,
                "Nesterov": 0.05,
                "Adagrad": 0.5,
                "Adadelta": 10.0,
                "RMSprop": 0.05,
                "Adam": 0.1,
            },
            # Heavy ball tuned for condition number 25 (optimum: lr 1/9, momentum 4/9): with torch's
            # momentum=0.9 it would only spiral, and plain GD at its best lr (~2/26) would end lower.
            hparams={"Momentum": {"momentum": 0.6}, "Nesterov": {"momentum": 0.6}},
            about=(
                "A long narrow valley: 25 times steeper across (y) than along (x). Plain SGD must use a "
                "small step to stay stable across the valley and then crawls along it; momentum builds "
                "up speed along the valley while its oscillations across it cancel."
            ),
        ),
        Surface(
            name="rosenbrock",
            title="Rosenbrock  f = (1-x)² + 100(y-x²)²",
            fn=_rosenbrock,
            xlim=(-2.0, 2.0),
            ylim=(-1.0, 3.0),
            start=(-1.2, 1.0),
            minima=((1.0, 1.0),),
            f_min=0.0,
            lr={
                "SGD": 2e-3,
                "Momentum": 1e-3,
                "Nesterov": 1e-3,
                "Adagrad": 1.0,
                "Adadelta": 10.0,
                "RMSprop": 0.01,
                "Adam": 0.1,
            },
            about=(
                "A curved banana-shaped valley. Finding the valley is easy, following its curved floor "
                "to the minimum at (1, 1) is hard."
            ),
        ),
        Surface(
            name="saddle",
            title="Saddle  f = x²/2 + y⁴/4 - y²/2",
            fn=_saddle,
            xlim=(-2.5, 2.5),
            ylim=(-2.0, 2.0),
            start=(2.0, 0.01),
            minima=((0.0, 1.0), (0.0, -1.0)),
            f_min=-0.25,
            saddles=((0.0, 0.0),),
            lr={
                "SGD": 0.1,
                "Momentum": 0.02,
                "Nesterov": 0.02,
                "Adagrad": 0.5,
                "Adadelta": 5.0,
                "RMSprop": 0.02,
                "Adam": 0.05,
            },
            about=(
                "Starting almost exactly on the ridge, the gradient first pulls towards the saddle point "
                "at the origin; escaping to a minimum at (0, ±1) depends on how the optimiser treats the "
                "tiny gradient across the ridge."
            ),
        ),
        Surface(
            name="himmelblau",
            title="Himmelblau  f = (x²+y-11)² + (x+y²-7)²",
            fn=_himmelblau,
            xlim=(-5.0, 5.0),
            ylim=(-5.0, 5.0),
            start=(0.5, -1.0),
            minima=(
                (3.0, 2.0),
                (-2.805118, 3.131312),
                (-3.779310, -3.283186),
                (3.584428, -1.848126),
            ),
            f_min=0.0,
            saddles=(
                (0.086678, 2.884255),
                (-3.073026, -0.081353),
                (3.385154, 0.073852),
                (-0.127961, -1.953715),
            ),
            lr={
                "SGD": 0.005,
                "Momentum": 0.002,
                "Nesterov": 0.002,
                "Adagrad": 1.0,
                "Adadelta": 10.0,
                "RMSprop": 0.05,
                "Adam": 0.1,
            },
            about=(
                "Four local minima (all with f = 0) separated by saddles and a central hill. Which "
                "minimum an optimiser reaches depends on the start point and on its hyperparameters."
            ),
        ),
    ]
}


def get_surface(name: str | Surface) -> Surface:
    """Look up a surface by name (a :class:`Surface` is returned unchanged)."""
    if isinstance(name, Surface):
        return name
    if name not in SURFACES:
        raise ValueError(f"Unknown surface {name!r}; choose one of {sorted(SURFACES)}.")
    return SURFACES[name]
