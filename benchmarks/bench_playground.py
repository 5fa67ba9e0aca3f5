"""How long the playground takes to redraw after a slider move (budget: 200 ms for 3 optimisers x 100 steps).

Measured from Python exactly as a slider move is handled in the kernel: setting a widget's value runs the
observer, which recomputes the paths with torch.optim, updates the line data and renders the PNG that is sent to
the browser. The browser-side cost (decoding and showing a ~100 kB PNG) is not included.

Run alone with ``python -m benchmarks.bench_playground``; ``make bench`` collects it into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Callable

import torch

from course_utils.playground import Playground, _Canvas, run_optimizer
from course_utils.surfaces import get_surface

SURFACE = "rosenbrock"
OPTIMIZERS = ("SGD", "Momentum", "Adam")
STEPS = 100
REPEATS = 15
BUDGET_MS = 200.0


def _time(fn: Callable[[int], object], repeats: int = REPEATS) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU milliseconds per call; ``fn`` gets the repeat index (a new slider value).

    The CPU time is what the redraw would take on an otherwise idle machine (the work is single-threaded:
    2-element tensors never use intra-op threads); wall time also includes waiting for a busy CPU.
    """
    fn(-1)  # warm-up: first torch.optim step and first Agg draw allocate caches
    wall, cpu = [], []
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return wall, cpu


def _naive_redraw(start: tuple[float, float]) -> bytes:
    """What a plain `interact` + matplotlib callback does: new figure, contour recomputed, savefig to PNG."""
    paths = [run_optimizer(SURFACE, name, start, STEPS) for name in OPTIMIZERS]
    canvas = _Canvas()
    canvas.set_surface(get_surface(SURFACE))
    canvas.draw(paths, start)
    buf = io.BytesIO()
    canvas.fig.savefig(buf, format="png")
    return buf.getvalue()


def run() -> str:
    """Markdown section with median redraw times (ms) of the playground, as in `make bench`."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    pg = Playground(SURFACE, list(OPTIMIZERS), steps=STEPS)
    x0 = pg.start_x.value
    lr0 = pg.sliders["Adam"]["lr"].value

    def move_start(i: int) -> None:  # every path changes: 3 x 100 torch.optim steps + redraw
        pg.start_x.value = x0 + 0.01 * (i + 2)

    def move_lr(i: int) -> None:  # only Adam's path changes; the other two come from the cache
        pg.sliders["Adam"]["lr"].value = lr0 * (1.1 + 0.05 * i)

    def compute_only(i: int) -> None:
        pg._cache.clear()
        pg.compute()

    def render_only(i: int) -> None:
        pg.canvas.draw(list(pg.paths.values()), (x0, pg.start_y.value))
        pg.canvas.png()

    rows = [
        ("slider move: start x (3 paths recomputed + redraw)", _time(move_start)),
        ("slider move: Adam lr (1 path recomputed + redraw)", _time(move_lr)),
        ("  of which: 3 x 100 torch.optim steps", _time(compute_only)),
        ("  of which: update lines + Agg draw + PNG", _time(render_only)),
        (
            "baseline: new figure + contour + savefig each move",
            _time(lambda i: _naive_redraw((x0 + 0.01 * i, 1.0))),
        ),
    ]
    worst, worst_cpu = statistics.median(rows[0][1][0]), statistics.median(rows[0][1][1])
    lines = [
        "## Playground redraw (course_utils.playground)",
        "",
        f"{len(OPTIMIZERS)} optimisers ({', '.join(OPTIMIZERS)}) x {STEPS} steps on {SURFACE}; "
        f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}; "
        f"median and min of {REPEATS} repeats after a warm-up, in ms"
        f" (1-minute load average when starting: {load:.1f}; other work on the machine inflates the medians).",
        "",
        "| what | median wall ms | min wall ms | median CPU ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {statistics.median(w):.1f} | {min(w):.1f} | {statistics.median(c):.1f} |"
        for name, (w, c) in rows
    ]
    verdict = "within" if worst <= BUDGET_MS else "OVER"
    lines += [
        "",
        f"Worst-case slider move: {worst:.1f} ms wall ({worst_cpu:.1f} ms CPU), {verdict} the "
        f"{BUDGET_MS:.0f} ms budget. "
        f"The playground keeps one figure per surface (contour drawn once), reuses unchanged runs, "
        f"and encodes the PNG with Pillow's fastest setting; the baseline redoes all of it on every move.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
