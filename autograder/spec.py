"""The registry of what the lab grades: its notebooks, their graded parts, and the mistakes
each part can name.

Each part is declared once, here: its notebook, its test cell, its *driver* (the function of
:mod:`autograder.cases` that runs the student's code inside the jail, with its arguments),
its *judge* (the function of :mod:`autograder.judge` that compares the driver's record with
a reference outside the jail), what a pass means, its hint, and the codes of the mistakes
its judge can recognise. The sandbox, the judge, the score reconciliation, the feedback and
the class page all dispatch through these tables, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from autograder import judge

ASSIGNMENT = "optimizers_lab"
POINTS_PER_PART = 1


@dataclass(frozen=True)
class Mistake:
    """A misconception a judge recognises by re-running the reference with it; the class page counts its code."""

    code: str  # what a verdict carries, e.g. "no_bias_correction"
    notebook: str
    label: str  # the class page's row, e.g. "no bias correction"
    hint: str  # what to reteach, and the hint a student gets with a verdict naming this mistake


@dataclass(frozen=True)
class Part:
    """One independently graded idea: a test cell worth ``points`` marks, run by ``driver``, judged by ``judge``."""

    name: str  # the check's name, e.g. "first_step"
    grade_id: str  # the nbgrader grade_id of its test cell
    title: str  # what it checks, in one line: the feedback's row, and what a pass means
    hint: str  # what to look at when it fails and no known mistake explains it (never the test's code)
    driver: str  # a function of autograder.cases: driver(student_object, seed, device, **driver_args)
    judge: Callable  # judge(payload, seed, device, **driver_args) -> judge.Finding | None
    mistakes: tuple[str, ...] = ()  # the codes its judge may report
    driver_args: dict = field(default_factory=dict)
    points: int = POINTS_PER_PART


@dataclass(frozen=True)
class Notebook:
    """A graded notebook: where the solution lives, the name it must define, its parts."""

    name: str
    solution_id: str  # grade_id of the cell students complete
    symbol: str  # the function or class that cell must define
    kind: str  # "function" or "class"
    prelude: str  # the imports the notebook provides before the solution cell
    parts: tuple[Part, ...] = field(default_factory=tuple)
    guarded: bool = (
        False  # torch's own Adam is out of bounds: the sandbox arms its tripwires (these parts last)
    )

    @property
    def max_score(self) -> int:
        return sum(p.points for p in self.parts)

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(
            f"Unknown part {name!r} of notebook {self.name!r}; known: {[p.name for p in self.parts]}"
        )


PRELUDE = """\
import math

import numpy as np
import torch
import torch.nn.functional as F
import tqdm
from torch import nn
"""

_MISTAKES = (
    # train_epoch
    Mistake("loss_not_divided", "accumulation", "loss not divided by the group size",
            "divide each batch's loss by the group size before backward(), so the summed gradients are "
            "those of the group's mean loss"),
    Mistake("zeroed_every_batch", "accumulation", "gradients zeroed every batch",
            "call zero_grad() only after optimizer.step(): within a group the gradients must add up"),
    Mistake("step_every_batch", "accumulation", "a step after every batch",
            "step only when a group is complete: after every accumulation_steps batches, and once for a "
            "final partial group"),
    Mistake("last_group_dropped", "accumulation", "no step for the final partial group",
            "when the batches run out mid-group, step once more: those batches' gradients are otherwise lost"),
    Mistake("partial_divided_by_k", "accumulation", "final partial group divided by accumulation_steps",
            "the last group may have fewer batches than accumulation_steps; its mean is over the batches it has"),
    Mistake("losses_not_group_means", "accumulation", "returned losses are not the group means",
            "return one number per optimizer step: the mean of the unscaled batch losses of that step's group"),
    # Adam
    Mistake("no_bias_correction", "adam", "no bias correction",
            "m and v start at zero, so early averages are too small: divide by (1 - beta1**t) and "
            "(1 - beta2**t) before the update"),
    Mistake("bias_correction_t0", "adam", "bias correction with t = 0",
            "t must be 1 on the first step (1 - beta**0 is 0): advance t before using it"),
    Mistake("t_per_parameter", "adam", "t counted per parameter",
            "t counts step() calls, so it is shared by every parameter: advance it once per step, outside "
            "the loop over parameters"),
    Mistake("eps_inside_sqrt", "adam", "eps inside the square root",
            "the denominator is sqrt(v_hat) + eps: eps is added after the square root"),
    Mistake("m_not_m_hat", "adam", "the update uses m instead of m_hat",
            "the numerator of the update is the bias-corrected m_hat, like the denominator's v_hat"),
    Mistake("betas_swapped", "adam", "betas swapped",
            "betas=(beta1, beta2): beta1 (0.9) averages g into m, beta2 (0.999) averages g**2 into v"),
    Mistake("v_from_abs_g", "adam", "v built from |g| instead of g**2",
            "v is a running average of the squared gradient, g * g, so sqrt(v_hat) has the units of g"),
    Mistake("m_from_g_squared", "adam", "m built from g**2 instead of g",
            "m is a running average of the gradient g itself (it keeps the sign); only v averages g**2"),
    Mistake("no_update", "adam", "step() does not move the parameters",
            "step() must change every parameter that has a gradient, in place and against the gradient"),
    Mistake("state_misplaced", "adam", "state not on the parameter's device or dtype",
            "create m and v with torch.zeros_like(param): same shape, device and dtype as the parameter"),
    Mistake("used_up_generator", "adam", "parameters read from a used-up generator",
            "model.parameters() is a generator, readable once: turn it into a list before building the state"),
    Mistake("zero_grad_keeps", "adam", "zero_grad does not clear the gradients",
            "zero_grad() must set every param.grad to None (or zero it in place), or backward() adds the "
            "new gradient to the old one"),
    Mistake("decay_decoupled", "adam", "weight decay decoupled (AdamW-style)",
            "your step shrinks the weights outside m and v. Write the condition under which your step is zero "
            "and compare it with the stationary condition of loss + (weight_decay / 2) * ||param||**2: are "
            "they the same equation?"),
    Mistake("decay_ignored", "adam", "weight_decay ignored",
            "weight_decay must change the steps: write the objective with the penalty, and differentiate it"),
    Mistake("decay_doubled", "adam", "weight decay twice Adam's",
            "give a parameter a zero loss gradient: how far does your step move it, and how far does the "
            "gradient of the objective say it should?"),
    Mistake("decay_halved", "adam", "weight decay half Adam's",
            "give a parameter a zero loss gradient: how far does your step move it, and how far does the "
            "gradient of the objective say it should?"),
    Mistake("delegated", "adam", "delegated to torch's Adam",
            "write the update with ordinary tensor operations (torch._foreach_* and subclassing "
            "torch.optim.Optimizer are fine; torch's own Adam code is not)"),
)  # fmt: skip
MISTAKES: dict[str, Mistake] = {m.code: m for m in _MISTAKES}
_ADAM_MATHS = ("no_bias_correction", "bias_correction_t0", "t_per_parameter", "eps_inside_sqrt",
               "m_not_m_hat", "betas_swapped", "v_from_abs_g", "m_from_g_squared", "no_update")  # fmt: skip

ACCUMULATION = Notebook(
    name="accumulation",
    solution_id="accumulation_solution",
    symbol="train_epoch",
    kind="function",
    prelude=PRELUDE,
    parts=(
        Part(
            "plain",
            "test_accumulation_plain",
            "accumulation_steps=1 is plain mini-batch training (same steps, same weights, same losses)",
            "With accumulation_steps=1 every batch must be one optimizer step and the returned list must hold "
            "every batch's loss, exactly like course_utils.train_epoch.",
            "run_train_epochs",
            judge.plain,
            ("losses_not_group_means",),
            {"cases": ((5, 1),)},
        ),
        Part(
            "schedule",
            "test_accumulation_schedule",
            "the optimizer steps after every accumulation_steps batches, no more and no fewer",
            "Count your optimizer.step() calls: with accumulation_steps=4, 8 batches need steps after "
            "batches 4 and 8 only.",
            "run_train_epochs",
            judge.schedule,
            ("step_every_batch",),
            {"cases": ((7, 3), (8, 4))},
        ),
        Part(
            "group_gradient",
            "test_accumulation_gradient",
            "each update uses the gradient of the mean of its group's batch losses",
            "Gradients must add up over the group (zero them only after a step, not every batch) and each "
            "batch's loss must be divided by the group size before backward().",
            "run_train_epochs",
            judge.group_gradient,
            ("loss_not_divided", "zeroed_every_batch", "step_every_batch"),
            {"cases": ((8, 4), (6, 2))},
        ),
        Part(
            "partial_group",
            "test_accumulation_partial",
            "a final partial group gets its own step, with the mean over the batches it really has",
            "When the batches run out mid-group, step once more; that group's loss is averaged over the "
            "batches it has, not over accumulation_steps.",
            "run_train_epochs",
            judge.partial_group,
            ("last_group_dropped", "partial_divided_by_k", "step_every_batch"),
            {"cases": ((7, 3), (9, 4))},
        ),
        Part(
            "losses",
            "test_accumulation_losses",
            "one returned loss per optimizer step: the mean of that step's group of (unscaled) batch losses",
            "Return one number per optimizer step: the mean of the unscaled batch losses of that group, "
            "including the batch that triggers the step.",
            "run_train_epochs",
            judge.losses,
            ("losses_not_group_means",),
            {"cases": ((8, 3), (6, 2))},
        ),
    ),
)

ADAM = Notebook(
    name="adam",
    solution_id="adam_solution",
    symbol="Adam",
    kind="class",
    prelude=PRELUDE,
    guarded=True,
    parts=(
        Part(
            "first_step",
            "test_adam_first_step",
            "the first step matches torch.optim.Adam (moments from g and g**2, bias correction with t=1)",
            "m is an average of the gradient g and v of g**2; on the first step t must be 1, so that "
            "m_hat = g and v_hat = g**2.",
            "run_first_step",
            judge.first_step,
            _ADAM_MATHS + ("delegated",),
        ),
        Part(
            "many_steps",
            "test_adam_many_steps",
            "30 steps match torch.optim.Adam for several lr/betas/eps settings",
            "Check every line of the update against the formulas: which quantity does each hyperparameter "
            "enter, and which t does each step use?",
            "run_many_steps",
            judge.many_steps,
            _ADAM_MATHS + ("delegated",),
        ),
        Part(
            "training_loop",
            "test_adam_training_loop",
            "in a training loop, Adam(model.parameters()) with zero_grad(), backward() and step() takes the same "
            "steps as your own update given a list and fresh gradients",
            "A generator can be iterated only once; and zero_grad() must clear every gradient, or backward() "
            "adds the new one to the last step's.",
            "run_training_loop",
            judge.training_loop,
            ("used_up_generator", "zero_grad_keeps", "delegated") + _ADAM_MATHS,
        ),
        Part(
            "weight_decay",
            "test_adam_weight_decay",
            "weight_decay=wd takes the same steps as your own update with weight_decay=0 fed the gradient of "
            "loss + (wd / 2) * ||param||**2",
            "Write down the objective that weight_decay adds, differentiate it, and ask where in the update "
            "that gradient has to enter.",
            "run_weight_decay",
            judge.weight_decay,
            ("decay_decoupled", "decay_ignored", "decay_doubled", "decay_halved", "delegated") + _ADAM_MATHS,
        ),
        Part(
            "device_state",
            "test_adam_device_state",
            "state lives on each parameter's device and dtype (float64 parameters, and CUDA when present)",
            "Create m and v with torch.zeros_like(param) so they share the parameter's device and dtype.",
            "run_device_state",
            judge.device_state,
            ("state_misplaced", "delegated") + _ADAM_MATHS,
        ),
    ),
)

NOTEBOOKS: dict[str, Notebook] = {graded.name: graded for graded in (ACCUMULATION, ADAM)}
MAX_SCORE = sum(graded.max_score for graded in NOTEBOOKS.values())


def notebook(name: str) -> Notebook:
    """The notebook called ``name``, with a clear error for an unknown one."""
    try:
        return NOTEBOOKS[name]
    except KeyError:
        raise KeyError(f"Unknown notebook {name!r}; the lab has {sorted(NOTEBOOKS)}") from None
