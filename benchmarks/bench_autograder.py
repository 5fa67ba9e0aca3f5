"""Benchmark: how long the autograder takes per submission, and what a second worker buys.

A throw-away copy of the course is released, ``BENCH_AUTOGRADER_N`` (default 20) correct
submissions are collected, and the whole class is graded twice in the same run: with one
worker, then with two. Per-submission time is the median over the one-worker run's
students (each student's two notebooks, hidden checks included); the speed-up is the
ratio of the two wall-clock totals (target: two workers take at most 0.65x as long).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the autograder is imported from the repository, never installed
    sys.path.insert(0, str(ROOT))


def _class(course, folder: Path, n: int) -> None:  # noqa: ANN001
    import nbformat

    from autograder import solutions, spec

    answers = {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM}
    for i in range(n):
        for name, nb in spec.NOTEBOOKS.items():
            notebook = nbformat.read(course.release / f"{name}.ipynb", as_version=4)
            for cell in notebook.cells:
                if cell.metadata.get("nbgrader", {}).get("grade_id") == nb.solution_id:
                    cell.source = answers[name]
            (folder / f"student{i:02d}").mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, folder / f"student{i:02d}" / f"{name}.ipynb")


def run() -> str:
    """Grade a class with 1 and with 2 workers; a Markdown section with the figures."""
    from autograder import pipeline

    n = int(os.environ.get("BENCH_AUTOGRADER_N", "20"))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-autograder-") as tmp:
        root = Path(tmp) / "assignments"
        root.mkdir()
        shutil.copy(ROOT / "assignments" / "nbgrader_config.py", root)
        shutil.copytree(ROOT / "assignments" / "source", root / "source")
        course = pipeline.Course(root)
        pipeline.release(course)
        _class(course, Path(tmp) / "uploads", n)
        pipeline.collect(course, Path(tmp) / "uploads")
        totals, per_student, scores = {}, {}, {}
        for workers in (1, 2):
            shutil.rmtree(course.autograded, ignore_errors=True)
            start = time.perf_counter()
            results = pipeline.grade(course, pipeline.Options(workers=workers))
            totals[workers] = time.perf_counter() - start
            per_student[workers] = [
                sum(nb["seconds"] for nb in r["notebooks"].values()) for r in results.values()
            ]
            scores[workers] = sorted({r["score"] for r in results.values()})
    ratio = totals[2] / totals[1]
    median = statistics.median(per_student[1])
    return "\n".join(
        [
            "## Autograder: seconds per graded submission",
            "",
            f"{n} correct submissions (2 notebooks each: nbgrader execution in fast mode plus hidden checks), "
            f"{cores} CPU core(s), 1 torch thread per process; CPU only. "
            "One run per worker count, side by side; per-submission figures are medians over the students.",
            "",
            "| workers | total (s) | per submission, wall / n (s) | median per student, own time (s) | scores |",
            "|---:|---:|---:|---:|---|",
            *[
                f"| {w} | {totals[w]:.1f} | {totals[w] / n:.1f} | {statistics.median(per_student[w]):.1f} | {scores[w]} |"
                for w in (1, 2)
            ],  # fmt: skip
            "",
            f"Two workers take **{ratio:.2f}x** the time of one (target <= 0.65); "
            f"one worker needs **{median:.1f} s** per submission (target < 20 s).",
            "",
        ]
    )


if __name__ == "__main__":
    print(run())
