"""``python -m autograder``: the instructor's commands (see assignments/INSTRUCTOR.md).

A thin driver over nbgrader's own autograde (configured in assignments/nbgrader_config.py):
it adds workers (Dask), upload layouts and reports. Formgrader's Autograde button and
``nbgrader autograde`` grade with exactly the same steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

from autograder import settings, spec
from autograder.results import fmt

COMMANDS = "release | collect | grade | report | export | run | check"


def release(root: Path) -> list[Path]:
    """nbgrader's ``generate_assignment`` (in this process, as grading is), then the leak check of the release."""
    from nbgrader.apps import NbGraderAPI

    from autograder.leaks import release_problems

    api = NbGraderAPI(config=settings.course_config(Path(root)))
    api.log.setLevel(logging.WARNING)
    # A new gradebook.db records alembic's head revision; nbgrader asks the `alembic` program for it,
    # which is not on PATH when the venv's python is run directly. Same answer, read in this process.
    with patch("nbgrader.api.get_alembic_version", _alembic_head):
        result = api.generate_assignment(spec.ASSIGNMENT, force=True)
    if not result.get("success"):
        raise SystemExit(
            f"error: nbgrader generate_assignment failed:\n{(result.get('error') or result.get('log'))[-3000:]}"
        )
    problems = release_problems(root)
    if problems:
        raise SystemExit("error: the release is not safe to hand out:\n  - " + "\n  - ".join(problems))
    return sorted((root / "release" / spec.ASSIGNMENT).glob("*.ipynb"))


def _alembic_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import _temp_alembic_ini

    with _temp_alembic_ini("sqlite://") as ini:
        return ScriptDirectory.from_config(Config(ini)).get_current_head()


def options(args: argparse.Namespace) -> settings.Options:
    """The course's ``c.Grading`` settings (nbgrader_config.py) with this run's flags over them."""
    config = settings.course_config(args.course) if (args.course / "nbgrader_config.py").exists() else None
    base = settings.Options.from_config(config)
    given = {name: getattr(args, name, None) for name in ("cell_timeout", "notebook_timeout", "part_timeout")}
    limits = replace(base.limits, **{k: v for k, v in given.items() if v is not None})
    return replace(base, limits=limits, device=getattr(args, "device", None) or base.device,
                   unconfined=getattr(args, "unconfined", False) or base.unconfined)  # fmt: skip


def _grade(args: argparse.Namespace, students: list[str] | None = None) -> int:
    from autograder.grade import grade_class
    from autograder.results import load_class, submitted_students

    root = args.course
    if not (root / "gradebook.db").exists() or not (root / "release" / spec.ASSIGNMENT).exists():
        release(root)
    students = students or submitted_students(root)
    if not students:
        raise SystemExit(
            f"error: nothing to grade in {root / 'submitted'}: run `python -m autograder collect DIR` first"
        )
    run = options(args)
    problems = grade_class(root, students, options=run, workers=args.workers, scheduler=args.scheduler)
    for student, result in load_class(root, students).items():
        parts = ", ".join(
            f"{n}: {fmt(r.score)}/{fmt(r.max_score)} {r.status}" for n, r in result.notebooks.items()
        )
        flag = f"  !! {problems[student]}" if student in problems else ""
        print(f"{student}: {fmt(result.score)}/{result.max_score} ({parts}){flag}")
    if run.unconfined:
        print("WARNING: graded --unconfined: student code ran with your permissions, outside the jail")
    return 1 if problems else 0


def _report(root: Path) -> None:
    from autograder import report
    from autograder.results import load_class

    results = load_class(root)
    paths = report.feedback(root, results)
    page = report.class_page(root, results, root / "reports" / "class.html")
    print(
        f"wrote {len(paths)} student page(s) under {root / 'reports' / 'students'} and the class page {page}"
    )


def _check(path: Path, run: settings.Options) -> int:
    from autograder.checks import run_checks
    from autograder.repair import defines, identify, load_notebook, solution_source

    nb_file = load_notebook(path)
    name = path.name.split(".ipynb")[0]
    if name not in spec.NOTEBOOKS:
        name = identify("\n".join(c.source for c in nb_file.cells)) or name
    notebook = spec.notebook(name)
    source = solution_source(nb_file, notebook)
    if source is None:  # metadata stripped: the cell that defines the symbol
        source = next((c.source for c in nb_file.cells if c.cell_type == "code" and defines(c.source, notebook.symbol)),
                      None)  # fmt: skip
    verdicts = run_checks({name: source}, device=run.device, seed=run.seed, limits=run.limits,
                          confined=not run.unconfined)[name]  # fmt: skip
    print(json.dumps({part: {**vars(v), "passed": v.passed} for part, v in verdicts.items()}, indent=1))
    return 0 if all(v.passed for v in verdicts.values()) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autograder", description=f"The lab's grader: {COMMANDS}.")
    p.add_argument("--course", type=Path, default=settings.COURSE_ROOT, help="the nbgrader course directory")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("release", help="nbgrader generate_assignment, then check that nothing secret leaked")
    collect = sub.add_parser("collect", help="import downloaded uploads into submitted/")
    collect.add_argument("folder", type=Path, help="a folder per student, or flat files from a form or LMS")
    collect.add_argument(
        "--pattern", help="forms, canvas, moodle, or a regex with (?P<student>...) and (?P<notebook>...)"
    )
    grading = argparse.ArgumentParser(add_help=False)
    limits = settings.Limits()
    for flag, kind, default, text in (  # limits default to None: c.Grading, else settings.Limits
        ("--workers", int, 2, "Dask workers started here (default 2)"),
        ("--scheduler", str, None, "grade on this Dask cluster: tcp://HOST:8786 (or DASK_SCHEDULER_ADDRESS)"),
        ("--cell-timeout", int, None, f"seconds per notebook cell (default {limits.cell_timeout})"),
        ("--notebook-timeout", int, None, f"seconds per notebook (default {limits.notebook_timeout})"),
        ("--part-timeout", float, None, f"seconds per hidden check (default {limits.part_timeout:g})"),
    ):
        grading.add_argument(flag, type=kind, default=default, help=text)
    grading.add_argument(
        "--device", choices=["cpu", "cuda"], help="hidden checks' device (default: the GPU if any)"
    )
    grading.add_argument(
        "--unconfined", action="store_true", help="run student code WITHOUT the jail (reports say so)"
    )
    grade = sub.add_parser("grade", parents=[grading], help="autograde every collected submission")
    grade.add_argument("students", nargs="*", help="only these student ids")
    sub.add_parser("report", help="feedback HTML per student, and the class page")
    export = sub.add_parser("export", help="write the grades as CSV (from the gradebook)")
    export.add_argument("--csv", type=Path, default=Path("grades.csv"))
    run = sub.add_parser(
        "run", parents=[grading], help="release, collect, grade, report and export in one go"
    )
    run.add_argument("folder", type=Path)
    run.add_argument("--csv", type=Path, default=Path("grades.csv"))
    run.add_argument("--pattern")
    check = sub.add_parser("check", help="run the hidden checks on one notebook file and print the verdicts")
    check.add_argument("notebook", type=Path)
    check.add_argument("--device", choices=["cpu", "cuda"])
    check.add_argument("--unconfined", action="store_true", help="run the checks WITHOUT the jail")
    return p


def main(argv: list[str] | None = None) -> int:
    from autograder.jail import JailUnavailable

    try:
        return _main(argv)
    except JailUnavailable as exc:
        print(f"error: cannot grade: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    args.course = args.course.resolve()
    if args.command == "check":
        return _check(args.notebook, options(args))
    if not (args.course / "nbgrader_config.py").exists():
        raise SystemExit(f"error: {args.course} is not an nbgrader course directory (no nbgrader_config.py)")
    from autograder import collect

    try:
        return _command(args)
    except collect.CollectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    from autograder import collect, report

    if args.command == "release":
        for path in release(args.course):
            print(f"released {path}")
        print("release checked: no solutions or hidden tests in the student version")
    elif args.command in ("collect", "run"):
        if args.command == "run":
            release(args.course)
        summary = collect.collect(args.course, args.folder, args.pattern)
        print(f"collected {summary.files} notebook(s) from {len(summary.students)} student(s)")
        for line in summary.skipped:
            print(f"skipped: {line}", file=sys.stderr)
        if args.command == "run":
            code = _grade(args, summary.students)
            _report(args.course)
            print(f"wrote {report.export_csv(args.course, args.csv)}")
            return code
    elif args.command == "grade":
        return _grade(args, args.students or None)
    elif args.command == "report":
        _report(args.course)
    elif args.command == "export":
        print(f"wrote {report.export_csv(args.course, args.csv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
