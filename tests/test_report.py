"""The report stage on a small graded class: feedback pages, the class page, the CSV export.

The hidden-check messages below are the judge's real words for the known-wrong answers in
tests/fixtures/solutions.py (copied from a run of autograder.checks.run_checks, seed 1234, CPU; the
course material's answers from the class graded by nbgrader autograde in assignments/).
"""

from __future__ import annotations

import base64
import csv
import html
import re
import warnings
from pathlib import Path

import pytest

from autograder import report, spec
from autograder.results import NotebookResult, PartResult, StudentResult
from tests.fixtures import course

# What graded notebooks record for two known-wrong answers: each failed part's message and the code
# of the mistake its judge named (tests/test_autograder.py checks the judges; here, the pages).
FAILURES = {
    "no_bias_correction": {
        "first_step": (
            "after the first step (lr=0.01), parameter 0 is off by up to 0.0216 (26 of 30 values) compared "
            "with torch.optim.Adam; your first step is 3.16x as long as torch.optim.Adam's",
            "no_bias_correction",
        ),
        "many_steps": (
            "with defaults, after step 1 of 30, parameter 0 is off by up to 0.00216 (26 of 30 values) "
            "compared with torch.optim.Adam",
            "no_bias_correction",
        ),
    },
    "zero_grad_every_batch": {
        "group_gradient": (
            "with 8 batches and accumulation_steps=4 at the step after batch 4 the gradient of parameter "
            "0 is off by up to 0.157 (120 of 120 values) (your gradient is 0.224x the expected one)",
            "zeroed_every_batch",
        ),
    },
}
NOTEBOOK_OF = {"zero_grad_every_batch": "accumulation", "no_bias_correction": "adam"}


def _graded(name: str, failures: dict | None = None, confined: bool = True) -> NotebookResult:
    """A graded notebook whose ``failures`` (part -> message, or (message, mistake code)) lost their
    mark; every other part passed."""
    parts = {}
    for p in spec.notebook(name).parts:
        failure = (failures or {}).get(p.name)
        message, code = failure if isinstance(failure, tuple) else (failure or "", None)
        lost = failure is not None
        hint = (spec.MISTAKES[code].hint if code else p.hint) if lost else ""
        parts[p.name] = PartResult(p.name, p.title, 0.0 if lost else float(p.points), p.points,
                                   "failed" if lost else "passed", message, hint, "cpu", code)  # fmt: skip
    score = sum(p.points for p in parts.values())
    return NotebookResult(name, "graded", score, spec.notebook(name).max_score, parts, [], confined)


def _mistake(key: str, confined: bool = True) -> NotebookResult:
    return _graded(NOTEBOOK_OF[key], FAILURES[key], confined)


@pytest.fixture
def graded_class() -> dict[str, StudentResult]:
    """A correct student, one without bias correction, one zeroing gradients every batch, one who sent nothing."""
    leaky = dict(FAILURES["zero_grad_every_batch"])
    leaky["schedule"] = (
        'your code raised NameError: name "<script>x" is not defined\n'
        '  File "<hidden>", line 3, in <module>\n    autograder.check("accumulation", "schedule")'
    )
    return {
        "ada": StudentResult("ada", {"accumulation": _graded("accumulation"), "adam": _graded("adam")}),
        "ben": StudentResult("ben", {"accumulation": _graded("accumulation"), "adam": _mistake("no_bias_correction")}),
        "cleo": StudentResult("cleo", {"accumulation": _graded("accumulation", leaky, confined=False),
                                       "adam": _graded("adam", confined=False)}),
        "dev": StudentResult("dev", {n: NotebookResult.empty(n, "not submitted", f"{n}.ipynb was not submitted")
                                     for n in spec.NOTEBOOKS}),
    }  # fmt: skip


def test_the_class_page_counts_the_codes_verdicts_carry_not_their_words() -> None:
    assert [m.code for m in report.diagnose(_mistake("no_bias_correction"))] == ["no_bias_correction"]
    assert [m.code for m in report.diagnose(_mistake("zero_grad_every_batch"))] == ["zeroed_every_batch"]
    reworded = _graded("adam", {"first_step": ("words the class page never reads", "eps_inside_sqrt"),
                                "many_steps": ("other words", "eps_inside_sqrt")})  # fmt: skip
    assert [m.label for m in report.diagnose(reworded)] == ["eps inside the square root"]  # counted once
    assert report.diagnose(_graded("adam", {"first_step": "an error with no known mistake"})) == []


def test_correct_and_unsubmitted_notebooks_show_no_mistake() -> None:
    for name in spec.NOTEBOOKS:
        assert report.diagnose(_graded(name)) == []
        assert report.diagnose(NotebookResult.empty(name, "not submitted", "")) == []


def test_feedback_shows_marks_hints_and_never_grader_code(tmp_path: Path, graded_class: dict) -> None:
    paths = report.feedback(tmp_path, graded_class)
    assert paths == [tmp_path / "reports" / "students" / f"{s}.html" for s in sorted(graded_class)]
    assert not (tmp_path / "feedback").exists()  # nbgrader's generate_feedback owns that folder
    pages = {p.stem: p.read_text() for p in paths}
    ben = pages["ben"]
    assert (
        "Total: 8 / 10" in ben and "adam.ipynb: 3 / 5 (graded)" in ben and "accumulation.ipynb: 5 / 5" in ben
    )
    assert html.escape(spec.MISTAKES["no_bias_correction"].hint) in ben  # the named mistake's hint
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
    assert rows["score", "adam", "5"] == (2, 3) and rows["score", "adam", "3"] == (1, 3)
    assert rows["score", "accumulation", "5"] == (2, 3) and rows["score", "accumulation", "3"] == (1, 3)
    assert rows["score", "adam", "not submitted"] == (1, 4)
    assert rows["mistake", "adam", "no bias correction"] == (1, 3)
    assert rows["mistake", "accumulation", "gradients zeroed every batch"] == (1, 3)
    made = {key[2]: n for key, (n, _) in rows.items() if key[0] == "mistake"}
    assert sum(made.values()) == 2 and set(made) == {m.label for m in spec.MISTAKES.values()}
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


def test_export_plugin_writes_the_grades_from_a_real_gradebook(tmp_path: Path) -> None:
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    root = course.scratch(tmp_path)
    course.nbgrader(root, "generate_assignment", spec.ASSIGNMENT, "--force", timeout=300)
    marks = {"ada": {"accumulation": 5, "adam": 5}, "ben": {"accumulation": 3, "adam": 1}}
    with (
        warnings.catch_warnings(),
        Gradebook(f"sqlite:///{root / 'gradebook.db'}", "optimizers-course") as gb,
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

    out = report.export_csv(root, tmp_path / "out" / "grades.csv")
    expected = ["student_id,accumulation,adam,total,max_score", "ada,5,5,10,10", "ben,3,1.5,4.5,10"]
    assert out.read_text().splitlines() == expected
    course.nbgrader(root, "export", "--exporter=autograder.report.LabCsvExport", "--to=nb.csv", timeout=300)
    assert (root / "nb.csv").read_text() == out.read_text()  # the same plugin under nbgrader's own app
