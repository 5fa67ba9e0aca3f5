"""What the lab grades: its notebooks, their graded parts and the hints students see.

One table drives the notebooks' hidden cells, the sandboxed checks, the score
reconciliation, the feedback report and the CSV export, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ASSIGNMENT = "optimizers_lab"
POINTS_PER_PART = 1


@dataclass(frozen=True)
class Part:
    """One independently graded check: a test cell worth ``points`` marks."""

    name: str  # the check's name, e.g. "first_step"
    grade_id: str  # the nbgrader grade_id of its test cell
    title: str  # what it checks, in one line, shown in the feedback
    hint: str  # what to look at when it fails (never the test's code)
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
            "accumulation_steps=1 is plain mini-batch training (same steps, same losses)",
            "With accumulation_steps=1 every batch must be one optimizer step and the returned list must hold "
            "every batch's loss, exactly like course_utils.train_epoch.",
        ),
        Part(
            "schedule",
            "test_accumulation_schedule",
            "the optimizer steps after every accumulation_steps batches and once more for a final partial group",
            "Count your optimizer.step() calls: 7 batches with accumulation_steps=3 need steps after batches "
            "3, 6 and 7 - no more, no fewer.",
        ),
        Part(
            "group_gradient",
            "test_accumulation_gradient",
            "each update uses the gradient of the mean of its group's batch losses",
            "Gradients must add up over the group (zero them only after a step, not every batch) and each "
            "batch's loss must be divided by the group size before backward().",
        ),
        Part(
            "partial_group",
            "test_accumulation_partial",
            "the final partial group gets its own step with the mean over its own batches",
            "When the batches run out mid-group, step once more; that group's losses are averaged over the "
            "batches it really has, not over accumulation_steps.",
        ),
        Part(
            "losses",
            "test_accumulation_losses",
            "one returned loss per optimizer step: the mean of that group's batch losses",
            "Return one number per optimizer step: the mean of the (unscaled) batch losses of that group, "
            "including the batch that triggers the step and the final partial group.",
        ),
    ),
)

ADAM = Notebook(
    name="adam",
    solution_id="adam_solution",
    symbol="Adam",
    kind="class",
    prelude=PRELUDE,
    parts=(
        Part(
            "first_step",
            "test_adam_first_step",
            "the first step matches torch.optim.Adam (moments from g and g**2, bias correction with t=1)",
            "m is an average of the gradient g and v of g**2; on the first step t must be 1, so that "
            "m_hat = g and v_hat = g**2.",
        ),
        Part(
            "many_steps",
            "test_adam_many_steps",
            "30 steps match torch.optim.Adam for several lr/betas/eps settings",
            "Advance t once per step() call (not once per parameter), keep eps outside the square root: "
            "sqrt(v_hat) + eps, and use every hyperparameter you are given.",
        ),
        Part(
            "training_loop",
            "test_adam_training_loop",
            "works in a training loop: model.parameters() as a generator, zero_grad() then backward() then step()",
            "A generator can be iterated only once: turn model_params into a list before building the state. "
            "zero_grad() must clear every gradient, or backward() adds the new one to the last step's; "
            "setting param.grad = None is what torch.optim does (zeroing in place works too).",
        ),
        Part(
            "weight_decay",
            "test_adam_weight_decay",
            "weight_decay matches torch.optim.Adam(weight_decay=...), also with other betas and eps",
            "torch.optim.Adam(weight_decay=wd) minimises loss + (wd / 2) * ||param||**2: derive the gradient "
            "of that objective and let the whole update use it, like any gradient. Shrinking the parameter "
            "directly is AdamW, not Adam.",
        ),
        Part(
            "device_state",
            "test_adam_device_state",
            "state lives on each parameter's device and dtype (float64 params, and CUDA when present)",
            "Create m and v with torch.zeros_like(param) so they share the parameter's device and dtype.",
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
