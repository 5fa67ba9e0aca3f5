"""Lecture exercises: every lecture of this list ends with two or three, each a "predict, then run" or a short
derivation with a self-check cell that runs anywhere, a solution students unfold, and a hidden cell that checks the
solution's numbers (so a solution that the data stops supporting fails the notebook run, in fast and full mode).

Also the quiz's own words: a flash card never claims an overshoot that its run did not have."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_utils.playground import run_optimizer
from course_utils.quiz import check_prediction, explain

ROOT = Path(__file__).resolve().parent.parent
# 07 and the lectures added after it carry their own exercises (a different change); these are checked here.
WITH_EXERCISES = ["01", "02", "03", "04", "05", "06", "06b", "08"]


def _lecture(number: str) -> Path:
    (path,) = [p for p in (ROOT / "notebooks").glob(f"{number}_*.ipynb")]
    return path


def exercises(nb: nbformat.NotebookNode) -> list[list[nbformat.NotebookNode]]:
    """Each exercise: its statement, self-check, solution and solution-check cells, in order."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and "**Exercise " in cell.source:
            found.append(nb.cells[i : i + 4])
    return found


def test_check_prediction_answers_none_yes_and_no(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_prediction(None, 241.0) is None
    assert "measured value: 241" in capsys.readouterr().out
    assert check_prediction(240.0, 241.0, rel_tol=0.05) is True
    assert check_prediction(100.0, 241.0, rel_tol=0.05) is False
    assert "not within 5%" in capsys.readouterr().out.splitlines()[-1]
    assert check_prediction(-0.0031, -0.00316, rel_tol=0.05) is True, "negative values compare by magnitude"


@pytest.mark.parametrize("number", WITH_EXERCISES)
def test_lecture_has_exercises_with_self_check_and_solution(number: str) -> None:
    nb = nbformat.read(_lecture(number), as_version=4)
    found = exercises(nb)
    assert 2 <= len(found) <= 3, f"{number}: {len(found)} exercises"
    for statement, check, solution, verify in found:
        assert "(predict, then run)" in statement.source or "(a short derivation)" in statement.source
        assert check.cell_type == "code" and check.source.startswith("prediction = None")
        assert "check_prediction(prediction," in check.source, "the self-check compares the student's answer"
        assert solution.cell_type == "markdown"
        assert solution.source.startswith("<details><summary><b>Solution</b>")
        assert solution.source.rstrip().endswith("</details>"), "the solution stays folded until clicked"
        assert verify.cell_type == "code" and verify.metadata.get("jupyter", {}).get("source_hidden")
        assert "assert" in verify.source, "the solution's numbers are checked when the notebook runs"
    headings = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.search(r"^## (\d+\. )?Exercises$", headings, flags=re.M), f"{number}: no exercises section"


def test_self_checks_do_not_depend_on_the_solution_cells() -> None:
    """The self-check must run before the solution is unfolded: it may not use names the hidden check defines."""
    for number in WITH_EXERCISES:
        for _, check, _, verify in exercises(nbformat.read(_lecture(number), as_version=4)):
            defined = {line.split("=")[0].strip() for line in verify.source.splitlines() if " = " in line}
            assert not any(name and name in check.source for name in defined), (number, defined)


@pytest.mark.parametrize(
    ("surface", "optimizer", "hparams"),
    [
        ("quadratic", "Momentum", {"lr": 0.01, "momentum": 0.1}),  # creeps downhill: never overshoots
        ("quadratic", "Momentum", None),
        ("rosenbrock", "Adam", None),
        ("himmelblau", "Nesterov", None),
    ],
)
def test_flash_card_claims_an_overshoot_only_when_the_loss_rose(surface, optimizer, hparams) -> None:
    path = run_optimizer(surface, optimizer, steps=60, hparams=hparams)
    rises = int(np.sum(np.diff(path.losses) > 1e-9 * (np.abs(path.losses[:-1]) + 1e-12)))
    text = explain(path)
    assert ("overshoots and swings back" in text) == (rises > 0), text
    assert "rose on 0 " not in text
