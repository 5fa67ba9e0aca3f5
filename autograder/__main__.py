"""``python -m autograder``: the instructor's commands (see assignments/INSTRUCTOR.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autograder import pipeline, spec
from autograder.hidden import REPO_ROOT


def _options(args: argparse.Namespace) -> pipeline.Options:
    return pipeline.Options(
        workers=args.workers, cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
        part_timeout=args.part_timeout, device=args.device,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder", description="Release, collect, grade and report the lab."
    )
    parser.add_argument(
        "--course", type=Path, default=REPO_ROOT / "assignments", help="the nbgrader course directory"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("release", help="nbgrader generate_assignment, then check that nothing secret leaked")
    p_collect = sub.add_parser("collect", help="import downloaded submissions into submitted/")
    p_collect.add_argument("folder", type=Path, help="a folder per student, or flat files from a form or LMS")
    p_collect.add_argument("--pattern", help=f"a preset ({', '.join(pipeline.PATTERNS)}) or a regex with "
                           "(?P<student>...) and (?P<notebook>...) groups, matched on file names without .ipynb")  # fmt: skip
    grading = argparse.ArgumentParser(add_help=False)
    grading.add_argument("--workers", type=int, default=2, help="students graded in parallel (default 2)")
    grading.add_argument(
        "--cell-timeout", type=int, default=60, help="seconds per notebook cell (default 60)"
    )
    grading.add_argument(
        "--notebook-timeout", type=int, default=300, help="seconds per notebook (default 300)"
    )
    grading.add_argument(
        "--part-timeout", type=float, default=30.0, help="seconds per hidden check (default 30)"
    )
    grading.add_argument(
        "--device", choices=["cpu", "cuda"], help="hidden checks' device (default: cuda if available)"
    )
    p_grade = sub.add_parser("grade", parents=[grading], help="autograde every collected submission")
    p_grade.add_argument("students", nargs="*", help="only these student ids")
    sub.add_parser("feedback", help="an HTML report per student under feedback/")
    p_export = sub.add_parser("export", help="write the grades as CSV")
    p_export.add_argument("--csv", type=Path, default=Path("grades.csv"))
    p_run = sub.add_parser(
        "run", parents=[grading], help="release, collect, grade, feedback and export in one go"
    )
    p_run.add_argument("folder", type=Path)
    p_run.add_argument("--csv", type=Path, default=Path("grades.csv"))
    p_run.add_argument("--pattern")
    p_check = sub.add_parser(
        "check", help="run the hidden checks on one notebook file and print the verdicts"
    )
    p_check.add_argument("notebook", type=Path)
    p_check.add_argument("--device", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)

    try:
        if args.command == "check":
            return _check(args)
        course = pipeline.Course(args.course)
        if args.command == "release":
            for path in pipeline.release(course):
                print(f"released {path}")
            print("release checked: no solutions or hidden tests in the student version")
        elif args.command == "collect":
            summary = pipeline.collect(course, args.folder, args.pattern)
            print(f"collected {summary['files']} notebook(s) from {len(summary['students'])} student(s)")
            for line in summary["skipped"]:
                print(f"skipped: {line}", file=sys.stderr)
        elif args.command == "grade":
            results = pipeline.grade(course, _options(args), args.students or None)
            for student, result in results.items():
                statuses = ", ".join(
                    f"{n}: {_f(r['score'])}/{r['max_score']} {r['status']}"
                    for n, r in result["notebooks"].items()
                )
                print(f"{student}: {_f(result['score'])}/{result['max_score']} ({statuses})")
        elif args.command == "feedback":
            paths = pipeline.feedback(course)
            print(f"wrote {len(paths)} report(s) under {course.feedback}")
        elif args.command == "export":
            print(f"wrote {pipeline.export(course, args.csv)}")
        elif args.command == "run":
            print(f"wrote {pipeline.run(course, args.folder, args.csv, args.pattern, _options(args))}")
    except pipeline.PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _f(x: float) -> str:
    return pipeline._fmt(x)


def _check(args: argparse.Namespace) -> int:
    from autograder.hidden import run_checks
    from autograder.repair import load_notebook, solution_source

    nb_file = load_notebook(args.notebook)
    name = args.notebook.name.split(".ipynb")[0]
    if name not in spec.NOTEBOOKS:
        from autograder.repair import identify

        name = identify("\n".join(c.source for c in nb_file.cells)) or name
    nb = spec.notebook(name)
    source = solution_source(nb_file, nb)
    if source is None:  # metadata stripped: take the cell that defines the symbol
        from autograder.repair import defines

        source = next(
            (c.source for c in nb_file.cells if c.cell_type == "code" and defines(c.source, nb.symbol)), None
        )
    verdicts = run_checks(name, source, device=args.device)
    print(json.dumps(verdicts, indent=1))
    return 0 if all(v["passed"] for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
