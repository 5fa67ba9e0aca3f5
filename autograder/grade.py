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
from dataclasses import dataclass, field, replace
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
    scratch = settings.scratch_root(task.options)
    with tempfile.TemporaryDirectory(prefix="autograder-course-", dir=scratch) as tmp:
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
    import nbformat

    from autograder.repair import InvalidNotebook, load_notebook

    folder = Path(root) / "submitted" / student / spec.ASSIGNMENT
    notebooks = {}
    for name in spec.NOTEBOOKS:
        path = folder / f"{name}.ipynb"
        if path.exists():
            try:  # the worker gets the clean notebook read here (bounded, plain data), never the raw file
                notebooks[name] = nbformat.writes(load_notebook(path)).encode()
            except (InvalidNotebook, OSError):
                continue  # reported as "invalid notebook" from the submitted file itself
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


def _scheduler(scheduler: str | None) -> str | None:
    """The address of the Dask scheduler to grade on (``--scheduler`` or ``$DASK_SCHEDULER_ADDRESS``, as
    Dask itself reads it); None: a local cluster of our own."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")


def _client(workers: int, scheduler: str | None, scratch: Path):
    import dask
    from dask.distributed import Client, LocalCluster

    address = _scheduler(scheduler)
    if address:
        return Client(address, timeout=30)
    # A task whose worker dies is retried once on another; a second death marks it crashed.
    dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.worker.daemon": False})
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           local_directory=str(scratch))  # fmt: skip
    return Client(cluster)


def task_timeout(limits: settings.Limits, notebooks: int = len(spec.NOTEBOOKS)) -> float:
    """Seconds one submission may take on a worker: for each notebook, the longer of its kernel's
    limit and the hidden checks' bound (each part's start and result within part_timeout, a
    restart after each part that fails), repair's limit, and a minute for nbgrader itself."""
    from autograder.repair import REPAIR_SECONDS

    parts = max(len(n.parts) for n in spec.NOTEBOOKS.values())
    checks = parts * (limits.start_timeout + 2 * limits.part_timeout)
    return notebooks * (max(limits.notebook_timeout, checks) + REPAIR_SECONDS + 60)


def _executing(dask_worker) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def _as_completed(client, futures: dict, seconds: float, progress: bool):
    """Each future once it finishes, or once it has run ``seconds`` on a worker: that one is
    cancelled and its worker restarted (which ends its jails), so its ``result()`` raises."""
    from dask.distributed import wait
    from tqdm.auto import tqdm

    pending, started, stopped = set(futures), {}, set()
    with tqdm(total=len(futures), desc="grading", unit="student", disable=not progress) as bar:
        while pending:
            try:
                done = wait(list(pending), timeout=2, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = set()
            now = time.monotonic()
            try:
                running = client.run(_executing)
            except Exception:  # a worker restarting: try again at the next round
                running = {}
            for worker, keys in running.items():
                for key in keys:
                    started.setdefault(key, (now, worker))
            for future in list(pending - set(done)):
                start, worker = started.get(str(future.key), (now, None))
                if now - start > seconds:
                    client.cancel(future)
                    stopped.add(future)
                    _restart(client, worker)
                    done = {*done, future}
            for future in done:
                pending.discard(future)
                bar.update()
                yield future, future in stopped


def _restart(client, worker: str | None) -> None:
    """Restart ``worker`` (its nanny starts a fresh one): the only way to stop a task's thread."""
    if worker is None:
        return
    try:
        client.restart_workers([worker], timeout=60, raise_for_error=False)
    except Exception:  # no nanny: end the process; the scheduler reassigns what it held
        try:
            client.run(os._exit, 1, workers=[worker], on_error="ignore")
        except Exception:
            pass


def _sweep(scratch: Path) -> None:
    """Whatever a run's jails left (a worker killed mid-notebook): their cgroups and scratch folders."""
    import shutil

    from autograder.limits import sweep_cgroups

    sweep_cgroups(scratch)
    shutil.rmtree(scratch, ignore_errors=True)


def grade_class(root: Path, students: list[str], *, options: settings.Options | None = None, workers: int = 2,
                scheduler: str | None = None, progress: bool = True,
                task_seconds: float | None = None) -> dict[str, str]:  # fmt: skip
    """Grade ``students`` on a Dask cluster and record every outcome here; {student: problem} for failures.

    Whatever one submission does, the run finishes and records every other student: a task
    past ``task_seconds`` (default :func:`task_timeout`) is stopped and scores 0 as ``timeout``;
    a student whose files or outcome cannot be handled gets a ``grader error`` with the cause."""
    root = Path(root)
    if options is None:  # what the course's nbgrader_config.py sets (c.Grading), as formgrader would grade
        options = settings.Options.from_config(settings.course_config(root))
    if options.seed is None:  # the course's base seed: each student's inputs are the same at every regrade
        options = replace(options, seed=settings.course_seed(root))
    scratch = Path(tempfile.mkdtemp(prefix="autograder-run-", dir=settings.scratch_root(options)))
    if not _scheduler(scheduler):  # our own workers: their jails, cgroups and copies under one folder, swept
        options = replace(options, scratch=str(scratch))  # (a remote worker keeps its own scratch place)
    try:
        return _grade_class(root, students, options, workers, scheduler, progress, task_seconds, scratch)
    finally:
        _sweep(scratch)


def _grade_class(root: Path, students: list[str], options: settings.Options, workers: int, scheduler: str | None,
                 progress: bool, task_seconds: float | None, scratch: Path) -> dict[str, str]:  # fmt: skip
    from distributed.scheduler import KilledWorker

    problems: dict[str, str] = {}
    tasks = {}
    for student in students:
        try:
            tasks[student] = make_task(root, student, options)
            if not tasks[student].notebooks:  # nothing gradable: 0, no worker
                record(root, Outcome(student), tasks.pop(student).timestamp)
        except Exception as exc:  # this student's files: the others are graded
            tasks.pop(student, None)
            problems[student] = _grader_error(root, student, exc)
    seconds = task_seconds or task_timeout(options.limits)
    with _client(workers, scheduler, scratch) as client:
        from autograder.environment import check_cluster  # issue 20: no task before every worker can grade

        check_cluster(client, confined=not options.unconfined)
        course = client.scatter(course_files(root), broadcast=True)
        futures = {client.submit(grade_submission, task, course, key=f"grade-{s}-{time.time_ns()}", pure=False): s
                   for s, task in tasks.items()}  # fmt: skip
        for future, stopped in _as_completed(client, futures, seconds, progress):
            student = futures[future]
            if stopped:  # past its deadline: 0 marks, and why, where the reports find it
                _zero(
                    root, student, f"timeout: grading did not finish within {seconds:g} s; it gets no marks"
                )
                problems[student] = f"timeout (stopped after {seconds:g} s)"
                continue
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
            try:
                record(root, outcome, tasks[student].timestamp)
                crash_file(root, student).unlink(missing_ok=True)
            except Exception as exc:
                problems[student] = _grader_error(root, student, exc)
    return problems


def _zero(root: Path, student: str, why: str) -> None:
    """Record 0 marks for ``student``, with ``why`` where the reports read a whole submission's status."""
    record(root, Outcome(student), None)
    crash_file(root, student).write_text(why)


def _grader_error(root: Path, student: str, exc: BaseException) -> str:
    why = f"grader error: {type(exc).__name__}: {str(exc)[:300]}"
    try:
        _zero(root, student, why)
    except Exception:  # the gradebook itself: nothing more to record
        pass
    return why
