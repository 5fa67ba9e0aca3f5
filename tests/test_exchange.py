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
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from autograder import spec
from tests.fixtures import solutions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to create Unix users"
    ),
    pytest.mark.skipif(
        shutil.which("useradd") is None or shutil.which("runuser") is None,
        reason="needs useradd and runuser (Debian's passwd and util-linux)",
    ),  # fmt: skip
]

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the environment running the tests
ASSIGNMENT = spec.ASSIGNMENT
COURSE_ID = "optimizers-course"
ANSWERS = {  # which student solves what: one correct, one with known mistakes
    "good": {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM},
    "wrong": {
        "accumulation": solutions.ACCUMULATION_MISTAKES["loss_not_scaled"][0],  # fails 2 of 5
        "adam": solutions.ADAM_MISTAKES["decoupled_weight_decay"][0],  # fails 1 of 5
    },
}
EXPECTED = {"good": (5.0, 5.0), "wrong": (3.0, 4.0)}  # (accumulation, adam)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AUTOGRADER_", "COURSE_FAST", "NBGRADER"))
    }
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT), **extra)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{log[-4000:]}"
    return log


def _hidden_from(path: Path) -> Path | None:
    """The closest folder above ``path`` that other users cannot enter (e.g. /root), if any."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _as_user(user: str, home: Path, argv: list[str], cwd: Path) -> str:
    """``argv`` as the Unix user ``user`` (runuser), with the course's nbgrader on its PATH.

    When the interpreter or the environment lives in a folder students cannot enter (a pyenv
    under /root, a checkout under a private folder), the command runs in a private mount
    namespace where each such folder is an empty tmpfs with only the interpreter and the
    environment bound back in: as on a hub, students can run nbgrader, not read those folders."""
    env = _env(HOME=str(home), USER=user, LOGNAME=user)
    inner = ["runuser", "-u", user, "--", "env", "-C", str(cwd), *[f"{k}={v}" for k, v in env.items()], *argv]
    keep = sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()})
    hidden = {h for h in (_hidden_from(k) for k in keep) if h is not None}
    hidden = sorted(h for h in hidden if not any(o != h and o in h.parents for o in hidden))  # outermost only
    if not hidden:
        return _run(inner, cwd, env)
    with tempfile.TemporaryDirectory(prefix="exchange-mnt-") as mnt:
        saved = [Path(mnt) / str(i) for i in range(len(keep))]
        steps = [f'mkdir -p "{s}" && mount --bind "{k}" "{s}"' for k, s in zip(keep, saved)]
        steps += [f'mount -t tmpfs -o mode=755 tmpfs "{h}"' for h in hidden]
        steps += [f'mkdir -p "{k}" && mount --bind "{s}" "{k}"' for k, s in zip(keep, saved)]
        script = " && ".join(steps) + ' && exec "$@"'
        return _run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *inner], cwd, env
        )


def _solve(folder: Path, answers: dict[str, str]) -> None:
    """Replace the solution cell of each fetched notebook, keeping everything else (and the file's owner)."""
    for name, source in answers.items():
        path = folder / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cells = [
            c
            for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade_id") == spec.notebook(name).solution_id
        ]
        assert len(cells) == 1 and "NotImplementedError" in cells[0].source, (
            f"{path} is not the released stub"
        )
        cells[0].source = source
        with path.open("w") as fh:  # truncate in place: the student still owns the file
            nbformat.write(nb, fh)


@pytest.fixture(scope="module")
def users():
    """Two fresh Unix users with homes other users cannot read; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="exchange-homes-"))
    base.chmod(0o755)
    made: dict[str, tuple[str, Path]] = {}
    try:
        for role in ANSWERS:
            name = f"s{secrets.token_hex(5)}"
            home = base / name
            _run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", name], base)
            home.chmod(0o700)
            made[role] = (name, home)
        yield made
    finally:
        for name, _ in made.values():
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


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
        _run([str(VENV_BIN / "nbgrader"), "generate_assignment", ASSIGNMENT, "--force"], course)
        _run([str(VENV_BIN / "nbgrader"), "release_assignment", ASSIGNMENT, flag, "--force"], course)
        for role, (user, home) in users.items():
            (home / "nbgrader_config.py").write_text(
                f"c = get_config()  # noqa: F821\nc.CourseDirectory.course_id = {COURSE_ID!r}\n"
                f"c.Exchange.root = {str(exchange)!r}\n"
            )
            shutil.chown(home / "nbgrader_config.py", user, user)
            _as_user(user, home, [str(VENV_BIN / "nbgrader"), "fetch_assignment", ASSIGNMENT], home)
            fetched = home / ASSIGNMENT
            assert fetched.is_dir() and fetched.stat().st_uid != 0, (
                f"fetch_assignment did not fetch as {user}"
            )
            _solve(fetched, ANSWERS[role])
            _as_user(user, home, [str(VENV_BIN / "nbgrader"), "submit", ASSIGNMENT], home)
        inbound = exchange / COURSE_ID / "inbound"
        owners = {p.stat().st_uid for p in inbound.iterdir()}
        assert len(owners) == 2 and 0 not in owners, "submissions should belong to the students"
        _run([str(VENV_BIN / "nbgrader"), "collect", ASSIGNMENT, flag], course)
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
    _run([str(VENV_BIN / "nbgrader"), "export", "--to", str(out)], course)
    with out.open() as fh:
        return {
            r["student_id"]: float(r["score"]) for r in csv.DictReader(fh) if r["assignment"] == ASSIGNMENT
        }


def _autograder_export(course: Path) -> dict[str, tuple[float, ...]]:
    """{student: (marks per notebook..., total)} from ``python -m autograder export --csv``."""
    out = course / "autograder-grades.csv"
    _run([sys.executable, "-m", "autograder", "--course", str(course), "export", "--csv", str(out)], ROOT)
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
        _run([str(VENV_BIN / "nbgrader"), "autograde", ASSIGNMENT, "--student", user, "--force"], course)
    return course


def test_formgrader_autograde_scores_in_both_exports(formgrader_graded: Path, users) -> None:
    assert _nbgrader_export(formgrader_graded) == _totals(_expected(users))
    assert _autograder_export(formgrader_graded) == _expected(users)


def test_cli_grade_gives_the_same_scores_as_formgrader(
    collected: Path, formgrader_graded: Path, users, tmp_path_factory: pytest.TempPathFactory
) -> None:
    course = _copy(collected, tmp_path_factory.mktemp("cli") / "assignments")
    _run([sys.executable, "-m", "autograder", "--course", str(course), "grade"], ROOT, timeout=1200)
    assert _nbgrader_export(course) == _nbgrader_export(formgrader_graded) == _totals(_expected(users))
    assert _autograder_export(course) == _autograder_export(formgrader_graded) == _expected(users)
