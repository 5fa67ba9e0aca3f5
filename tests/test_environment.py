"""The grader refuses an environment in which graded notebooks cannot import the course (issue 20).

An editable install of ``course_utils`` that points at another checkout, and a missing MNIST cache,
would fail every graded notebook's setup cell and give every student 0. Both ``python -m autograder
grade`` and nbgrader's own ``autograde`` (what formgrader's button runs) must stop before grading
anyone, name the cause and the fix, and write no score. A course setup cell that still fails while
a notebook runs is the grader's error, not the student's 0. Plots drawn by a graded notebook stay in it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from autograder import environment, spec
from autograder.jail import JailedKernelManager
from tests.fixtures import course

pytestmark = pytest.mark.slow
ROOT = course.ROOT
STUDENT = "ada"


def _written_scores(root: Path, student: str) -> list[float]:
    """Every auto_score nbgrader's gradebook holds for ``student`` (None: never written)."""
    from nbgrader.api import Gradebook, MissingEntry

    if not (root / "gradebook.db").exists():
        return []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "optimizers-course") as gb:
        scores = []
        for name in spec.NOTEBOOKS:
            try:
                notebook = gb.find_submission_notebook(name, spec.ASSIGNMENT, student)
            except MissingEntry:
                continue
            scores += [g.auto_score for g in notebook.grades if g.auto_score is not None]
    return scores


@pytest.fixture(scope="module")
def other_checkout_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python environment whose course_utils is an editable install of a second clone of the course.

    It is a fresh venv that sees this environment's packages, plus the path entry that ``pip install -e``
    writes into site-packages (``__editable__.*.pth``), pointing at the other checkout."""
    base = tmp_path_factory.mktemp("second-clone")
    other = base / "optimizers-course"
    shutil.copytree(
        ROOT / "course_utils", other / "course_utils", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", other)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "env")], check=True)
    python = base / "env" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]  # torch, nbgrader, ...: this environment's packages
    (Path(purelib) / "shared-packages.pth").write_text(f"{ours}\n")
    (Path(purelib) / "__editable__.optimizers_course-0.1.0.pth").write_text(f"{other}\n")
    found = subprocess.run([str(python), "-I", "-c", "import course_utils; print(course_utils.__file__)"],
                           capture_output=True, text=True, cwd="/").stdout  # fmt: skip
    assert found.startswith(str(other)), found
    return python


def test_an_editable_install_of_another_checkout_stops_every_entry_point(
    other_checkout_env: Path, tmp_path: Path
) -> None:
    root = course.collected(tmp_path, {STUDENT: course.CORRECT})
    grade = subprocess.run([str(other_checkout_env), "-m", "autograder", "--course", str(root), "grade",
                            "--workers", "1"], cwd=ROOT, env=course.env(), capture_output=True, text=True,
                           timeout=course.scaled(600))  # fmt: skip
    out = grade.stdout + grade.stderr
    assert grade.returncode == 2, out[-3000:]
    other = other_checkout_env.parents[2] / "optimizers-course" / "course_utils"
    assert f"the environment's course_utils is {other}, which the jail does not show" in out, out[-3000:]
    assert f"pip install -e {ROOT}" in out  # the fix
    assert _written_scores(root, STUDENT) == []

    # nbgrader's own autograde (formgrader's button) stops at the same check, before any mark.
    nbgrader = subprocess.run([str(other_checkout_env), "-m", "nbgrader", "autograde", spec.ASSIGNMENT, "--student",
                               STUDENT, "--force"], cwd=root, env=course.env(), capture_output=True, text=True,
                              timeout=course.scaled(600))  # fmt: skip
    log = nbgrader.stdout + nbgrader.stderr
    assert nbgrader.returncode != 0, log[-3000:]
    assert f"the environment's course_utils is {other}" in log, log[-3000:]
    assert _written_scores(root, STUDENT) == []


def test_a_missing_mnist_cache_stops_grading_and_names_the_fix(tmp_path: Path) -> None:
    root = course.collected(tmp_path, {STUDENT: course.CORRECT})
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    grade = course.autograder(root, "grade", "--workers", "1", check=False, COURSE_DATA_DIR=str(empty))
    out = grade.stdout + grade.stderr
    assert grade.returncode == 2, out[-3000:]
    assert f"MNIST cannot be read from {empty}" in out and "course_utils.data fetch" in out, out[-3000:]
    assert _written_scores(root, STUDENT) == []
    nbgrader = course.nbgrader(root, "autograde", spec.ASSIGNMENT, "--student", STUDENT, "--force", check=False,
                               COURSE_DATA_DIR=str(empty))  # fmt: skip
    assert (
        nbgrader.returncode != 0 and f"MNIST cannot be read from {empty}" in nbgrader.stdout + nbgrader.stderr
    )
    assert _written_scores(root, STUDENT) == []


def _released_with_error(cell_id: str, before: str | None = None) -> nbformat.NotebookNode:
    nb = course.source("adam")
    index = course.cell_index(nb, cell_id)
    nb.cells[index].outputs = [
        nbformat.v4.new_output(
            "error", ename="ModuleNotFoundError", evalue="No module named 'course_utils'", traceback=[]
        )
    ]
    if before is not None:  # a cell the student added above it
        nb.cells.insert(index, nbformat.v4.new_code_cell(before))
    return nb


def test_a_failed_course_setup_cell_is_the_graders_error_not_a_zero() -> None:
    check = environment.CheckSetupCells()
    resources = {"nbgrader": {"notebook": "adam"}}
    for cell_id in ("adam_setup", "adam_imports"):
        with pytest.raises(environment.EnvironmentProblem, match=f"'{cell_id}'.*not the student's answer"):
            check.preprocess(_released_with_error(cell_id), resources)
    # After student code has run, a failure may be the student's doing: graded as usual.
    check.preprocess(
        _released_with_error("adam_imports", before="import sys; sys.modules['torch'] = None"), resources
    )
    check.preprocess(_released_with_error("adam_solution"), resources)


def test_plots_in_a_jailed_kernel_stay_in_the_notebook(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()")]
    )
    NotebookClient(nb, kernel_manager_class=JailedKernelManager, timeout=course.scaled(120)).execute()
    kinds = [key for out in nb.cells[0].outputs for key in out.get("data", {})]
    assert "image/png" in kinds, nb.cells[0].outputs
