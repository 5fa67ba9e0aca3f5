"""nbgrader's exchange for real: two Unix users fetch, solve and submit the lab; the instructor
collects and grades it both ways, and every export shows the same scores.

As on JupyterHub: the instructor (root) runs ``nbgrader release_assignment``; each student,
as their own Unix user with their own HOME and ``nbgrader_config.py``, runs
``nbgrader fetch_assignment``, edits the fetched notebooks' solution cells and runs
``nbgrader submit``; the instructor runs ``nbgrader collect``. The collected course is then
graded twice, in two copies: by ``nbgrader autograde --student S --force`` (what
formgrader's Autograde button runs) and by ``python -m autograder grade``; ``nbgrader
export`` and ``python -m autograder export --csv`` must agree, copy for copy.

Needs root and ``useradd`` (CI has both); the users get random names and are removed
afterwards.
"""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from autograder import spec
from tests.fixtures import solutions, unix_users
from tests.fixtures.course import solve_fetched

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unix_users.MISSING, reason=unix_users.WHY_MISSING)]

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = unix_users.VENV_BIN
ASSIGNMENT = spec.ASSIGNMENT
COURSE_ID = "optimizers-course"
ANSWERS = {  # which student solves what: one correct, one with known mistakes
    "good": {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM},
    "wrong": {
        "accumulation": solutions.ACCUMULATION_MISTAKES["loss_not_scaled"][0],  # fails 1 of 5
        "adam": solutions.ADAM_MISTAKES["decoupled_weight_decay"][0],  # fails 1 of 5
    },
}
EXPECTED = {"good": (5.0, 5.0), "wrong": (4.0, 4.0)}  # (accumulation, adam)


@pytest.fixture(scope="module")
def users():
    """Two fresh Unix users with homes other users cannot read; removed afterwards."""
    with unix_users.unix_users(list(ANSWERS)) as made:
        yield made


@pytest.fixture(scope="module")
def collected(users, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A course after release, fetch, solve, submit (as each user) and collect."""
    base = tmp_path_factory.mktemp("exchange")
    course = base / "assignments"
    course.mkdir()
    shutil.copy(ROOT / "assignments" / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "assignments" / "source", course / "source")
    exchange = Path(
        tempfile.mkdtemp(prefix="exchange-root-")
    )  # students must reach it: not under pytest's 0700 tmp
    exchange.chmod(0o777)  # as nbgrader's docs set up /srv/nbgrader/exchange
    try:
        flag = f"--Exchange.root={exchange}"
        unix_users.run([str(VENV_BIN / "nbgrader"), "generate_assignment", ASSIGNMENT, "--force"], course)
        unix_users.run(
            [str(VENV_BIN / "nbgrader"), "release_assignment", ASSIGNMENT, flag, "--force"], course
        )
        for role, (user, home) in users.items():
            (home / "nbgrader_config.py").write_text(
                f"c = get_config()  # noqa: F821\nc.CourseDirectory.course_id = {COURSE_ID!r}\n"
                f"c.Exchange.root = {str(exchange)!r}\n"
            )
            shutil.chown(home / "nbgrader_config.py", user, user)
            unix_users.as_user(user, home, [str(VENV_BIN / "nbgrader"), "fetch_assignment", ASSIGNMENT], home)
            fetched = home / ASSIGNMENT
            assert fetched.is_dir() and fetched.stat().st_uid != 0, (
                f"fetch_assignment did not fetch as {user}"
            )
            solve_fetched(fetched, ANSWERS[role])
            unix_users.as_user(user, home, [str(VENV_BIN / "nbgrader"), "submit", ASSIGNMENT], home)
        inbound = exchange / COURSE_ID / "inbound"
        owners = {p.stat().st_uid for p in inbound.iterdir()}
        assert len(owners) == 2 and 0 not in owners, "submissions should belong to the students"
        unix_users.run([str(VENV_BIN / "nbgrader"), "collect", ASSIGNMENT, flag], course)
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
    for role, (user, _) in users.items():
        for name in spec.NOTEBOOKS:
            assert (course / "submitted" / user / ASSIGNMENT / f"{name}.ipynb").exists(), (role, user, name)
    return course


def _copy(course: Path, to: Path) -> Path:
    shutil.copytree(course, to, symlinks=True)
    return to


def _nbgrader_export(course: Path) -> dict[str, float]:
    out = course / "nbgrader-grades.csv"
    unix_users.run([str(VENV_BIN / "nbgrader"), "export", "--to", str(out)], course)
    with out.open() as fh:
        return {
            r["student_id"]: float(r["score"]) for r in csv.DictReader(fh) if r["assignment"] == ASSIGNMENT
        }


def _autograder_export(course: Path) -> dict[str, tuple[float, ...]]:
    """{student: (marks per notebook..., total)} from ``python -m autograder export --csv``."""
    out = course / "autograder-grades.csv"
    unix_users.run(
        [sys.executable, "-m", "autograder", "--course", str(course), "export", "--csv", str(out)], ROOT
    )
    with out.open() as fh:
        return {
            r["student_id"]: tuple(float(r[c]) for c in (*spec.NOTEBOOKS, "total"))
            for r in csv.DictReader(fh)
        }


def _expected(users) -> dict[str, tuple[float, ...]]:
    return {users[role][0]: (*marks, sum(marks)) for role, marks in EXPECTED.items()}


def _totals(expected: dict[str, tuple[float, ...]]) -> dict[str, float]:
    return {student: marks[-1] for student, marks in expected.items()}


@pytest.fixture(scope="module")
def formgrader_graded(collected: Path, users, tmp_path_factory: pytest.TempPathFactory) -> Path:
    course = _copy(collected, tmp_path_factory.mktemp("formgrader") / "assignments")
    for user, _ in users.values():  # what formgrader's Autograde button runs, one student at a time
        unix_users.run(
            [str(VENV_BIN / "nbgrader"), "autograde", ASSIGNMENT, "--student", user, "--force"], course
        )
    return course


def test_formgrader_autograde_scores_in_both_exports(formgrader_graded: Path, users) -> None:
    assert _nbgrader_export(formgrader_graded) == _totals(_expected(users))
    assert _autograder_export(formgrader_graded) == _expected(users)


def test_cli_grade_gives_the_same_scores_as_formgrader(
    collected: Path, formgrader_graded: Path, users, tmp_path_factory: pytest.TempPathFactory
) -> None:
    course = _copy(collected, tmp_path_factory.mktemp("cli") / "assignments")
    unix_users.run([sys.executable, "-m", "autograder", "--course", str(course), "grade"], ROOT, timeout=1200)
    assert _nbgrader_export(course) == _nbgrader_export(formgrader_graded) == _totals(_expected(users))
    assert _autograder_export(course) == _autograder_export(formgrader_graded) == _expected(users)
