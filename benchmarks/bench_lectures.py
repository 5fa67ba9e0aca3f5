"""Benchmark: every lecture executed at full size, against the arithmetic floor measured in the same run.

Measured: every lecture notebook (``notebooks/0[1-8]*.ipynb``: the ten that ``make lectures`` runs and the playground,
08) run top to bottom at full size (full MNIST, the epochs and seeds the notebooks ask for) as ``make lectures``
does: its ten notebooks side by side, one per core, each kernel with its share of the torch threads, longest first
(``tools.notebooks.execute_many``), timed from the first kernel's start to the last one's end; 08 alone afterwards.
Each notebook gets a hidden first cell that counts the training work it does:

* every forward pass of ``course_utils.models.MLP`` with autograd on (a training step or a gradient the lecture
  computes by hand, e.g. a gradient-variance estimate), by layer sizes and batch size;
* every such forward pass of ``course_utils.bag_of_words.BagOfWords`` (lecture 7's sparse second task), by batch
  shape;
* per cell, how much of that work the cell did (an IPython ``post_run_cell`` hook), so the time above the floor can
  be split into kernel start, cells that train nothing (plots, quadratics, derivations) and the training cells'
  own overhead;
* the MNIST images that pass through ``course_utils.training.train_epoch`` (as before, other tasks' batches apart).

Floor, measured in the same run after the lectures: for every (model, batch shape) a notebook trained, the time of
one bare step (forward, backward, ``torch.optim.SGD`` step, data already in memory, no notebook, no progress bar, the
better of 1 and all torch threads) times the number of steps the notebooks took. One epoch of bare MLP arithmetic
(469 steps of 128 images) is timed before and after the lectures as the unit; "epochs" below are MNIST images seen
with autograd on / 60,000, and lecture 7's bag-of-words work is reported as the MLP epochs its floor equals. The
target (issue 21): ``make lectures`` within 1.3x of the floor. Everything else a lecture does is overhead.

The full-size run takes many minutes, so it runs once (``BENCH_LECTURE_REPEATS=3`` for a median;
``BENCH_LECTURE_OUTPUTS=DIR`` keeps the executed notebooks). Run with ``python benchmarks/run.py lectures``
(``make bench`` runs every benchmark) or ``python -m benchmarks.bench_lectures``.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
import torch  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402

from tools import notebooks as nbtools  # noqa: E402

LECTURES = "notebooks/0[1-8]*.ipynb"  # make lectures' glob (nbtools.LECTURE_GLOB, 01-07) and the playground
TARGET = 1.3
ORDER = ROOT / "build" / "lectures" / ".seconds-full.json"  # make lectures' timings: the longest start first
EPOCH_IMAGES, EPOCH_STEPS, EPOCH_BATCH = 60_000, 469, 128

COUNTER_CELL = """\
import atexit, json
import torch
import course_utils.bag_of_words as _bow
import course_utils.models as _models
import course_utils.training as _training

_seen = {{"images": 0, "steps": 0, "other_steps": 0}}
_work = {{}}  # "mlp:784,256,256,10:128" / "bow:5000,2:64x40" -> forward passes with autograd on
_cells = {{}}  # execution count -> _work as it stood after that cell
_train_epoch = _training.train_epoch


def _counting_train_epoch(iterator, *args, **kwargs):
    def counted():
        for images, labels in iterator:
            if images[0].numel() == 784:  # an MNIST batch; other tasks are counted apart
                _seen["images"] += len(labels)
                _seen["steps"] += 1
            else:
                _seen["other_steps"] += 1
            yield images, labels

    return _train_epoch(counted(), *args, **kwargs)


def _counting(cls, key):
    forward = cls.forward

    def counting_forward(self, x):
        if torch.is_grad_enabled():
            _work[key(self, x)] = _work.get(key(self, x), 0) + 1
        return forward(self, x)

    cls.forward = counting_forward


_training.train_epoch = _counting_train_epoch
_counting(_models.MLP, lambda m, x: f"mlp:{{','.join(map(str, m.sizes))}}:{{x.shape[0]}}")
_counting(_bow.BagOfWords, lambda m, x: f"bow:{{m.embedding.num_embeddings}},{{m.embedding.embedding_dim}}:"
                                        f"{{x.shape[0]}}x{{x.shape[1]}}")
try:
    get_ipython().events.register(
        "post_run_cell", lambda result: _cells.__setitem__(result.execution_count, dict(_work))
    )
except NameError:  # not in a kernel
    pass
atexit.register(lambda: open({path!r}, "w").write(json.dumps({{"seen": _seen, "work": _work, "after_cell": _cells}})))
"""


def _cell_seconds(cell: nbformat.NotebookNode) -> float:
    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return (end - start).total_seconds()


def run_lecture(path: Path, counts: Path, keep: Path | None = None, threads: int | None = None) -> dict:
    """Execute one lecture at full size: its seconds, its work counts and each cell's seconds and work.

    With ``keep`` (a folder) the executed notebook, outputs included, is written there to be read afterwards;
    ``threads`` caps the kernel's torch threads, as ``make lectures`` does when it runs lectures side by side.
    """
    nb = nbformat.read(path, as_version=nbtools.NB_VERSION)
    nb.cells.insert(0, nbformat.v4.new_code_cell(COUNTER_CELL.format(path=str(counts))))
    client = NotebookClient(
        nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start, error = time.perf_counter(), None
    try:
        # the kernel exits at the end and writes the counts
        client.execute(env=nbtools.kernel_env(fast=False, threads=threads))
    except CellExecutionError as exc:  # the table says so; the other lectures still run
        error = str(exc).strip().splitlines()[-1][:300]
    seconds = time.perf_counter() - start
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, keep / path.name)
    data = json.loads(counts.read_text()) if counts.exists() else {"work": {}, "seen": {}, "after_cell": {}}
    cells, before = [], {}
    for index, cell in enumerate(nb.cells[1:], start=1):
        if cell.cell_type != "code" or cell.get("execution_count") is None:
            continue
        after = data["after_cell"].get(str(cell.execution_count), before)
        work = {key: n - before.get(key, 0) for key, n in after.items() if n > before.get(key, 0)}
        cells.append({"cell": index - 1, "seconds": _cell_seconds(cell), "work": work})
        before = after
    return {"seconds": seconds, "error": error, "cells": cells, "work": data["work"], "seen": data["seen"]}


def _bare_step(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Median seconds of one bare step (forward, backward, SGD step) over repeated timings."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    inputs, labels = batch

    def step() -> None:
        optimizer.zero_grad()
        criterion(model(inputs), labels).backward()
        optimizer.step()

    for _ in range(5):  # warm-up
        step()
    n = 1
    while True:  # enough steps for about 0.2 s per timing
        start = time.perf_counter()
        for _ in range(n):
            step()
        if time.perf_counter() - start > 0.2 or n >= 4096:
            break
        n *= 4
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            step()
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


def bare_step_seconds(key: str) -> float:
    """Floor of one step for a work key ("mlp:SIZES:B" or "bow:V,C:BxL"): the better of 1 and all torch threads."""
    from course_utils.bag_of_words import BagOfWords
    from course_utils.models import MLP

    kind, shape, batch = key.split(":")
    torch.manual_seed(0)
    if kind == "mlp":
        sizes = [int(s) for s in shape.split(",")]
        model, b = MLP(sizes), int(batch)
        data = (torch.randn(b, sizes[0]), torch.randint(0, sizes[-1], (b,)))
    else:
        vocab, classes = (int(s) for s in shape.split(","))
        b, length = (int(s) for s in batch.split("x"))
        model = BagOfWords(vocab, classes)
        data = (torch.randint(0, vocab, (b, length)), torch.randint(0, classes, (b,)))
    threads = torch.get_num_threads()
    best = _bare_step(model, data)
    if threads > 1:
        try:
            torch.set_num_threads(1)
            best = min(best, _bare_step(model, data))
        finally:
            torch.set_num_threads(threads)
    return best


def bare_epoch_seconds(repeats: int = 3, steps: int = EPOCH_STEPS, batch_size: int = EPOCH_BATCH) -> float:
    """Median time of one epoch of bare MLP arithmetic: forward, backward and an SGD step, data already in memory."""
    from course_utils.models import MLP

    torch.manual_seed(0)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            criterion(model(images), labels).backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _images(key: str, steps: int) -> int:
    kind, _, batch = key.split(":")
    return steps * int(batch) if kind == "mlp" else 0


def _analyse(result: dict, step_s: dict[str, float], epoch_s: float) -> dict:
    """Floor, epochs and where the time above the floor went, for one lecture."""
    floor = sum(steps * step_s[key] for key, steps in result["work"].items())
    mlp_floor = sum(steps * step_s[key] for key, steps in result["work"].items() if key.startswith("mlp"))
    cells = [{**c, "floor": sum(n * step_s[key] for key, n in c["work"].items())} for c in result["cells"]]
    cell_s = sum(c["seconds"] for c in cells)
    idle = [c for c in cells if not c["work"]]
    busy = [c for c in cells if c["work"]]
    slowest_idle = sorted(idle, key=lambda c: -c["seconds"])[:3]
    return {
        "error": result["error"],
        "seconds": result["seconds"],
        "epochs": sum(_images(k, n) for k, n in result["work"].items()) / EPOCH_IMAGES,
        "bow_epochs": (floor - mlp_floor) / epoch_s,
        "floor": floor,
        "start": result["seconds"] - cell_s,  # kernel start and shutdown, imports (in the counter cell)
        "idle": sum(c["seconds"] for c in idle),
        "busy_over": sum(c["seconds"] for c in busy) - floor,
        "slowest_idle": slowest_idle,
        "busiest": sorted(busy, key=lambda c: c["floor"] - c["seconds"])[:2],
    }


def run() -> str:
    """Markdown section: each lecture's measured time against its arithmetic floor, and where the rest goes."""
    threads = torch.get_num_threads()
    repeats = int(os.environ.get("BENCH_LECTURE_REPEATS", "1"))
    keep = Path(os.environ["BENCH_LECTURE_OUTPUTS"]) if os.environ.get("BENCH_LECTURE_OUTPUTS") else None
    paths = sorted(ROOT.glob(LECTURES))
    load_before = os.getloadavg()
    epoch_times = [bare_epoch_seconds()]
    in_make = [p for p in paths if not p.stem.startswith("08")]
    order = (
        "longest first, by the seconds of the last run (`make lectures` or this benchmark)"
        if nbtools.longest_first(in_make, ORDER) != in_make
        else "in name order (no earlier run timed them; the next run starts the longest first)"
    )
    jobs = nbtools.default_jobs(len(in_make))
    kernel_threads = nbtools.threads_per_job(jobs)
    runs, make_seconds = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(max_workers=jobs) as pool:
            start = time.perf_counter()  # make lectures: its notebooks, `jobs` at a time, longest first
            futures = {
                p.stem: pool.submit(run_lecture, p, Path(tmp) / f"{p.stem}.json", keep, kernel_threads)
                for p in nbtools.longest_first(in_make, ORDER)
            }
            lectures = {name: future.result() for name, future in futures.items()}
            make_seconds.append(time.perf_counter() - start)
            nbtools.record_seconds(
                ORDER, {f"{name}.ipynb": result["seconds"] for name, result in lectures.items()}
            )
            lectures.update(
                {
                    p.stem: run_lecture(p, Path(tmp) / f"{p.stem}.json", keep)
                    for p in paths
                    if p not in in_make
                }
            )
            runs.append(lectures)
    load_after = os.getloadavg()
    epoch_times.append(bare_epoch_seconds())
    epoch_s = statistics.median(epoch_times)
    keys = sorted({key for result in runs[0].values() for key in result["work"]})
    step_s = {key: bare_step_seconds(key) for key in keys}
    names = [p.stem for p in paths]
    stats = {}
    for name in names:
        median_run = sorted((r[name] for r in runs), key=lambda r: r["seconds"])[len(runs) // 2]
        stats[name] = _analyse(median_run, step_s, epoch_s)

    def ratio(s: float, floor: float) -> str:
        return f"{s / floor:.2f}x" if floor else "-"

    rows = [
        f"| {name}"
        + (f" (**failed**: {st['error']})" if st["error"] else "")
        + f" | {st['seconds']:.0f} | {st['epochs']:.1f}"
        + (f" + {st['bow_epochs']:.1f}" if st["bow_epochs"] >= 0.05 else "")
        + f" | {st['floor']:.0f} | {ratio(st['seconds'], st['floor'])} | {st['start']:.0f} | {st['idle']:.0f} | "
        f"{st['busy_over']:.0f} |"
        for name, st in stats.items()
    ]
    make_lectures = [name for name in names if not name.startswith("08")]

    def total(group: list[str]) -> tuple[float, float, float, float]:
        return (
            sum(stats[n]["seconds"] for n in group),
            sum(stats[n]["epochs"] + stats[n]["bow_epochs"] for n in group),
            sum(stats[n]["floor"] for n in group),
            sum(stats[n]["start"] + stats[n]["idle"] for n in group),
        )

    ml_s, ml_epochs, ml_floor, ml_idle = total(make_lectures)
    ml_wall = statistics.median(make_seconds)
    ml_ratio = ml_wall / ml_floor
    side_by_side = (
        f"{jobs} at a time, {kernel_threads} torch thread{'s' if kernel_threads > 1 else ''} each"
        if jobs > 1
        else "one at a time"
    )
    verdict = "met" if ml_ratio <= TARGET else "NOT met"
    failed = [name for name in names if stats[name]["error"]]
    passed = f"all {len(names)} ran to the end" if not failed else f"FAILED: {', '.join(failed)}"
    where = []
    for name, st in sorted(stats.items(), key=lambda item: -(item[1]["seconds"] - item[1]["floor"])):
        idle = ", ".join(
            f"c{c['cell']} {c['seconds']:.0f} s" for c in st["slowest_idle"] if c["seconds"] >= 1
        )
        busy = ", ".join(
            f"c{c['cell']} {c['seconds']:.0f} s for a floor of {c['floor']:.0f} s" for c in st["busiest"]
        )
        where.append(
            f"* **{name}**: {st['seconds'] - st['floor']:.0f} s above its floor: "
            f"kernel start and imports {st['start']:.0f} s, "
            f"cells that train nothing {st['idle']:.0f} s"
            + (f" (slowest: {idle})" if idle else "")
            + (f"; training cells {st['busy_over']:.0f} s above their floor (most: {busy})" if busy else "")
        )
    step_rows = [
        f"| `{key}` | {step_s[key] * 1e3:.3f} | {sum(r['work'].get(key, 0) for r in runs[0].values()):,} |"
        for key in keys
    ]
    return "\n".join(
        [
            "## Lectures at full size",
            "",
            f"**`make lectures` (the {len(make_lectures)} lectures 01-07b, {side_by_side}, {order}, as "
            f"`make lectures` runs them): {ml_wall:.0f} s ({ml_wall / 60:.1f} min) from the first kernel's start "
            "to the last one's end, for "
            f"{ml_epochs:.1f} epochs of MNIST-MLP-equivalent training: {ml_ratio:.2f}x its arithmetic floor of "
            f"{ml_floor:.0f} s; target: within {TARGET}x, {verdict}.** The notebooks' own times add up to "
            f"{ml_s:.0f} s, {ml_s / ml_floor:.2f}x the floor"
            + (
                " (they overlap: one kernel's start, plots and Python run while the other trains)"
                if jobs > 1
                else ""
            )
            + ". The playground (08), run alone afterwards: "
            + ", ".join(f"{stats[n]['seconds']:.0f} s" for n in names if n not in make_lectures)
            + f"; {passed}. "
            f"Of the {ml_s - ml_floor:.0f} notebook-seconds above the floor in `make lectures`, {ml_idle:.0f} s are "
            "kernel starts and cells that train nothing; the rest is the training cells' own overhead (the "
            "lectures' from-scratch optimisers in Python, the data pipeline, evaluation, progress bars).",
            "",
            f"Floor: for each model and batch shape the notebooks trained, one bare step (forward, backward, SGD step, "
            f"data in memory; the better of 1 and {threads} torch threads) times the steps they took, measured in "
            f"the same run after the lectures. One epoch of bare MLP arithmetic ({EPOCH_STEPS} steps of "
            f"{EPOCH_BATCH}) took {', '.join(f'{t:.2f}' for t in epoch_times)} s before/after the lectures. "
            "*Epochs* counts MNIST images that went through the MLP with autograd on (training steps and hand-made "
            "gradients) / 60,000; *+ n* is lecture 7's bag-of-words task as the MLP epochs its floor equals. "
            f"{'Median of ' + str(repeats) + ' runs' if repeats > 1 else 'One run'} (`BENCH_LECTURE_REPEATS`), "
            f"on the CPU, {threads} torch threads ({os.cpu_count()} cores); load average (1, 5, 15 min) before "
            f"{', '.join(f'{x:.1f}' for x in load_before)}, after {', '.join(f'{x:.1f}' for x in load_after)} "
            "(other processes on the machine slow the lectures down more than the floor, measured in seconds).",
            "",
            "| notebook | measured s | epochs | floor s | x floor | kernel start + imports s | "
            "cells without training s | training cells above floor s |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            f"| **make lectures (01-07b), wall clock** | **{ml_wall:.0f}** | **{ml_epochs:.1f}** | "
            f"**{ml_floor:.0f}** | **{ml_ratio:.2f}x** | | | |",
            f"| make lectures, the notebooks' seconds added up | {ml_s:.0f} | {ml_epochs:.1f} | "
            f"{ml_floor:.0f} | {ml_s / ml_floor:.2f}x | | | |",
            "",
            "Where the time above the floor goes, largest first:",
            "",
            *where,
            "",
            "| work (model:sizes:batch) | bare step ms | steps in all lectures |",
            "|---|---|---|",
            *step_rows,
            "",
        ]
    )


if __name__ == "__main__":
    print(run())
