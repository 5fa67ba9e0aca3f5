"""Surfaces, optimiser paths, the playground and quiz widgets (driven from Python), and the notebook.

torch.optim is the ground truth: every path is compared with an independent loop over torch.optim.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.text
import numpy as np
import pytest
import torch

from course_utils.playground import (
    OPTIMIZERS,
    Playground,
    custom_optimizer,
    default_hparams,
    plot_paths,
    run_optimizer,
)
from course_utils.quiz import Quiz, card_figure, explain, make_cards
from course_utils.surfaces import SURFACES, get_surface
from tests.fixtures.timing import scaled

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "08_playground.ipynb"

TORCH_CLASSES = {
    "SGD": (torch.optim.SGD, {}),
    "Momentum": (torch.optim.SGD, {}),
    "Nesterov": (torch.optim.SGD, {"nesterov": True}),
    "Adagrad": (torch.optim.Adagrad, {}),
    "Adadelta": (torch.optim.Adadelta, {}),
    "RMSprop": (torch.optim.RMSprop, {}),
    "Adam": (torch.optim.Adam, {}),
}


def torch_iterates(
    surface: str, optimizer: str, start, steps: int, hparams: dict, noise: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """Reference: the plain torch.optim loop a student would write; returns (steps + 1, 2) iterates.

    With ``noise``, each gradient gets ``noise * torch.randn(2)`` from a generator seeded with ``seed``.
    """
    cls, fixed = TORCH_CLASSES[optimizer]
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = cls([theta], **fixed, **hparams)
    fn = SURFACES[surface].fn
    generator = torch.Generator().manual_seed(seed)
    out = [theta.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        fn(theta[0], theta[1]).backward()
        if noise:
            theta.grad += noise * torch.randn(2, generator=generator, dtype=torch.float64)
        opt.step()
        out.append(theta.detach().clone())
    return torch.stack(out)


class MyAdam:
    """A from-scratch Adam as a student writes it in the lab (not a torch.optim subclass)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt() + self.eps
            p.sub_(self.lr * (m / (1 - b1**self.t)) / denom)


class SignSGD(torch.optim.Optimizer):
    """Subclassing torch.optim.Optimizer works too; lr has no default here."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.sub_(group["lr"] * p.grad.sign())


def assert_same(points: np.ndarray, reference: torch.Tensor) -> None:
    # Same operations in the same order: bit-for-bit equal.
    torch.testing.assert_close(torch.from_numpy(np.asarray(points)), reference, rtol=0, atol=0)


# ----------------------------------------------------------------------------- surfaces


@pytest.mark.parametrize("name", list(SURFACES))
def test_surface_minima_and_saddles_are_critical_points_of_the_right_kind(name):
    s = SURFACES[name]
    for point in s.minima:
        assert np.linalg.norm(s.gradient(*point)) < 1e-4, f"{name}: gradient at minimum {point}"
        assert (np.linalg.eigvalsh(s.hessian(*point)) > 0).all(), f"{name}: {point} is not a local minimum"
    for point in s.saddles:
        assert np.linalg.norm(s.gradient(*point)) < 1e-4, f"{name}: gradient at saddle {point}"
        eig = np.linalg.eigvalsh(s.hessian(*point))
        assert eig[0] < 0 < eig[1], f"{name}: {point} is not a saddle ({eig})"
    assert s.value(*s.minima[0]) == pytest.approx(s.f_min, abs=1e-9)
    X, Y, Z = s.grid(101)
    assert Z.min() >= s.f_min - 1e-9, "f_min must be the global minimum over the window"
    assert s.xlim[0] < s.start[0] < s.xlim[1] and s.ylim[0] < s.start[1] < s.ylim[1]
    # The vectorised grid agrees with point-wise evaluation.
    for i, j in [(0, 0), (50, 13), (100, 100)]:
        assert Z[i, j] == pytest.approx(s.value(X[i, j], Y[i, j]), rel=1e-12, abs=1e-12)
    assert set(s.lr) == set(OPTIMIZERS), "every optimiser needs a default lr on every surface"


def test_ill_conditioned_quadratic_has_condition_number_25():
    eig = np.linalg.eigvalsh(get_surface("quadratic").hessian(0.3, -0.2))
    assert eig.max() / eig.min() == pytest.approx(25.0)


def test_surface_input_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown surface 'bowl'.*rosenbrock"):
        get_surface("bowl")
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        get_surface("saddle").loss(torch.zeros(3))


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("surface", list(SURFACES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_paths_are_torch_optim_iterates(surface, optimizer):
    path = run_optimizer(surface, optimizer, steps=40)
    hp = default_hparams(optimizer, surface)
    assert path.hparams == hp
    assert path.points.shape == (41, 2) and path.losses.shape == (41,) and path.grads.shape == (40, 2)
    assert_same(path.points, torch_iterates(surface, optimizer, SURFACES[surface].start, 40, hp))
    s = SURFACES[surface]
    np.testing.assert_allclose(path.losses, [s.value(x, y) for x, y in path.points], rtol=1e-12, atol=1e-12)


def test_hyperparameters_reach_torch_optim():
    hp = {"lr": 0.03, "betas": (0.5, 0.9), "eps": 1e-3}
    path = run_optimizer("himmelblau", "Adam", start=(1.0, -2.0), steps=30, hparams=hp)
    assert_same(path.points, torch_iterates("himmelblau", "Adam", (1.0, -2.0), 30, hp))
    other = run_optimizer(
        "himmelblau", "Adam", start=(1.0, -2.0), steps=30, hparams={**hp, "betas": (0.9, 0.9)}
    )
    assert not np.array_equal(path.points, other.points)


def test_nesterov_path_matches_the_classical_look_ahead_formulation():
    """Sutskever's Nesterov: v <- mu*v - lr*grad(theta + mu*v); theta <- theta + v.

    PyTorch's iterate is the look-ahead point theta + mu*v; Trajectory.positions holds theta.
    """
    lr, mu, steps = 0.002, 0.9, 60
    path = run_optimizer("himmelblau", "Nesterov", steps=steps, hparams={"lr": lr, "momentum": mu})
    s = get_surface("himmelblau")
    theta = np.array(s.start, dtype=np.float64)
    v = np.zeros(2)
    lookahead, positions = [theta + mu * v], [theta.copy()]
    for _ in range(steps):
        v = mu * v - lr * s.gradient(*(theta + mu * v))
        theta = theta + v
        lookahead.append(theta + mu * v)
        positions.append(theta.copy())
    np.testing.assert_allclose(path.points, np.array(lookahead), rtol=0, atol=1e-9)
    np.testing.assert_allclose(path.positions, np.array(positions), rtol=0, atol=1e-9)
    # The gradient step from the look-ahead point lands on the next classical position.
    np.testing.assert_allclose(path.positions[1:], path.points[:-1] - lr * path.grads, rtol=0, atol=1e-12)


def test_divergence_is_detected_and_reported():
    path = run_optimizer("rosenbrock", "SGD", steps=100, hparams={"lr": 0.1})
    assert path.diverged_at is not None and path.diverged_at < 100
    assert path.steps == path.diverged_at
    assert not np.isfinite(path.points[-1]).all() or np.abs(path.points[-1]).max() > 1e6
    ok = run_optimizer("rosenbrock", "SGD", steps=100)
    assert ok.diverged_at is None


def test_bad_arguments_get_clear_messages():
    with pytest.raises(ValueError, match="Invalid learning rate"):  # torch.optim's own validation
        run_optimizer("quadratic", "Adam", hparams={"lr": -1.0})
    with pytest.raises(ValueError, match="Invalid beta parameter"):
        run_optimizer("quadratic", "Adam", hparams={"betas": (1.5, 0.999)})
    with pytest.raises(ValueError, match="Unknown hyperparameter 'momentun' for Momentum.*momentum"):
        run_optimizer("quadratic", "Momentum", hparams={"momentun": 0.9})
    with pytest.raises(ValueError, match="Unknown optimizer 'adam'.*Adam"):
        run_optimizer("quadratic", "adam")
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        run_optimizer("quadratic", "SGD", steps=-1)
    with pytest.raises(ValueError, match="start must be two finite numbers"):
        run_optimizer("quadratic", "SGD", start=(1.0, float("nan")))


def test_plot_paths_draws_the_given_paths():
    paths = [run_optimizer("saddle", o, steps=25) for o in ("SGD", "Nesterov", "Adam")]
    fig = plot_paths("saddle", paths)
    ax = fig.axes[0]
    drawn = {line.get_label(): line.get_xydata() for line in ax.lines}
    for p in paths:
        np.testing.assert_array_equal(drawn[p.optimizer], p.points)
    assert fig.axes[1].get_yscale() == "log"
    with pytest.raises(ValueError, match="was run on 'saddle', not on 'quadratic'"):
        plot_paths("quadratic", paths)


# ----------------------------------------------------------------------------- playground widget


def drawn_path(pg: Playground, name: str) -> np.ndarray:
    line = pg.canvas._lines[name]["path"]
    assert line.get_visible()
    return line.get_xydata()


def test_playground_slider_moves_recompute_torch_paths_and_redraw():
    pg = Playground("quadratic", ["SGD", "Momentum", "Adam"], steps=50)
    assert pg.selected == ["SGD", "Momentum", "Adam"]
    start = SURFACES["quadratic"].start
    for name in pg.selected:
        assert_same(drawn_path(pg, name), torch_iterates("quadratic", name, start, 50, pg.hparams(name)))
    image, adam_before, sgd_before = pg.image.value, pg.paths["Adam"], pg.paths["SGD"]

    pg.sliders["Adam"]["lr"].value = 0.3  # as if the student dragged the slider
    assert pg.hparams("Adam")["lr"] == pytest.approx(0.3, rel=0.02)  # log slider snaps to its grid
    assert not np.array_equal(pg.paths["Adam"].points, adam_before.points)
    assert pg.paths["SGD"] is sgd_before  # untouched optimisers are not recomputed
    ref = torch_iterates("quadratic", "Adam", start, 50, pg.hparams("Adam"))
    assert_same(pg.paths["Adam"].points, ref)
    assert_same(drawn_path(pg, "Adam"), ref)
    loss_line = pg.canvas._lines["Adam"]["loss"].get_ydata()
    np.testing.assert_allclose(loss_line, np.clip(pg.paths["Adam"].losses, 1e-12, None))
    assert pg.image.value != image

    pg.sliders["Adam"]["beta1"].value = 0.5
    pg.sliders["Adam"]["eps"].value = 1e-3
    assert pg.hparams("Adam")["betas"][0] == 0.5
    assert_same(drawn_path(pg, "Adam"), torch_iterates("quadratic", "Adam", start, 50, pg.hparams("Adam")))

    pg.sliders["Momentum"]["momentum"].value = 0.5
    assert pg.paths["Momentum"].hparams["momentum"] == 0.5
    assert_same(
        drawn_path(pg, "Momentum"), torch_iterates("quadratic", "Momentum", start, 50, pg.hparams("Momentum"))
    )


def test_playground_start_steps_and_checkboxes():
    pg = Playground("saddle", ["SGD", "Adam"], steps=30)
    pg.start_x.value, pg.start_y.value = 1.0, 0.5
    pg.steps.value = 70
    for name in ("SGD", "Adam"):
        p = pg.paths[name]
        assert p.steps == 70 and tuple(p.points[0]) == (1.0, 0.5)
        assert_same(drawn_path(pg, name), torch_iterates("saddle", name, (1.0, 0.5), 70, pg.hparams(name)))
    assert tuple(pg.canvas._start.get_xydata()[0]) == (1.0, 0.5)

    pg.checkboxes["SGD"].value = False
    pg.checkboxes["Nesterov"].value = True
    assert set(pg.paths) == {"Nesterov", "Adam"}
    assert not pg.canvas._lines["SGD"]["path"].get_visible()
    # Nesterov's look-ahead construction is drawn: zig-zag theta_0, p_0, theta_1, p_1, ...
    art, p = pg.canvas._lines["Nesterov"], pg.paths["Nesterov"]
    zig = art["zigzag"].get_xydata()
    np.testing.assert_array_equal(zig[0::2], p.positions)
    np.testing.assert_array_equal(zig[1::2], p.points[:-1])
    assert art["lookahead"].get_visible() and len(art["lookahead"].get_xydata()) == p.steps - 1


def test_playground_surface_switch_and_reset():
    pg = Playground("quadratic", ["SGD"], steps=20)
    pg.sliders["SGD"]["lr"].value = 0.01
    pg.surface.value = "himmelblau"
    s = SURFACES["himmelblau"]
    assert (pg.start_x.min, pg.start_x.max, pg.start_y.min, pg.start_y.max) == (*s.xlim, *s.ylim)
    assert (pg.start_x.value, pg.start_y.value) == s.start
    assert pg.hparams("SGD")["lr"] == pytest.approx(s.lr["SGD"], rel=0.02)
    assert pg.paths["SGD"].surface == "himmelblau"
    assert_same(drawn_path(pg, "SGD"), torch_iterates("himmelblau", "SGD", s.start, 20, pg.hparams("SGD")))

    pg.sliders["SGD"]["lr"].value = 0.001
    pg.reset_button.click()
    assert pg.hparams("SGD")["lr"] == pytest.approx(s.lr["SGD"], rel=0.02)
    assert pg.hparams("Adam")["betas"] == pytest.approx((0.9, 0.999))  # torch.optim.Adam's defaults


def test_playground_reports_what_torch_rejects_and_divergence():
    pg = Playground("rosenbrock", ["SGD", "Nesterov"], steps=50)
    pg.sliders["Nesterov"]["momentum"].value = 0.0  # torch: Nesterov needs momentum > 0
    assert "Nesterov" not in pg.paths and "Nesterov" in pg.errors
    assert "momentum" in pg.errors["Nesterov"].lower() and "Nesterov" in pg.status.value
    pg.sliders["SGD"]["lr"].value = 0.5
    assert pg.paths["SGD"].diverged_at is not None
    assert "SGD diverged at step" in pg.status.value


def test_fast_redraw_gives_the_same_pixels_as_a_full_draw():
    """The playground only redraws lines over a cached contour bitmap; the result must not differ."""
    from PIL import Image

    pg = Playground("himmelblau", ["SGD", "Nesterov", "Adam"], steps=40)
    pg.sliders["Adam"]["lr"].value = 0.5
    pg.surface.value = "saddle"  # a new surface invalidates the cached contour
    pg.start_y.value = 0.3
    fast = np.asarray(Image.open(io.BytesIO(pg.image.value)).convert("RGB"), dtype=np.int16)
    buf = io.BytesIO()
    pg.canvas.fig.savefig(buf, format="png")  # full draw of everything
    full = np.asarray(Image.open(buf).convert("RGB"), dtype=np.int16)
    assert fast.shape == full.shape
    assert (np.abs(fast - full).max(axis=2) > 16).mean() < 0.001


def test_playground_mimebundle_has_widget_and_static_fallback():
    pg = Playground("rosenbrock", ["Adam"], steps=10)
    bundle = pg._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(b"\x89PNG") and png == pg.image.value


@pytest.mark.parametrize("optimizer", ["SGD", "Nesterov", "Adam"])
def test_gradient_noise_is_the_same_noise_torch_optim_sees(optimizer):
    start, hp = SURFACES["quadratic"].start, default_hparams(optimizer, "quadratic")
    path = run_optimizer("quadratic", optimizer, steps=60, noise=1.5, seed=7)
    assert_same(path.points, torch_iterates("quadratic", optimizer, start, 60, hp, noise=1.5, seed=7))
    exact = run_optimizer("quadratic", optimizer, steps=60)
    assert_same(exact.points, torch_iterates("quadratic", optimizer, start, 60, hp))
    assert not np.array_equal(path.points, exact.points)
    again = run_optimizer("quadratic", optimizer, steps=60, noise=1.5, seed=7)
    other = run_optimizer("quadratic", optimizer, steps=60, noise=1.5, seed=8)
    np.testing.assert_array_equal(again.points, path.points)
    assert not np.array_equal(other.points, path.points)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        run_optimizer("quadratic", optimizer, noise=-1.0)


def test_noise_leaves_sgd_at_a_floor_and_takes_nesterovs_edge():
    """GD converges; noisy gradients (SGD) stall at a noise floor. Nesterov's edge over momentum goes."""

    def floor(optimizer, noise, hp):  # mean loss over the last 50 of 200 steps, over 8 noise seeds
        return np.mean(
            [
                run_optimizer("quadratic", optimizer, steps=200, hparams=hp, noise=noise, seed=s).losses[-50:]
                for s in range(8)
            ]
        )

    assert floor("SGD", 0.0, {}) < 1e-8 and floor("SGD", 1.0, {}) > 1e-2
    hp = {"lr": 0.05, "momentum": 0.9}
    assert floor("Momentum", 0.0, hp) > 100 * floor("Nesterov", 0.0, hp)  # exact gradients: Nesterov wins
    assert floor("Nesterov", 1.0, hp) > 0.5 * floor("Momentum", 1.0, hp)  # noisy: no better


def test_momentum_beats_plain_gd_on_the_quadratic_with_the_defaults():
    gd = run_optimizer("quadratic", "SGD")
    for name in ("Momentum", "Nesterov"):
        assert run_optimizer("quadratic", name).losses[-1] < 1e-3 * gd.losses[-1], name
    assert default_hparams("Momentum", "quadratic") == {"lr": 0.05, "momentum": 0.6}
    assert default_hparams("Momentum", "rosenbrock")["momentum"] == 0.9  # torch's default elsewhere


def test_your_own_optimizer_class_runs_like_torch_optim():
    hp = {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}
    mine = run_optimizer("himmelblau", MyAdam, start=(1.0, -2.0), steps=60, hparams=hp, noise=0.5)
    ref = torch_iterates("himmelblau", "Adam", (1.0, -2.0), 60, hp, noise=0.5)
    np.testing.assert_allclose(mine.points, ref.numpy(), rtol=0, atol=1e-12)
    assert mine.optimizer == "MyAdam"
    spec = custom_optimizer("mine", MyAdam)
    assert spec.like == "Adam" and [h.name for h in spec.hparams] == ["lr", "beta1", "beta2", "eps"]
    assert default_hparams(spec, "rosenbrock")["lr"] == SURFACES["rosenbrock"].lr["Adam"]
    sign = custom_optimizer("sign", SignSGD, like="SGD")
    assert [h.name for h in sign.hparams] == ["lr"] and default_hparams(sign, "saddle")["lr"] == 0.1
    path = run_optimizer("quadratic", sign, steps=3, hparams={"lr": 0.1})
    np.testing.assert_allclose(
        path.points[1] - path.points[0], [0.1, -0.1]
    )  # sign step, (x, y) = (-4.5, 1.5)
    with pytest.raises(TypeError, match="step\\(\\) and zero_grad\\(\\)"):
        custom_optimizer("bad", dict)
    with pytest.raises(ValueError, match="like='adam' is not a built-in"):
        custom_optimizer("mine", MyAdam, like="adam")


def test_playground_runs_your_optimizer_next_to_torch():
    pg = Playground("quadratic", ["Adam"], steps=40, extra={"mine": MyAdam})
    assert pg.selected == ["Adam", "mine"] and list(pg.optimizers)[-1] == "mine"
    np.testing.assert_allclose(pg.paths["mine"].points, pg.paths["Adam"].points, rtol=0, atol=1e-12)
    assert_same(drawn_path(pg, "Adam"), torch_iterates("quadratic", "Adam", SURFACES["quadratic"].start, 40,
                                                       pg.hparams("Adam")))  # fmt: skip
    assert "mine: (" in pg.status.value
    pg.sliders["mine"]["beta1"].value = 0.5
    assert pg.hparams("mine")["betas"][0] == 0.5
    assert not np.array_equal(pg.paths["mine"].points, pg.paths["Adam"].points)
    pg.noise.value = 2.0  # the common noise slider reaches every optimiser, yours included
    ref = torch_iterates("quadratic", "Adam", SURFACES["quadratic"].start, 40, pg.hparams("Adam"), noise=2.0)
    assert_same(pg.paths["Adam"].points, ref)
    assert pg.paths["mine"].hparams["betas"][0] == 0.5
    with pytest.raises(ValueError, match="clashes with a built-in"):
        Playground("quadratic", extra={"Adam": MyAdam})


def test_a_failing_optimizer_class_is_reported_not_raised():
    class Broken(MyAdam):
        def step(self):
            raise RuntimeError("my step is broken")

    pg = Playground("saddle", ["SGD"], steps=5, extra={"broken": Broken})
    assert "broken" in pg.errors and "my step is broken" in pg.status.value and "SGD" in pg.paths


# ----------------------------------------------------------------------------- quiz


def test_cards_come_from_real_torch_runs():
    cards = make_cards(7, seed=3, steps=30)
    assert {c.answer for c in cards} == set(OPTIMIZERS)  # a deck of 7 shows every optimiser once
    for c in cards:
        assert c.answer in c.choices and len(set(c.choices)) == len(c.choices) == 4
        assert c.kind in ("trajectory", "loss")
        assert c.path.diverged_at is None
        ref = torch_iterates(c.path.surface, c.answer, tuple(c.path.points[0]), 30, c.path.hparams)
        assert_same(c.path.points, ref)
    again = make_cards(7, seed=3, steps=30)
    assert [c.choices for c in again] == [c.choices for c in cards]
    other = make_cards(7, seed=4, steps=30)
    assert [c.path.points[0].tolist() for c in other] != [c.path.points[0].tolist() for c in cards]


def test_explanations_quote_the_run():
    adam = run_optimizer("rosenbrock", "Adam", steps=20, hparams={"lr": 0.05})
    assert "1.0000·lr and 1.0000·lr" in explain(adam)  # bias correction: first step is lr per coordinate
    rms = run_optimizer("quadratic", "RMSprop", steps=20, hparams={"lr": 0.01, "alpha": 0.96})
    assert "≈ lr/√(1-α) = 5·lr (measured 5·lr and 5·lr)" in explain(rms)
    sgd = run_optimizer("quadratic", "SGD", steps=20, hparams={"lr": 0.075})
    assert "1.0000 to 1.0000" in explain(sgd)
    assert "zig-zagged" in explain(sgd)  # lr*25 > 1: y flips sign every step
    nesterov = explain(run_optimizer("quadratic", "Nesterov", steps=40))
    assert "plain momentum with the same lr" in nesterov


def test_card_pictures_do_not_give_the_answer_away():
    for card in make_cards(4, seed=0, steps=20):
        fig = card_figure(card)
        fig.canvas.draw()  # materialise tick labels
        texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
        assert any("step" in t or "x" == t for t in texts)  # the search does see the labels
        assert not any(name in t for t in texts for name in OPTIMIZERS), texts
        assert all(ax.get_legend() is None for ax in fig.axes)


def test_quiz_widget_scores_and_explains():
    quiz = Quiz(n_cards=3, seed=1, steps=20)
    first_image = quiz.image.value
    card = quiz.card
    right = next(b for b in quiz.buttons if b.description == card.answer)
    right.click()
    assert quiz.score == 1 and quiz.answered == 1
    assert "Right" in quiz.feedback.value and card.explanation in quiz.feedback.value
    assert right.button_style == "success" and all(b.disabled for b in quiz.buttons)
    quiz.answer(card.answer)  # answering again does not score again
    assert quiz.score == 1 and quiz.answered == 1

    quiz.next_button.click()
    assert quiz.index == 1 and quiz.image.value != first_image and quiz.feedback.value == ""
    wrong = next(b for b in quiz.buttons if b.description != quiz.card.answer)
    wrong.click()
    assert quiz.score == 1 and quiz.answered == 2
    assert f"it was <b>{quiz.card.answer}</b>" in quiz.feedback.value and wrong.button_style == "danger"
    with pytest.raises(ValueError, match="not one of this card's choices"):
        quiz.answer("Lion")

    quiz.next()
    quiz.answer(quiz.card.answer)
    assert quiz.finished and "Deck done: 2/3" in quiz.feedback.value
    quiz.next()  # after the last card: a new deck
    assert quiz.index == 0 and quiz.score == 0 and not quiz.finished
    assert "image/png" in quiz._repr_mimebundle_()


def test_quiz_deck_size_follows_fast_mode(fast_mode):
    assert len(Quiz(seed=0, steps=10).cards) == 3


# ----------------------------------------------------------------------------- notebook


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    assert "widgets" not in nb["metadata"]


def test_notebook_runs_headless_with_static_fallbacks(tmp_path):
    """nbclient in fast mode (as CI runs every notebook): no errors, and every widget also left a PNG."""
    out = tmp_path / "executed.ipynb"
    env = {**os.environ, "COURSE_FAST": "1"}
    cmd = [sys.executable, "-m", "jupyter", "execute", f"--output={out}", str(NOTEBOOK)]
    run = subprocess.run(
        cmd, cwd=ROOT / "notebooks", env=env, capture_output=True, text=True, timeout=scaled(600)
    )
    assert run.returncode == 0, run.stderr[-3000:]
    nb = json.loads(out.read_text())
    widget_outputs = [
        o
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c["outputs"]
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert len(widget_outputs) == 3  # playground, the one with your optimiser, and the quiz
    assert all(base64.b64decode(o["data"]["image/png"]).startswith(b"\x89PNG") for o in widget_outputs)


def test_notebook_opens_with_the_current_badge_and_setup_cell():
    import nbformat

    from tools import notebooks as nbtools

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nbtools.problems(nb, nbtools.load_setting(), "notebooks/08_playground.ipynb") == []
