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

import shutil
import tempfile
from pathlib import Path

import pytest

from autograder import spec
from tests.fixtures import course, solutions, unix_users

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unix_users.MISSING, reason=unix_users.WHY_MISSING)]

VENV_BIN = unix_users.VENV_BIN
ASSIGNMENT = spec.ASSIGNMENT
COURSE_ID = "optimizers-course"
ANSWERS = {  # which student solves what: one correct, one with known mistakes
    "good": course.CORRECT,
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
    root = course.scratch(tmp_path_factory.mktemp("exchange"))
    exchange = Path(
        tempfile.mkdtemp(prefix="exchange-root-")
    )  # students must reach it: not under pytest's 0700 tmp
    exchange.chmod(0o777)  # as nbgrader's docs set up /srv/nbgrader/exchange
    try:
        flag = f"--Exchange.root={exchange}"
        course.nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
        course.nbgrader(root, "release_assignment", ASSIGNMENT, flag, "--force")
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
            course.solve_fetched(fetched, ANSWERS[role])
            unix_users.as_user(user, home, [str(VENV_BIN / "nbgrader"), "submit", ASSIGNMENT], home)
        inbound = exchange / COURSE_ID / "inbound"
        owners = {p.stat().st_uid for p in inbound.iterdir()}
        assert len(owners) == 2 and 0 not in owners, "submissions should belong to the students"
        course.nbgrader(root, "collect", ASSIGNMENT, flag)
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
    for role, (user, _) in users.items():
        for name in spec.NOTEBOOKS:
            assert (root / "submitted" / user / ASSIGNMENT / f"{name}.ipynb").exists(), (role, user, name)
    return root


def _copy(root: Path, to: Path) -> Path:
    shutil.copytree(root, to, symlinks=True)
    return to


def _autograder_export(root: Path) -> dict[str, tuple[float, ...]]:
    """{student: (marks per notebook..., total)} from ``python -m autograder export --csv``."""
    rows = course.autograder_export(root)
    return {student: tuple(row[c] for c in (*spec.NOTEBOOKS, "total")) for student, row in rows.items()}


def _expected(users) -> dict[str, tuple[float, ...]]:
    return {users[role][0]: (*marks, sum(marks)) for role, marks in EXPECTED.items()}


def _totals(expected: dict[str, tuple[float, ...]]) -> dict[str, float]:
    return {student: marks[-1] for student, marks in expected.items()}


@pytest.fixture(scope="module")
def formgrader_graded(collected: Path, users, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _copy(collected, tmp_path_factory.mktemp("formgrader") / "assignments")
    for user, _ in users.values():  # what formgrader's Autograde button runs, one student at a time
        course.nbgrader(root, "autograde", ASSIGNMENT, "--student", user, "--force")
    return root


def test_formgrader_autograde_scores_in_both_exports(formgrader_graded: Path, users) -> None:
    assert course.nbgrader_export(formgrader_graded) == _totals(_expected(users))
    assert _autograder_export(formgrader_graded) == _expected(users)


def test_cli_grade_gives_the_same_scores_as_formgrader(
    collected: Path, formgrader_graded: Path, users, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = _copy(collected, tmp_path_factory.mktemp("cli") / "assignments")
    course.autograder(root, "grade", timeout=1200)
    assert (
        course.nbgrader_export(root) == course.nbgrader_export(formgrader_graded) == _totals(_expected(users))
    )
    assert _autograder_export(root) == _autograder_export(formgrader_graded) == _expected(users)
