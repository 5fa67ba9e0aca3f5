"""The instructor's whole pipeline, for real: nbgrader release, uploads, grading, reports, CSV.

One run of ``python -m autograder run`` grades a class of eight submissions (a correct one,
an untouched stub, the course material's own answers, classic mistakes, a Colab round trip,
a chaotic notebook and a malformed one) with two workers; the CSV is then checked score by
score, and the reports, gradebook and release are checked too.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import leaks, report, settings, spec
from autograder.repair import grade_id
from autograder.results import load_class
from tests.fixtures import course, solutions
from tests.fixtures.course import answer, released, scaled

pytestmark = pytest.mark.slow

ROOT = course.ROOT
NB = tuple(spec.NOTEBOOKS)

# student id -> (accumulation, adam) marks the CSV must show
EXPECTED = {
    "alice": (5, 5),  # correct
    "bob": (0, 0),  # the released stubs, untouched
    "carol_smith": (5, 5),  # Google Forms uploads; an older stub is superseded
    "dave": (2, 1),  # the course material's own answers (several mistakes each)
    "erin": (4, 4),  # no step for the final partial group; weight decay decoupled as in AdamW
    "frank": (5, 5),  # Colab round trip: metadata stripped, "Copy of ..." names
    "gina": (4, 0),  # duplicated, deleted, flooding, exiting and looping cells; NaN-producing Adam
    "hank": (0, 0),  # invalid JSON; a notebook that kills its kernel
    # Issue 18's table: one mistake each, which costs only the parts about its idea.
    "ivy": (5, 5),  # correct, Adam as a torch.optim.Optimizer subclass
    "jon": (4, 3),  # loss not divided by the group size; no bias correction
    "kim": (3, 3),  # a step after every batch; t counted per parameter
}
# student -> {notebook: {part: mistake code}}: the parts each one loses, and the mistake each names
LOST = {
    "erin": {"accumulation": {"partial_group": "last_group_dropped"}, "adam": {"weight_decay": "decay_decoupled"}},
    "jon": {"accumulation": {"group_gradient": "loss_not_divided"},
            "adam": {"first_step": "no_bias_correction", "many_steps": "no_bias_correction"}},
    "kim": {"accumulation": {"schedule": "step_every_batch", "group_gradient": "step_every_batch"},
            "adam": {"first_step": "t_per_parameter", "many_steps": "t_per_parameter"}},
    "ivy": {"accumulation": {}, "adam": {}},
}  # fmt: skip


def _write(nb: nbformat.NotebookNode, path: Path, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    if mtime:
        os.utime(path, (mtime, mtime))


def _make_uploads(root: Path, folder: Path) -> None:
    good = course.CORRECT
    for name in NB:
        _write(answer(root, name, good[name]), folder / "alice" / f"{name}.ipynb")
        _write(released(root, name), folder / "bob" / f"{name}.ipynb")
        _write(
            answer(
                root,
                name,
                {"accumulation": solutions.MATERIAL_ACCUMULATION, "adam": solutions.MATERIAL_ADAM}[name],
            ),
            folder / "dave" / f"{name}.ipynb",
        )
        _write(course.colab(answer(root, name, good[name])), folder / "frank" / f"Copy of {name}.ipynb")
    # Google Forms names uploads "<file> - <respondent>"; the newer file wins.
    _write(released(root, "accumulation"), folder / "accumulation - Carol Smith.ipynb", 1_700_000_000)
    _write(
        answer(root, "accumulation", good["accumulation"]),
        folder / "Copy of accumulation - Carol Smith.ipynb",
        1_700_000_900,
    )
    _write(answer(root, "adam", good["adam"]), folder / "adam - Carol Smith.ipynb", 1_700_000_500)
    _write(answer(root, "accumulation", solutions.ACCUMULATION_MISTAKES["no_final_partial_step"][0]),
           folder / "erin" / "accumulation.ipynb")  # fmt: skip
    _write(
        answer(root, "adam", solutions.ADAM_MISTAKES["decoupled_weight_decay"][0]),
        folder / "erin" / "adam.ipynb",
    )

    # gina: the correct solution graded, but a buggy copy of it runs after it in her kernel;
    # the last test cell deleted; a cell flooding stdout; sys.exit(); an Adam whose eps default is 0
    # (NaN where a gradient is exactly zero) and an endless loop at the end.
    nb = answer(root, "accumulation", good["accumulation"], after=[
        solutions.ACCUMULATION_MISTAKES["loss_not_scaled"][0],
        "for i in range(200_000):\n    print('spam', i)",
        "import sys\nsys.exit()",
    ])  # fmt: skip
    last_test = spec.ACCUMULATION.parts[-1].grade_id
    nb.cells = [c for c in nb.cells if grade_id(c) != last_test]
    _write(nb, folder / "gina" / "accumulation.ipynb")
    nb = answer(root, "adam", solutions.ADAM.replace("eps=1e-8,", "eps=0.0,"))
    nb.cells.append(nbformat.v4.new_code_cell("while True:\n    pass"))
    _write(nb, folder / "gina" / "adam.ipynb")

    one_mistake = {
        "ivy": (good["accumulation"], solutions.ADAM_SUBCLASS),
        "jon": (
            solutions.ACCUMULATION_MISTAKES["loss_not_scaled"][0],
            solutions.ADAM_MISTAKES["no_bias_correction"][0],
        ),
        "kim": (
            solutions.ACCUMULATION_MISTAKES["step_every_batch"][0],
            solutions.ADAM_MISTAKES["t_per_parameter"][0],
        ),
    }
    for student, answers in one_mistake.items():
        for name, solution in zip(NB, answers):
            _write(answer(root, name, solution), folder / student / f"{name}.ipynb")

    (folder / "hank").mkdir()
    (folder / "hank" / "accumulation.ipynb").write_text('{"cells": [ {"cell_type": "code", ')
    nb = answer(root, "adam", good["adam"])
    nb.cells.append(nbformat.v4.new_code_cell("import os\nos._exit(1)"))
    _write(nb, folder / "hank" / "adam.ipynb")


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = course.scratch(tmp_path_factory.mktemp("lab"))
    course.release(root)  # the uploads start from the real student version
    uploads = root.parent / "uploads"
    uploads.mkdir()
    _make_uploads(root, uploads)
    out = root.parent / "grades.csv"
    # Generous limits, and scaled: a busy CI machine must not cost marks.
    limits = {"--cell-timeout": 60, "--notebook-timeout": 600, "--part-timeout": 60}
    flags = [x for flag, seconds in limits.items() for x in (flag, f"{scaled(seconds):.0f}")]
    proc = course.autograder(
        root, "run", str(uploads), "--csv", str(out), "--workers", "2", *flags, timeout=1800
    )
    return root, out, proc.stdout + proc.stderr


def test_csv_has_every_score(graded: tuple) -> None:
    root, out, log = graded
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["student_id", "accumulation", "adam", "total", "max_score"]
    got = {r["student_id"]: (int(r["accumulation"]), int(r["adam"])) for r in rows}
    assert got == EXPECTED, log[-3000:]
    for r in rows:
        assert int(r["total"]) == sum(EXPECTED[r["student_id"]]) and int(r["max_score"]) == 10


def test_statuses_explain_what_went_wrong(graded: tuple) -> None:
    root, _, _ = graded
    results = load_class(root)
    hank, gina, frank = (results[s].notebooks for s in ("hank", "gina", "frank"))
    assert hank["accumulation"].status == "invalid notebook" and "JSON" in hank["accumulation"].notes[0]
    assert hank["adam"].status == "notebook crashed"
    assert any("restored from the release" in n for n in frank["adam"].notes)
    assert any(spec.ACCUMULATION.parts[-1].grade_id in n for n in gina["accumulation"].notes)
    assert any("also define train_epoch" in n for n in gina["accumulation"].notes)
    assert gina["accumulation"].parts["group_gradient"].status == "visible test failed"
    assert "NaN" in gina["adam"].parts["first_step"].message
    dave = results["dave"].notebooks["accumulation"].parts
    assert dave["schedule"].points == 1 and dave["group_gradient"].status == "failed"
    assert results["dave"].notebooks["adam"].parts["training_loop"].mistake == "used_up_generator"
    assert all(p.device for p in results["alice"].notebooks["adam"].parts.values())
    assert all(r.confined for r in results.values() if r.student_id != "hank")


@pytest.mark.parametrize("student", sorted(LOST))
def test_one_mistake_loses_only_its_parts_and_names_itself(graded: tuple, student: str) -> None:
    """Marks per part, from the gradebook and the graded notebooks, as every report reads them."""
    root, _, _ = graded
    result = load_class(root, [student])[student]
    for name, lost in LOST[student].items():
        parts = result.notebooks[name].parts
        assert {p: r.mistake for p, r in parts.items() if not r.full_marks} == lost, {
            p: r.message for p, r in parts.items()
        }
        for part, code in lost.items():
            assert (
                parts[part].hint == spec.MISTAKES[code].hint
                and spec.MISTAKES[code].label in parts[part].message
            )


def test_graded_notebooks_say_what_each_hidden_check_found(graded: tuple) -> None:
    """The test cells' outputs, which formgrader and nbgrader's feedback show, carry the verdicts."""
    root, _, _ = graded
    path = root / "autograded" / "jon" / spec.ASSIGNMENT / "adam.ipynb"
    outputs = {
        c.metadata["nbgrader"]["grade_id"]: "".join(o.get("text", "") for o in c.outputs)
        for c in nbformat.read(path, as_version=4).cells
        if c.metadata.get("nbgrader", {}).get("grade_id", "").startswith("test_")
    }
    assert "judged by the grader outside this notebook" not in "".join(outputs.values())
    assert (
        f"hidden check adam/training_loop passed: {spec.ADAM.part('training_loop').title}"
        in outputs["test_adam_training_loop"]
    )
    for graded_nb in (root / "autograded").glob(f"*/{spec.ASSIGNMENT}/*.ipynb"):  # no grader paths
        shown = [o for c in nbformat.read(graded_nb, as_version=4).cells for o in c.get("outputs", [])]
        assert str(ROOT) not in str(shown) and sys.prefix not in str(shown), graded_nb
    first = outputs["test_adam_first_step"]
    assert "hidden check adam/first_step failed" in first and "no bias correction" in first
    assert f"Hint: {spec.MISTAKES['no_bias_correction'].hint}" in first


def test_a_regrade_keeps_every_students_inputs_and_messages(graded: tuple) -> None:
    """One seed per student and course: feedback a student already has stays true after a regrade."""
    root, _, _ = graded
    before = {p: r.message for p, r in load_class(root, ["jon"])["jon"].notebooks["adam"].parts.items()}
    course.autograder(
        root, "grade", "jon", "--workers", "1", "--part-timeout", f"{scaled(60):.0f}", timeout=900
    )
    after = {p: r.message for p, r in load_class(root, ["jon"])["jon"].notebooks["adam"].parts.items()}
    assert after == before and "off by up to" in after["first_step"]


def test_feedback_has_hints_and_no_hidden_code(graded: tuple) -> None:
    root, _, _ = graded
    secret = [line.strip() for line in solutions.ACCUMULATION.splitlines() + solutions.ADAM.splitlines()
              if len(line.strip()) > 25]  # fmt: skip
    for student in EXPECTED:
        text = report.student_page(root, student).read_text()
        assert "autograder.check" not in text and "HIDDEN TESTS" not in text
        assert not [line for line in secret if line in text]
    dave = report.student_page(root, "dave").read_text()
    assert "Hint:" in dave and "Total: 3 / 10" in dave
    assert not (root / "feedback").exists()  # nbgrader's generate_feedback owns that folder


def test_gradebook_holds_the_same_scores(graded: tuple) -> None:
    from nbgrader.api import Gradebook

    root, _, _ = graded
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", settings.course_id(root)) as gb:
        for student, (acc, adam) in EXPECTED.items():
            submission = gb.find_submission(spec.ASSIGNMENT, student)
            assert submission.score == acc + adam, student


def test_release_check_catches_leaks(graded: tuple) -> None:
    root, _, _ = graded
    assert leaks.release_problems(root) == []
    path = root / "release" / spec.ASSIGNMENT / "adam.ipynb"
    original = path.read_text()
    try:
        path.write_text(
            original.replace(
                "raise NotImplementedError()",
                "self.t += 1  # once per step, shared by every parameter; t = 1 on the first step",
            )
        )
        problems = leaks.release_problems(root)
        assert any("solution or hidden-test line" in p for p in problems)
        assert any("not a stub" in p for p in problems)
    finally:
        path.write_text(original)


def test_instructor_source_passes_nbgrader_validate(tmp_path: Path) -> None:
    """``nbgrader validate`` on the source notebooks: the hidden cells run their checks live."""
    for name in NB:
        shutil.copy(course.COURSE / "source" / spec.ASSIGNMENT / f"{name}.ipynb", tmp_path)
    proc = course.nbgrader(tmp_path, "validate", *[str(tmp_path / f"{n}.ipynb") for n in NB], timeout=600,
                           check=False, COURSE_FAST="1")  # fmt: skip
    out = proc.stdout + proc.stderr
    assert out.count("Success! Your notebook passes all the tests.") == 2, out[-4000:]
