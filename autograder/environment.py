"""Is this environment fit to grade? One check, run by every entry point before the first submission.

Graded notebooks run in a jail that shows the environment, ``course_utils`` and MNIST and
nothing else. When the environment's ``course_utils`` is another checkout (an editable
install from a second clone, a moved folder, a shared conda environment), or MNIST is not
cached, every setup cell fails in the jail and every student would get 0. So before
grading anyone:

* outside the jail: the environment's own ``course_utils`` (what a fresh Python imports,
  without this checkout on its path) must be this checkout's;
* inside the jail, exactly as a graded kernel starts: ``course_utils`` imports from this
  checkout, ``torch`` imports, and the MNIST files are there and intact;
* on a Dask cluster: the scheduler and every worker import ``autograder`` (the scheduler
  unpickles the task graph), and each worker passes the two checks above.

When a check fails, grading stops with :class:`EnvironmentProblem`, whose message names the
cause and the fix, and no score is written. Where the checks run: ``python -m autograder``
(:func:`check_cluster` in :func:`autograder.grade.grade_class`), and nbgrader's own
``autograde`` (formgrader's button too) through :class:`CheckEnvironment`, the first
autograde preprocessor. :class:`CheckSetupCells` makes a course setup cell that still fails
while a notebook runs a grader error, not a 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor

from autograder import settings
from autograder.jail import JailUnavailable

COURSE_UTILS = settings.REPO_ROOT / "course_utils"  # the grader's own checkout of the course package
INSTALL = f"`{sys.executable} -m pip install -e {settings.REPO_ROOT}` (or `make setup` in that folder)"
FETCH = f"`{sys.executable} -m course_utils.data fetch` (or `make data`) as the account that grades"
PYTHONPATH_FIX = (
    "start the scheduler and every worker from the repository with the grader on their path: "
    "`cd /path/to/the/repository && PYTHONPATH=$PWD dask scheduler` and "
    "`cd /path/to/the/repository && PYTHONPATH=$PWD dask worker tcp://HOST:8786 --nthreads 1` "
    "(assignments/INSTRUCTOR.md, Grading at scale)"
)

# Runs in the jail the way a graded kernel starts: no PYTHONPATH, the scratch folder as cwd.
_PROBE = """\
import json
out = {}
try:
    import course_utils
    out["course_utils"] = course_utils.__file__
    import torch
    out["torch"] = torch.__version__
    from course_utils.data import verify_mnist
    out["mnist"] = str(verify_mnist())
except BaseException as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


class EnvironmentProblem(JailUnavailable):
    """This environment cannot grade fairly; the message names the cause and the fix."""


def environment_course_utils() -> Path | None:
    """The ``course_utils`` folder this environment's Python imports on its own (isolated mode, cwd /)."""
    code = "import importlib.util as u; s = u.find_spec('course_utils'); print(s.origin if s else '')"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd="/", capture_output=True, text=True, timeout=60
    )
    origin = proc.stdout.strip()
    return Path(origin).resolve().parent if proc.returncode == 0 and origin else None


def _outside() -> None:
    found = environment_course_utils()
    if found is None:
        raise EnvironmentProblem(
            f"the environment ({sys.prefix}) has no course_utils, so no graded notebook can import the course. "
            f"Fix: install this checkout into it: {INSTALL}."
        )
    if found != COURSE_UTILS.resolve():
        raise EnvironmentProblem(
            f"the environment's course_utils is {found}, which the jail does not show: graded notebooks "
            f"must import the grader's own checkout, {COURSE_UTILS}. Every setup cell would fail and every "
            f"student get 0. Fix: install this checkout into the environment: {INSTALL}."
        )


def _inside(confined: bool) -> None:
    from autograder.jail import Jail, new_scratch

    jail = Jail(new_scratch("environment"), confined=confined)
    try:
        proc = subprocess.run(jail.command([sys.executable, "-c", _PROBE]), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    finally:
        jail.close()
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise EnvironmentProblem(
            f"a jailed Python could not start (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        ) from None
    where = "inside the jail" if confined else "in a fresh process (unconfined)"
    error = found.get("error", "")
    if "course_utils" not in found:
        raise EnvironmentProblem(
            f"{where}, course_utils does not import ({error}), so every graded notebook's setup cell would "
            f"fail. Fix: install this checkout into the environment: {INSTALL}."
        )
    if Path(found["course_utils"]).resolve().parent != COURSE_UTILS.resolve():
        raise EnvironmentProblem(
            f"{where}, course_utils comes from {Path(found['course_utils']).parent}, not from the grader's "
            f"checkout {COURSE_UTILS}. Fix: {INSTALL}."
        )
    if "torch" not in found:
        raise EnvironmentProblem(f"{where}, torch does not import ({error}). Fix: {INSTALL}.")
    if "mnist" not in found:
        raise EnvironmentProblem(
            f"{where}, MNIST cannot be read from {settings.data_dir()} ({error}). Fix: {FETCH}."
        )


_passed: set[bool] = set()
_lock = threading.Lock()


def check(confined: bool = True) -> None:
    """Raise :class:`EnvironmentProblem` unless graded notebooks can import the course here.

    A pass is remembered for the life of the process (formgrader's server, a Dask worker); a
    failure is not, so the instructor can fix the environment and press Autograde again."""
    with _lock:
        if confined in _passed:
            return
        _outside()
        _inside(confined)
        _passed.add(confined)


def worker_problem(confined: bool) -> str:
    """:func:`check` on a Dask worker: '' or the problem, as text (exceptions need not cross the wire)."""
    try:
        check(confined)
    except JailUnavailable as exc:
        return str(exc)
    return ""


def check_cluster(client, confined: bool) -> None:
    """The scheduler and every worker import ``autograder``, and every worker passes :func:`check`."""

    def imports() -> str:  # sent by value: it must run where autograder does not import
        import importlib.util
        import socket

        spec = importlib.util.find_spec("autograder")
        return spec.origin if spec and spec.origin else f"missing on {socket.gethostname()}"

    problems = []
    on_scheduler = client.run_on_scheduler(imports)
    if on_scheduler.startswith("missing"):
        problems.append(
            f"the scheduler cannot import autograder ({on_scheduler}), so it cannot unpickle a task"
        )
    workers = client.run(imports, on_error="return")
    if not workers:
        problems.append(f"the scheduler {client.scheduler.address} has no workers")
    for address, origin in sorted(workers.items()):
        if not isinstance(origin, str) or origin.startswith("missing"):
            problems.append(f"the worker {address} cannot import autograder ({origin})")
    if problems:
        raise EnvironmentProblem("; ".join(problems) + f". Fix: {PYTHONPATH_FIX}.")
    for address, problem in sorted(client.run(worker_problem, confined).items()):
        if problem:
            problems.append(f"the worker {address}: {problem}")
    if problems:
        raise EnvironmentProblem("; ".join(problems))


def _confined(config) -> bool:
    return not settings.Options.from_config(config).unconfined


class CheckEnvironment(NbGraderPreprocessor):
    """First of the autograde preprocessors: no grading, and no score, in an environment that cannot grade."""

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict) -> tuple:
        check(_confined(self.config))
        return nb, resources


class CheckSetupCells(NbGraderPreprocessor):
    """After execution: a course cell that runs before any student cell and failed is the grader's error.

    Such a cell (the setup cell, the imports) is locked and restored from the release, and no
    student code ran before it, so its failure says the environment is broken, not the
    answer: grading this notebook stops, and no mark is written."""

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict) -> tuple:
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if not meta.get("locked") or meta.get("solution") or meta.get("grade"):
                return nb, resources  # student code runs from here on
            error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
            if error is not None:
                name = resources.get("nbgrader", {}).get("notebook", "the notebook")
                raise EnvironmentProblem(
                    f"{name}: the course's cell {meta.get('grade_id')!r}, which runs before any student code, "
                    f"failed in the jail ({error.get('ename')}: {str(error.get('evalue'))[:300]}). That is the "
                    f"grader's environment, not the student's answer: no mark was written. Check the "
                    f"environment (course_utils from {COURSE_UTILS}, torch, MNIST in {settings.data_dir()})."
                )
        return nb, resources
