"""Grading many submissions: nbgrader's autograde on Dask workers, results written by the coordinator.

Each submission is one task. The task receives bytes only (the student's notebooks and
the few course files nbgrader needs: config, gradebook, release), builds a private course
in the worker's scratch folder, runs nbgrader's own ``autograde`` there (so exactly the
steps formgrader's Autograde button runs, jail included) and returns the graded
notebooks and their scores. Only this process, the coordinator, writes the course's
``autograded/`` folder and ``gradebook.db``. No shared file system is needed, so the
workers may be other machines: ``--scheduler tcp://HOST:8786`` (or
``DASK_SCHEDULER_ADDRESS``) grades on an existing Dask cluster; without it a
``LocalCluster`` with ``--workers`` processes is started here.

Workers stay warm: torch and nbgrader are imported once per worker, and the references of
the hidden checks are computed once per seed (one seed per grading run) and cached.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from autograder import settings, spec
from autograder.results import crash_file, gradebook_marks


@dataclass
class Task:
    """Everything a worker needs to grade one submission, as bytes."""

    student: str
    notebooks: dict[str, bytes]  # notebook name -> the submitted file (already checked to be a notebook)
    timestamp: str | None
    options: settings.Options  # limits, device, seed, unconfined: merged over the course's nbgrader_config.py


@dataclass
class Outcome:
    """What a worker hands back: graded notebooks and the marks nbgrader recorded for them."""

    student: str
    graded: dict[str, bytes] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # notebook -> grade_id -> marks
    error: str = ""
    seconds: float = 0.0


def course_files(root: Path) -> dict[str, bytes]:
    """The course files a worker's private copy needs (never the students' submissions)."""
    root = Path(root)
    files = {
        "nbgrader_config.py": (root / "nbgrader_config.py").read_bytes(),
        "gradebook.db": (root / "gradebook.db").read_bytes(),
    }
    for path in (root / "release" / spec.ASSIGNMENT).glob("*.ipynb"):
        files[str(path.relative_to(root))] = path.read_bytes()
    return files


def grade_submission(task: Task, course: dict[str, bytes]) -> Outcome:
    """Autograde one submission in a private course copy (runs on a worker)."""
    from nbgrader.apps import NbGraderAPI
    from sqlalchemy.exc import SAWarning

    warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's own autoflush chatter
    started = time.monotonic()
    outcome = Outcome(task.student)
    with tempfile.TemporaryDirectory(prefix="autograder-course-", dir=settings.scratch_root()) as tmp:
        root = Path(tmp)
        for rel, data in course.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        submitted = root / "submitted" / task.student / spec.ASSIGNMENT
        submitted.mkdir(parents=True)
        for name, data in task.notebooks.items():
            (submitted / f"{name}.ipynb").write_bytes(data)
        if task.timestamp:
            (submitted / "timestamp.txt").write_text(task.timestamp)
        api = NbGraderAPI(config=settings.course_config(root, task.options))  # this task's limits and seed
        api.log.setLevel(logging.WARNING)
        result = api.autograde(spec.ASSIGNMENT, task.student, force=True, create=True)
        if not result.get("success"):
            outcome.error = (result.get("error") or result.get("log") or "nbgrader autograde failed")[-3000:]
        graded = root / "autograded" / task.student / spec.ASSIGNMENT
        for name in task.notebooks:
            path = graded / f"{name}.ipynb"
            if path.exists():
                outcome.graded[name] = path.read_bytes()
        for (name, grade_id), marks in gradebook_marks(root, task.student, "auto_score").items():
            outcome.scores.setdefault(name, {})[grade_id] = marks
    outcome.seconds = round(time.monotonic() - started, 2)
    return outcome


# ----------------------------------------------------------------------------- the coordinator


def make_task(root: Path, student: str, options: settings.Options) -> Task:
    """The task for one collected student: their valid notebooks (unreadable ones stay out)."""
    from autograder.repair import InvalidNotebook, load_notebook

    folder = Path(root) / "submitted" / student / spec.ASSIGNMENT
    notebooks = {}
    for name in spec.NOTEBOOKS:
        path = folder / f"{name}.ipynb"
        if path.exists():
            try:
                load_notebook(path)
            except InvalidNotebook:
                continue  # reported as "invalid notebook" from the submitted file itself
            notebooks[name] = path.read_bytes()
    stamp = folder / "timestamp.txt"
    return Task(student, notebooks, stamp.read_text().strip() if stamp.exists() else None, options)


def record(root: Path, outcome: Outcome, timestamp: str | None) -> None:
    """Write a worker's outcome into the course: graded notebooks, then marks in the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    dest = Path(root) / "autograded" / outcome.student / spec.ASSIGNMENT
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in outcome.graded.items():
        tmp = dest / f".{name}.ipynb.tmp"
        tmp.write_bytes(data)
        tmp.replace(dest / f"{name}.ipynb")
    for name in spec.NOTEBOOKS:  # a notebook that is no longer gradable keeps no stale graded copy
        if name not in outcome.graded:
            (dest / f"{name}.ipynb").unlink(missing_ok=True)
    with Gradebook(f"sqlite:///{Path(root) / 'gradebook.db'}", settings.course_id(Path(root))) as gb:
        gb.update_or_create_student(outcome.student)
        kwargs = {"timestamp": timestamp} if timestamp else {}
        gb.update_or_create_submission(spec.ASSIGNMENT, outcome.student, **kwargs)
        for name in spec.NOTEBOOKS:
            for part in spec.notebook(name).parts:
                try:
                    grade = gb.find_grade(part.grade_id, name, spec.ASSIGNMENT, outcome.student)
                except MissingEntry:
                    continue
                grade.auto_score = outcome.scores.get(name, {}).get(part.grade_id, 0.0)
                grade.needs_manual_grade = False
        gb.db.commit()


def _client(workers: int, scheduler: str | None):  # noqa: ANN202 - a dask.distributed Client
    import dask
    from dask.distributed import Client, LocalCluster

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return Client(address, timeout=30)
    # A task whose worker dies is retried once on another; a second death marks it crashed.
    dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.worker.daemon": False})
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           local_directory=str(settings.scratch_root()))  # fmt: skip
    return Client(cluster)


def grade_class(root: Path, students: list[str], *, options: settings.Options | None = None, workers: int = 2,
                scheduler: str | None = None, progress: bool = True) -> dict[str, str]:  # fmt: skip
    """Grade ``students`` on a Dask cluster and record every outcome here; {student: problem} for failures."""
    from dask.distributed import as_completed
    from distributed.scheduler import KilledWorker
    from tqdm.auto import tqdm

    root = Path(root)
    if options is None:  # what the course's nbgrader_config.py sets (c.Grading), as formgrader would grade
        options = settings.Options.from_config(settings.course_config(root))
    options = options.with_seed()  # one seed for the whole run: references computed once per worker
    tasks = {s: make_task(root, s, options) for s in students}
    for student in [s for s, task in tasks.items() if not task.notebooks]:  # nothing gradable: 0, no worker
        record(root, Outcome(student), tasks.pop(student).timestamp)
    problems: dict[str, str] = {}
    with _client(workers, scheduler) as client:
        course = client.scatter(course_files(root), broadcast=True)
        futures = {client.submit(grade_submission, task, course, key=f"grade-{s}-{time.time_ns()}", pure=False): s
                   for s, task in tasks.items()}  # fmt: skip
        for future in tqdm(
            as_completed(futures), total=len(futures), desc="grading", unit="student", disable=not progress
        ):
            student = futures[future]
            try:
                outcome = future.result()
            except KilledWorker:  # 0 marks, and the reason where the reports find it
                record(root, Outcome(student), None)
                crash_file(root, student).write_text(
                    "the submission ended its grading worker twice; it gets no marks"
                )
                problems[student] = "crashed (killed its worker twice)"
                continue
            except Exception as exc:  # a grader bug: this student's earlier results stay as they were
                problems[student] = f"grader error: {type(exc).__name__}: {exc}"
                continue
            if outcome.error and not outcome.graded:  # nothing written: nothing lost
                problems[student] = outcome.error.strip().splitlines()[-1][:300]
                continue
            record(root, outcome, tasks[student].timestamp)
            crash_file(root, student).unlink(missing_ok=True)
    return problems
