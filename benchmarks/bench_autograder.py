"""Benchmark: seconds per graded submission, what the jail costs, what the grader adds to nbgrader,
and what a second Dask worker buys.

All in one run, on the same class of correct submissions, interleaved where it matters:

* the anchor: stock ``nbgrader autograde`` (nbgrader's own preprocessors, no jail, no hidden
  checks) executing the same notebooks, one student at a time;
* our grader through ``python -m autograder grade`` with 1 worker, confined and
  ``--unconfined`` (rounds alternate, medians of per-round time);
* the same with 2 workers (scaling efficiency t1 / (2 t2)).

``BENCH_AUTOGRADER_N`` students (default 6) and ``BENCH_AUTOGRADER_ROUNDS`` rounds (default 2).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the autograder is imported from the repository, never installed
    sys.path.insert(0, str(ROOT))

STOCK_CONFIG = """c = get_config()
c.CourseDirectory.course_id = "optimizers-course"
c.Execute.timeout = 60
"""


# The kernels of both sides run with the same threads and quiet progress bars, as the jail sets them.
SAME_AS_JAIL = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}


def _env(**extra: str) -> dict:
    path = os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    )  # nbgrader runs alembic
    return {**os.environ, "PYTHONPATH": str(ROOT), "PATH": path, **extra}


def _course(tmp: Path, name: str, config: str | None, n: int) -> Path:
    import nbformat

    from autograder import spec
    from tests.fixtures import solutions

    root = tmp / name / "assignments"
    root.mkdir(parents=True)
    shutil.copytree(ROOT / "assignments" / "source", root / "source")
    if config is None:
        shutil.copy(ROOT / "assignments" / "nbgrader_config.py", root)
    else:
        (root / "nbgrader_config.py").write_text(config)
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "optimizers_lab", "--force"],
                   cwd=root, env=_env(), check=True, capture_output=True)  # fmt: skip
    answers = {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM}
    for i in range(n):
        folder = root / "submitted" / f"student{i:02d}" / "optimizers_lab"
        folder.mkdir(parents=True)
        for nb_name, nb in spec.NOTEBOOKS.items():
            notebook = nbformat.read(root / "release" / "optimizers_lab" / f"{nb_name}.ipynb", as_version=4)
            for cell in notebook.cells:
                if cell.metadata.get("nbgrader", {}).get("grade_id") == nb.solution_id:
                    cell.source = answers[nb_name]
            nbformat.write(notebook, folder / f"{nb_name}.ipynb")
    return root


def _stock(root: Path, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        subprocess.run([sys.executable, "-m", "nbgrader", "autograde", "optimizers_lab", "--student", f"student{i:02d}",
                        "--force"], cwd=root, env=_env(**SAME_AS_JAIL), check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def _ours(root: Path, workers: int, *flags: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "autograder", "--course", str(root), "grade", "--workers", str(workers),
                           *flags], cwd=ROOT, env=_env(TQDM_DISABLE="1"), capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    scores = sorted(
        {line.split(":")[1].split("(")[0].strip() for line in proc.stdout.splitlines() if "student" in line}
    )
    return took, ",".join(scores)


def run() -> str:
    """The figures, as a Markdown section for RESULTS.md."""
    n = int(os.environ.get("BENCH_AUTOGRADER_N", "6"))
    rounds = int(os.environ.get("BENCH_AUTOGRADER_ROUNDS", "2"))
    times: dict[str, list[float]] = {"stock": [], "confined": [], "unconfined": [], "confined, 2 workers": []}
    scores = set()
    with tempfile.TemporaryDirectory(prefix="bench-autograder-") as tmp:
        ours = _course(Path(tmp), "ours", None, n)
        stock = _course(Path(tmp), "stock", STOCK_CONFIG, n)
        for _ in range(rounds):
            times["stock"].append(_stock(stock, n))
            for key, flags, workers in (("confined", (), 1), ("unconfined", ("--unconfined",), 1),
                                        ("confined, 2 workers", (), 2)):  # fmt: skip
                took, got = _ours(ours, workers, *flags)
                times[key].append(took)
                scores.add(got)
    med = {k: statistics.median(v) / n for k, v in times.items()}
    jail = med["confined"] / med["unconfined"] - 1
    anchor = med["confined"] / med["stock"]
    efficiency = med["confined"] / (2 * med["confined, 2 workers"])
    per_worker = med["confined, 2 workers"] * 2  # seconds of one worker per submission, at 2 workers
    rows = [f"| {k} | {med[k]:.1f} | {' / '.join(f'{t:.0f}' for t in times[k])} |" for k in times]
    projection = [f"| {w} | {2000 * per_worker / w / 3600:.1f} |" for w in (1, 8, 32, 128)]
    return "\n".join([
        "## Autograder: seconds per graded submission (jail, nbgrader anchor, Dask workers)",
        "",
        f"{n} correct submissions (2 notebooks each, fast mode), {os.cpu_count()} CPU cores, 1 torch thread per "
        f"jailed process, CPU only; {rounds} interleaved rounds, medians. Scores seen: {sorted(scores)}.",
        "",
        "| grading | seconds per submission (median) | whole class per round (s) |",
        "|---|---:|---:|",
        *rows,
        "",
        f"- The jail costs **{jail:+.0%}** per submission (confined vs `--unconfined`, 1 worker; target < 10%).",
        f"- Our grader takes **{anchor:.2f}x** stock nbgrader's execution of the same notebooks (target <= 1.3x); "
        "it adds the jailed hidden-check process and the judging.",
        f"- Scaling from 1 to 2 workers: efficiency **{efficiency:.2f}** (t1 / (2 t2); target >= 0.9).",
        "",
        "Projection for 2,000 students from the 2-worker figure (one worker per core, same per-submission cost):",
        "",
        "| workers | hours |",
        "|---:|---:|",
        *projection,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    print(run())
