"""The report stage on a small graded class: feedback pages, the class page, the CSV export.

The hidden-check messages below are the judge's real words for the known-wrong answers in
tests/fixtures/solutions.py (copied from a run of autograder.checks.run_checks, seed 1234, CPU; the
course material's answers from the class graded by nbgrader autograde in assignments/).
"""

from __future__ import annotations

import base64
import csv
import html
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from autograder import report, spec
from autograder.results import NotebookResult, PartResult, StudentResult

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = {  # (notebook, part) -> the judge's message for one known-wrong answer
    "no_bias_correction": {
        "first_step": "after the first step (lr=0.01), parameter 0 is off by up to 0.0216 (26 of 30 values) "
        "compared with torch.optim.Adam",
        "many_steps": "with defaults, after step 1 of 30, parameter 0 is off by up to 0.00216 (26 of 30 values) "
        "compared with torch.optim.Adam",
        "training_loop": "in a training loop given model.parameters(), after step 1 of 5, parameter 0 is off by up "
        "to 0.0216 (120 of 120 values) compared with torch.optim.Adam",
        "weight_decay": "with {'weight_decay': 0.1}, after step 1 of 10, parameter 0 is off by up to 0.00216 (30 of 30 "
        "values) compared with torch.optim.Adam",
        "device_state": "with float64 parameters on cpu, after step 1 of 10, parameter 0 is off by up to 7.99e-08 "
        "(25 of 30 values) compared with torch.optim.Adam (are m and v float64 like the parameters?)",
    },
    "zero_grad_every_batch": {
        "group_gradient": "with 8 batches and accumulation_steps=4 at the step after batch 4 the gradient of "
        "parameter 0 is off by up to 0.157 (120 of 120 values) (your gradient is 0.224x the expected one)",
        "partial_group": "with 8 batches and accumulation_steps=3 the final partial group's gradient of parameter 0 "
        "is off by up to 0.206 (120 of 120 values) (it should be the gradient of the mean of that group's batch "
        "losses)",
    },
    "material_accumulation": {  # zeroes every batch and does not divide the losses either
        "group_gradient": "with 8 batches and accumulation_steps=4 at the step after batch 4 the gradient of "
        "parameter 0 is off by up to 0.175 (120 of 120 values) (your gradient is 1.12x the expected one)",
        "losses": "with 8 batches and accumulation_steps=3 loss 0 you returned is 1.16076; the mean of that "
        "group's batch losses is 1.70845",
    },
    "material_adam": {  # m from g**2 (no diagnosis of its own), the generator kept, no weight_decay
        "first_step": "after the first step (lr=0.01), parameter 0 is off by up to 0.0262 (26 of 30 values) "
        "compared with torch.optim.Adam",
        "training_loop": "given model.parameters() (a generator), your optimizer never changed the parameters, "
        "though it does given a list: the generator was used up before step() read it",
        "weight_decay": "your code raised TypeError: Adam.__init__() got an unexpected keyword argument "
        "'weight_decay' - your Adam must accept weight_decay=... (a keyword argument of __init__, default 0.0)",
    },
    "loss_not_scaled": {
        "group_gradient": "with 8 batches and accumulation_steps=4 at the step after batch 4 the gradient of "
        "parameter 0 is off by up to 0.438 (120 of 120 values) (your gradient is 4x the expected one)",
    },
    "no_final_partial_step": {
        "schedule": "with 7 batches and accumulation_steps=3 your optimizer stepped after batches [3, 6]; "
        "expected after [3, 6, 7]",
        "partial_group": "with 8 batches and accumulation_steps=3 the last 2 batch(es) form a partial group, but "
        "there was no final optimizer step after batch 8",
        "losses": "with 8 batches and accumulation_steps=3 train_epoch returned 2 losses; expected 3 (one per "
        "optimizer step)",
    },
    "scaled_losses_returned": {
        "losses": "with 8 batches and accumulation_steps=3 loss 0 you returned is 0.581216; the mean of that "
        "group's batch losses is 1.74365",
    },
    "t_per_parameter": {
        "first_step": "after the first step (lr=0.01), parameter 1 is off by up to 0.00256 (3 of 5 values) "
        "compared with torch.optim.Adam",
    },
    "t_from_zero": {
        "first_step": "after the first step (lr=0.01), parameter 0 contains NaN or inf compared with "
        "torch.optim.Adam",
    },
    "eps_inside_sqrt": {
        "many_steps": "with {'lr': 0.02, 'betas': (0.8, 0.95), 'eps': 0.001}, after step 1 of 30, parameter 0 is "
        "off by up to 0.0032 (6 of 30 values) compared with torch.optim.Adam",
    },
    "zero_grad_never_clears": {
        "training_loop": "in the training loop, zero_grad() before step 2 left parameter 0's gradient non-zero, so "
        "backward() added the new gradient to the old one",
    },
    "generator_consumed_twice": {
        "training_loop": "given model.parameters() (a generator), your optimizer never changed the parameters, "
        "though it does given a list: the generator was used up before step() read it",
    },
    "decoupled_weight_decay": {
        "weight_decay": "with {'weight_decay': 0.1}, after step 1 of 10, parameter 0 is off by up to 0.000989 (27 of "
        "30 values) compared with torch.optim.Adam; your steps are torch.optim.AdamW's: you shrank the weights "
        "directly, as AdamW does, but Adam's weight_decay adds weight_decay * param to the gradient, so it passes "
        "through m and v",
    },
    "weight_decay_ignored": {
        "weight_decay": "with {'weight_decay': 0.1}, after step 1 of 10, parameter 0 is off by up to 0.001 (4 of 30 "
        "values) compared with torch.optim.Adam; your steps are those of Adam without weight decay: your Adam "
        "ignored weight_decay",
    },
    "state_on_cpu": {
        "device_state": "with float64 parameters on cpu, your optimizer keeps a (6, 5) float32 tensor on cpu"
    },
}
NOTEBOOK_OF = {"zero_grad_every_batch": "accumulation", "material_accumulation": "accumulation", "loss_not_scaled": "accumulation",
               "no_final_partial_step": "accumulation", "scaled_losses_returned": "accumulation"}  # fmt: skip
DIAGNOSIS = {
    "no_bias_correction": {"no bias correction"},
    "zero_grad_every_batch": {"gradients zeroed every batch"},
    "loss_not_scaled": {"losses not divided by the group size"},
    "material_accumulation": {"gradients zeroed every batch", "returned losses are not the group means"},
    "material_adam": {"parameters read from a used-up generator"},
    "no_final_partial_step": {
        "no step for the final partial group",
        "not one returned loss per optimizer step",
    },
    "scaled_losses_returned": {"returned losses are not the group means"},
    "t_per_parameter": {"t counted per parameter"},
    "t_from_zero": {"bias correction with t = 0"},
    "eps_inside_sqrt": {"eps inside the square root"},
    "zero_grad_never_clears": {"zero_grad does not clear the gradients"},
    "generator_consumed_twice": {"parameters read from a used-up generator"},
    "decoupled_weight_decay": {"weight decay decoupled (AdamW-style)"},
    "weight_decay_ignored": {"weight_decay ignored"},
    "state_on_cpu": {"state not on the parameter's device or dtype"},
}


def _graded(name: str, failures: dict[str, str] | None = None, confined: bool = True) -> NotebookResult:
    """A graded notebook whose ``failures`` (part -> message) lost their mark; every other part passed."""
    failures = failures or {}
    parts = {}
    for p in spec.notebook(name).parts:
        lost = p.name in failures
        parts[p.name] = PartResult(p.name, p.title, 0.0 if lost else float(p.points), p.points,
                                   "failed" if lost else "passed", failures.get(p.name, ""),
                                   p.hint if lost else "", "cpu")  # fmt: skip
    score = sum(p.points for p in parts.values())
    return NotebookResult(name, "graded", score, spec.notebook(name).max_score, parts, [], confined)


def _mistake(key: str, confined: bool = True) -> NotebookResult:
    return _graded(NOTEBOOK_OF.get(key, "adam"), MESSAGES[key], confined)


@pytest.fixture
def graded_class() -> dict[str, StudentResult]:
    """A correct student, one without bias correction, one zeroing gradients every batch, one who sent nothing."""
    leaky = dict(MESSAGES["zero_grad_every_batch"])
    leaky["schedule"] = ('your code raised NameError: name "<script>x" is not defined\n'
                         '  File "<hidden>", line 3, in <module>\n    autograder.check("accumulation", "schedule")')  # fmt: skip
    return {
        "ada": StudentResult("ada", {"accumulation": _graded("accumulation"), "adam": _graded("adam")}),
        "ben": StudentResult("ben", {"accumulation": _graded("accumulation"), "adam": _mistake("no_bias_correction")}),
        "cleo": StudentResult("cleo", {"accumulation": _graded("accumulation", leaky, confined=False),
                                       "adam": _graded("adam", confined=False)}),
        "dev": StudentResult("dev", {n: NotebookResult.empty(n, "not submitted", f"{n}.ipynb was not submitted")
                                     for n in spec.NOTEBOOKS}),
    }  # fmt: skip


@pytest.mark.parametrize("key", sorted(DIAGNOSIS))
def test_each_known_mistake_is_diagnosed_from_the_judges_words(key: str) -> None:
    assert {m.label for m in report.diagnose(_mistake(key))} == DIAGNOSIS[key]


def test_correct_and_unsubmitted_notebooks_show_no_mistake() -> None:
    for name in spec.NOTEBOOKS:
        assert report.diagnose(_graded(name)) == []
        assert report.diagnose(NotebookResult.empty(name, "not submitted", "")) == []


def test_feedback_shows_marks_hints_and_never_grader_code(tmp_path: Path, graded_class: dict) -> None:
    paths = report.feedback(tmp_path, graded_class)
    assert paths == [
        tmp_path / "feedback" / s / spec.ASSIGNMENT / "report.html" for s in sorted(graded_class)
    ]
    pages = {p.parts[-3]: p.read_text() for p in paths}
    ben = pages["ben"]
    assert (
        "Total: 5 / 10" in ben and "adam.ipynb: 0 / 5 (graded)" in ben and "accumulation.ipynb: 5 / 5" in ben
    )
    assert html.escape(spec.ADAM.part("first_step").hint) in ben  # the hint of each failed part
    assert html.escape(spec.ACCUMULATION.part("plain").hint) not in ben  # and none for a passed one
    assert "parameter 0 is off by up to 0.0216" in ben and "checked on cpu" in ben
    assert "Total: 10 / 10" in pages["ada"] and "Hint:" not in pages["ada"]
    assert "Total: 0 / 10" in pages["dev"] and "adam.ipynb was not submitted" in pages["dev"]
    cleo = pages["cleo"]
    assert "autograder" not in cleo and "not shown" in cleo  # the hidden test's line is gone
    assert "&lt;script&gt;x" in cleo and "<script>" not in cleo  # a student's text is escaped
    for student, page in pages.items():
        assert ('id="unconfined"' in page) == (student == "cleo"), student
        assert "autograder.check" not in page and "BEGIN HIDDEN TESTS" not in page


def _csv(path: Path) -> dict[tuple[str, str, str], tuple[int, int]]:
    with path.open() as fh:
        return {
            (r["kind"], r["notebook"], r["item"]): (int(r["students"]), int(r["of"]))
            for r in csv.DictReader(fh)
        }


def test_class_page_counts_scores_mistakes_and_failed_parts(tmp_path: Path, graded_class: dict) -> None:
    page = report.class_page(tmp_path, graded_class, tmp_path / "class" / "class.html")
    rows = _csv(page.with_suffix(".csv"))
    assert rows["score", "adam", "5"] == (2, 3) and rows["score", "adam", "0"] == (1, 3)
    assert rows["score", "accumulation", "5"] == (2, 3) and rows["score", "accumulation", "2"] == (1, 3)
    assert rows["score", "adam", "not submitted"] == (1, 4)
    assert rows["mistake", "adam", "no bias correction"] == (1, 3)
    assert rows["mistake", "accumulation", "gradients zeroed every batch"] == (1, 3)
    made = {key[2]: n for key, (n, _) in rows.items() if key[0] == "mistake"}
    assert sum(made.values()) == 2 and set(made) == {m.label for m in report.MISTAKES}
    assert rows["failed part", "adam", "first_step"] == (1, 3)
    assert rows["failed part", "accumulation", "schedule"] == (1, 3)
    assert rows["failed part", "accumulation", "plain"] == (0, 3)
    text = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    first_failed = re.search(
        r'<table id="parts">.*?<td>(\w+)</td><td>(\w+)</td><td>(\d+) / (\d+)', text, re.S
    )
    assert first_failed.groups()[2:] == ("1", "3")  # most often failed first
    assert 'id="unconfined"' in text and "cleo" in text


def _scratch_course(tmp_path: Path) -> tuple[Path, dict]:
    course = tmp_path / "course"
    shutil.copytree(ROOT / "assignments" / "source", course / "source")
    shutil.copy(ROOT / "assignments" / "nbgrader_config.py", course / "nbgrader_config.py")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=path)  # nbgrader runs `alembic` from the venv
    return course, env


def _nbgrader(args: list[str], course: Path, env: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_export_plugin_writes_the_grades_from_a_real_gradebook(tmp_path: Path) -> None:
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    course, env = _scratch_course(tmp_path)
    _nbgrader(["generate_assignment", spec.ASSIGNMENT, "--force"], course, env)
    marks = {"ada": {"accumulation": 5, "adam": 5}, "ben": {"accumulation": 3, "adam": 1}}
    with (
        warnings.catch_warnings(),
        Gradebook(f"sqlite:///{course / 'gradebook.db'}", "optimizers-course") as gb,
    ):
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush chatter
        for student, per_notebook in marks.items():
            gb.add_student(student)
            gb.add_submission(spec.ASSIGNMENT, student)
            for name, points in per_notebook.items():
                for i, part in enumerate(spec.notebook(name).parts):
                    grade = gb.find_grade(part.grade_id, name, spec.ASSIGNMENT, student)
                    grade.auto_score = 1.0 if i < points else 0.0
        grade = gb.find_grade("test_adam_weight_decay", "adam", spec.ASSIGNMENT, "ben")
        grade.manual_score = 0.5  # as the formgrader would
        gb.add_student("dev")  # enrolled, submitted nothing: not a row
        gb.db.commit()

    out = report.export_csv(course, tmp_path / "out" / "grades.csv")
    expected = ["student_id,accumulation,adam,total,max_score", "ada,5,5,10,10", "ben,3,1.5,4.5,10"]
    assert out.read_text().splitlines() == expected
    _nbgrader(["export", "--exporter=autograder.report.LabCsvExport", "--to=nb.csv"], course, env)
    assert (course / "nb.csv").read_text() == out.read_text()  # the same plugin under nbgrader's own app
