"""Flash-card quiz: which optimiser drew this path (or this loss curve)?

Every card is a fresh ``torch.optim`` run (see :func:`course_utils.playground.run_optimizer`)
on one of the 2-D surfaces, from a jittered start with a jittered learning rate,
so no two decks are alike and nothing is hard-coded.  The explanation shown
after answering quotes measurements from that very run (first-step size, step
length relative to ``lr``, overshoots...), i.e. the tell-tale signs to look for.

    >>> from course_utils.quiz import Quiz
    >>> Quiz(n_cards=8)          # in a notebook: click an answer, then "next card"
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from course_utils.config import pick
from course_utils.playground import OPTIMIZERS, Trajectory, draw_surface, get_optimizer, run_optimizer
from course_utils.surfaces import SURFACES, get_surface
from course_utils.widgets import figure_png, import_widgets, widget_bundle

__all__ = ["KINDS", "Card", "Quiz", "card_figure", "check_prediction", "explain", "make_cards"]

KINDS = ("trajectory", "loss")


@dataclass
class Card:
    """One flash card.

    Attributes:
        kind: ``"trajectory"`` (path on the contour plot) or ``"loss"`` (``f - f_min`` against step).
        path: the real run shown on the card; ``path.optimizer`` is the answer.
        choices: the names offered, the answer among them, in random order.
        explanation: why the answer is right, with numbers measured on this run.
    """

    kind: str
    path: Trajectory
    choices: list[str]
    explanation: str

    @property
    def answer(self) -> str:
        """The optimiser that produced the card."""
        return self.path.optimizer


# ----------------------------------------------------------------------------- explanations


def _reversals(points: np.ndarray) -> int:
    """Number of steps whose direction turned by more than 90 degrees from the previous step."""
    d = np.diff(points, axis=0)  # (n, 2)
    dots = np.sum(d[1:] * d[:-1], axis=1)
    return int(np.sum(dots < 0))


def _loss_rises(losses: np.ndarray) -> int:
    """Number of steps after which the loss was higher than before (tiny rounding ignored)."""
    scale = np.abs(losses[:-1]) + 1e-12
    return int(np.sum(np.diff(losses) > 1e-9 * scale))


def _overshoot(rises: int, reversals: int, n: int) -> str:
    """What momentum did on this run, in words that match the counts (no overshoot claimed where none happened)."""
    if rises:
        return f"The path overshoots and swings back: the loss rose on {rises} of {n} steps."
    if reversals:
        return f"The path turned back {reversals} times, yet the loss fell on every one of the {n} steps."
    return f"On this run it never overshot: the loss fell on all {n} steps and the path never turned back."


def explain(path: Trajectory) -> str:
    """A short explanation of what gives ``path`` away, quoting measurements from the run."""
    n = path.steps
    lr = path.hparams["lr"]
    steps = path.step_lengths  # (n,)
    gnorm = np.linalg.norm(path.grads[:n], axis=1)  # (n,) gradient norm seen at each step
    first = (
        np.abs(path.points[1] - path.points[0]) / lr if n else np.zeros(2)
    )  # per coordinate, in units of lr
    rises, rev = _loss_rises(path.losses), _reversals(path.points)
    med = float(np.median(steps)) / lr if n else 0.0
    name, hp = path.optimizer, path.hparams
    where = f"Run: {n} steps on {get_surface(path.surface).title.split('  ')[0]}, lr={lr:.3g}."

    if name == "SGD":
        ratio = steps / np.maximum(lr * gnorm, 1e-300)
        shape = (
            f"it zig-zagged, reversing direction {rev} times"
            if rev
            else "its path bends smoothly, always straight downhill"
        )
        text = (
            f"SGD: every step is exactly lr × gradient (here step length / (lr·‖g‖) is "
            f"{ratio.min():.4f} to {ratio.max():.4f} over all steps), with no memory. So it is fast where the "
            f"surface is steep and crawls where it is flat (‖g‖ went from {gnorm[0]:.3g} to {gnorm[-1]:.3g}); "
            f"{shape}."
        )
    elif name in ("Momentum", "Nesterov"):
        mu = hp["momentum"]
        ratio = steps / np.maximum(lr * gnorm, 1e-300)
        text = (
            f"{name} (momentum={mu:.2f}): the velocity adds up past gradients (on a steady slope up to "
            f"1/(1-μ) = {1 / (1 - mu):.3g}× the SGD step), so steps are driven by history, not by the slope "
            f"under them (largest here {ratio.max():.3g}× lr·‖g‖ of that moment). {_overshoot(rises, rev, n)}"
        )
        if name == "Nesterov":
            twin = run_optimizer(
                path.surface, "Momentum", tuple(path.points[0]), n, {"lr": lr, "momentum": mu}
            )
            f_min = get_surface(path.surface).f_min
            text += (
                f" Nesterov takes the gradient at the look-ahead point, so it brakes earlier: plain momentum "
                f"with the same lr and μ raised the loss on {_loss_rises(twin.losses)} steps and ended at "
                f"f - f_min = {twin.losses[-1] - f_min:.2g} (Nesterov: {path.losses[-1] - f_min:.2g})."
            )
    elif name == "Adagrad":
        G = np.cumsum(path.grads[:n] ** 2, axis=0)  # (n, 2) Adagrad's running sum of squared gradients
        eff = lr / (np.sqrt(G) + hp["eps"])  # (n, 2) per-coordinate effective learning rate
        text = (
            f"Adagrad divides each coordinate by the root of the sum of all its past squared gradients. "
            f"The first step therefore moves every coordinate by about lr (here {first[0]:.3f}·lr and "
            f"{first[1]:.3f}·lr): a 45° diagonal whatever the gradient's direction. The sum only grows, so "
            f"the effective learning rate only falls (on x from {eff[0, 0]:.3g} to {eff[-1, 0]:.3g}, on y "
            f"from {eff[0, 1]:.3g} to {eff[-1, 1]:.3g}): it slows down and cannot speed up again."
        )
    elif name == "Adadelta":
        rho, eps = hp["rho"], hp["eps"]
        predicted = np.sqrt(eps / (1 - rho))
        text = (
            f"Adadelta replaces lr·g by g·RMS(past updates)/RMS(past gradients); the update average starts "
            f"at zero, so the first step moves each coordinate by only ≈ lr·√(ε/(1-ρ)) = {predicted:.2g}·lr "
            f"(measured {first.max():.2g}·lr). Steps stay tiny whatever the slope (median {med:.2g}·lr, "
            f"largest {steps.max() / max(steps[0], 1e-300):.3g}× the first, while ‖g‖ "
            f"ranged over {gnorm.min():.2g}..{gnorm.max():.2g}): a slow start and a slow, sign-like crawl."
        )
    elif name == "RMSprop":
        alpha = hp["alpha"]
        text = (
            f"RMSprop divides by the root of an exponential moving average of squared gradients. With "
            f"alpha={alpha:.3g} that average starts small, so the first step moves each coordinate by "
            f"≈ lr/√(1-α) = {1 / np.sqrt(1 - alpha):.3g}·lr (measured {first[0]:.3g}·lr and {first[1]:.3g}·lr): "
            f"a big diagonal jump. Later steps have no momentum and keep a size set by lr rather than by the "
            f"slope (median {med:.3g}·lr while ‖g‖ ranged over {gnorm.min():.2g}..{gnorm.max():.2g})."
        )
    elif name == "Adam":
        b1, b2 = hp["betas"]
        text = (
            f"Adam = momentum (β1={b1:.3g}) + RMSprop-style scaling (β2={b2:.4g}) with bias correction, so the "
            f"first step moves each coordinate by exactly lr (measured {first[0]:.4f}·lr and "
            f"{first[1]:.4f}·lr): a diagonal step. Step sizes are set by lr, not by the gradient's size "
            f"(median {med:.3g}·lr while ‖g‖ ranged over {gnorm.min():.2g}..{gnorm.max():.2g}). "
            f"{_overshoot(rises, rev, n)}"
        )
    else:  # an optimiser added to OPTIMIZERS later
        text = f"{name}: median step {med:.3g}·lr, {rev} direction reversals, loss rose on {rises} steps."
    return f"{text} {where}"


# ----------------------------------------------------------------------------- cards


def _usable(path: Trajectory) -> bool:
    """A run is worth a card if it did not diverge and stayed near the plotted window."""
    if path.diverged_at is not None or not np.isfinite(path.points).all():
        return False
    s = get_surface(path.surface)
    (x0, x1), (y0, y1) = s.xlim, s.ylim
    mx, my = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    x, y = path.points[:, 0], path.points[:, 1]
    return bool((x > x0 - mx).all() and (x < x1 + mx).all() and (y > y0 - my).all() and (y < y1 + my).all())


def make_cards(
    n: int = 10,
    seed: int | None = None,
    kinds: tuple[str, ...] = KINDS,
    surfaces: list[str] | None = None,
    optimizers: list[str] | None = None,
    n_choices: int = 4,
    steps: int = 60,
) -> list[Card]:
    """Build ``n`` cards from fresh ``torch.optim`` runs.

    Each card takes the next optimiser from a shuffled cycle (so all appear), a random surface, the
    surface's start jittered by up to 5% of the window and the default lr times a factor in [1/2, 2].
    Runs that diverge or leave the window are retried with half the lr.

    Args:
        n: number of cards.
        seed: makes the deck reproducible; None gives a new deck each time.
        kinds: card kinds to draw from, ``"trajectory"`` and/or ``"loss"``.
        surfaces / optimizers: restrict the pool (default: all).
        n_choices: answers offered per card (including the right one).
        steps: optimiser steps per run.
    """
    surfaces = list(surfaces or SURFACES)
    optimizers = list(optimizers or OPTIMIZERS)
    for s in surfaces:
        get_surface(s)
    for o in optimizers:
        get_optimizer(o)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}.")
    if not 2 <= n_choices <= len(optimizers):
        raise ValueError(
            f"n_choices must be between 2 and {len(optimizers)} (the number of optimizers), got {n_choices}."
        )
    if n < 1 or steps < 1:
        raise ValueError(f"n and steps must be positive, got n={n}, steps={steps}.")

    rng = np.random.default_rng(seed)
    cards = []
    order: list[str] = []
    for i in range(n):
        if not order:
            order = list(rng.permutation(optimizers))
        name = str(order.pop())
        surface = get_surface(surfaces[rng.integers(len(surfaces))])
        (x0, x1), (y0, y1) = surface.xlim, surface.ylim
        start = (
            surface.start[0] + rng.uniform(-0.05, 0.05) * (x1 - x0),
            surface.start[1] + rng.uniform(-0.05, 0.05) * (y1 - y0),
        )
        lr = surface.lr.get(name, OPTIMIZERS[name].torch_defaults()["lr"]) * 2.0 ** rng.uniform(-1, 1)
        for _ in range(8):
            path = run_optimizer(surface, name, start, steps, {"lr": lr})
            if _usable(path):
                break
            lr /= 2
        others = [o for o in optimizers if o != name]
        choices = [name, *rng.choice(others, size=n_choices - 1, replace=False)]
        rng.shuffle(choices)
        kind = kinds[i % len(kinds)] if len(kinds) > 1 else kinds[0]
        cards.append(Card(kind=kind, path=path, choices=[str(c) for c in choices], explanation=explain(path)))
    return cards


def card_figure(card: Card, figsize: tuple[float, float] = (5.6, 4.2), dpi: int = 80) -> Figure:
    """The unlabelled picture shown on a card (no optimiser name, no legend)."""
    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.subplots()
    surface = get_surface(card.path.surface)
    pts = card.path.points
    if card.kind == "trajectory":
        draw_surface(ax, surface)
        ax.plot(pts[:, 0], pts[:, 1], "-o", color="tab:blue", lw=1.6, markersize=2.5, zorder=4)
        ax.plot(pts[0, 0], pts[0, 1], "o", color="w", markeredgecolor="k", markersize=8, zorder=6)
        ax.plot(pts[-1, 0], pts[-1, 1], "o", color="tab:blue", markeredgecolor="k", markersize=7, zorder=6)
    else:
        gap = np.clip(card.path.losses - surface.f_min, 1e-12, None)
        ax.plot(np.arange(len(gap)), gap, color="tab:blue", lw=1.8)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("f - f_min")
        ax.set_title(f"loss on {surface.title.split('  ')[0]}", fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.13, top=0.92)
    return fig


# ----------------------------------------------------------------------------- widget


class Quiz:
    """Flash-card widget: look at the card, click the optimiser you think made it, read why.

    Args:
        n_cards: cards per deck (3 in fast mode).
        seed: reproducible deck; None draws a new one.
        kinds, surfaces, optimizers, n_choices, steps: passed to :func:`make_cards`.

    Driving it from Python: ``quiz.answer("Adam")`` (same as clicking), ``quiz.next()``,
    ``quiz.score``, ``quiz.card``.
    """

    def __init__(
        self,
        n_cards: int | None = None,
        seed: int | None = None,
        kinds: tuple[str, ...] = KINDS,
        surfaces: list[str] | None = None,
        optimizers: list[str] | None = None,
        n_choices: int = 4,
        steps: int = 60,
    ):
        w = import_widgets()

        self._deck_args = {
            "kinds": kinds,
            "surfaces": surfaces,
            "optimizers": optimizers,
            "n_choices": n_choices,
        }
        self._steps = steps
        self.n_cards = n_cards if n_cards is not None else pick(10, 3)
        self._rng = np.random.default_rng(seed)
        self.header = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(width="460px"))
        self.buttons = [w.Button(layout=w.Layout(width="120px")) for _ in range(n_choices)]
        for b in self.buttons:
            b.on_click(lambda button: self.answer(button.description))
        self.feedback = w.HTML(layout=w.Layout(width="460px"))
        self.next_button = w.Button(description="next card ▶", button_style="info")
        self.next_button.on_click(lambda _: self.next())
        self.widget = w.VBox(
            [self.header, self.image, w.HBox(self.buttons), self.feedback, self.next_button],
            layout=w.Layout(width="480px"),
        )
        self.new_deck()

    def new_deck(self) -> None:
        """Deal a fresh deck and reset the score."""
        seed = int(self._rng.integers(2**31))
        self.cards = make_cards(self.n_cards, seed, steps=self._steps, **self._deck_args)
        self.index, self.score, self.answered = 0, 0, 0
        self._chosen: str | None = None
        self._show()

    @property
    def card(self) -> Card:
        """The card on screen."""
        return self.cards[self.index]

    @property
    def finished(self) -> bool:
        """True once the last card has been answered."""
        return self.index == len(self.cards) - 1 and self._chosen is not None

    def answer(self, choice: str) -> bool:
        """Answer the current card; returns whether ``choice`` is right. Only the first answer scores."""
        if choice not in self.card.choices:
            raise ValueError(f"{choice!r} is not one of this card's choices {self.card.choices}.")
        correct = choice == self.card.answer
        if self._chosen is None:
            self._chosen = choice
            self.answered += 1
            self.score += int(correct)
        self._show()
        return correct

    def next(self) -> None:
        """Go to the next card, or deal a new deck after the last one."""
        if self.index + 1 < len(self.cards):
            self.index += 1
            self._chosen = None
            self._show()
        else:
            self.new_deck()

    def _show(self) -> None:
        card = self.card
        self.header.value = (
            f"<b>Card {self.index + 1}/{len(self.cards)}</b> &nbsp; score {self.score}/{self.answered} &nbsp; "
            f"Which optimiser produced this {'path' if card.kind == 'trajectory' else 'loss curve'}?"
        )
        self.image.value = figure_png(card_figure(card))
        for b, name in zip(self.buttons, card.choices):
            b.description = name
            b.disabled = self._chosen is not None
            if self._chosen is None:
                b.button_style = ""
            elif name == card.answer:
                b.button_style = "success"
            elif name == self._chosen:
                b.button_style = "danger"
            else:
                b.button_style = ""
        if self._chosen is None:
            self.feedback.value = ""
        else:
            if self._chosen == card.answer:
                verdict = "<b style='color:#080'>Right.</b>"
            else:
                verdict = f"<b style='color:#b00'>No</b>: it was <b>{card.answer}</b>."
            self.feedback.value = f"<p>{verdict} {card.explanation}</p>"
        last = self.index == len(self.cards) - 1
        self.next_button.description = "new deck ↻" if last else "next card ▶"
        if self.finished:
            self.feedback.value += f"<p><b>Deck done: {self.score}/{len(self.cards)}.</b></p>"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        # Widget view for live frontends (ipywidgets 7 or 8), the card's picture for static ones.
        text = f"<Quiz card {self.index + 1}/{len(self.cards)}: answer with quiz.answer(name)>"
        return widget_bundle(self.widget, self.image.value, text)


# ----------------------------------------------------------------------------- lecture exercises


def check_prediction(
    prediction: float | None, measured: float, rel_tol: float = 0.1, what: str = "value"
) -> bool | None:
    """Self-check for a lecture exercise: compare a student's ``prediction`` with the ``measured`` value.

    Prints a verdict and returns True (within ``rel_tol`` of ``measured``), False (not), or None when the
    prediction is still ``None`` (not answered yet: the cell runs anyway, so a notebook executes top to bottom).
    The measured value is printed either way; the solution lives in the collapsed cell below the exercise.
    """
    if prediction is None:
        print(
            f"measured {what}: {measured:.4g}. Write your prediction in the cell (instead of None) and run it again."
        )
        return None
    ok = abs(prediction - measured) <= rel_tol * abs(measured)
    verdict = "yes, within" if ok else "not within"
    print(f"measured {what}: {measured:.4g}; your prediction {prediction:.4g}: {verdict} {rel_tol:.0%}.")
    return ok
