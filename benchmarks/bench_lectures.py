"""Benchmark: every lecture executed at full size, against the arithmetic floor and the original PIL pipeline.

A (measured): every lecture notebook run top to bottom at full size (full MNIST, the epochs the notebooks ask for)
with the fast tensor pipeline, as `make lectures` does. Each notebook gets a hidden first cell that counts the
MNIST training images the lecture feeds through ``course_utils.training.train_epoch`` (batches of other data, such
as lecture 7's bag-of-words task, are counted apart and get no share of the floor).

Floor (measured in the same run): one epoch of bare MLP arithmetic, i.e. 469 forward/backward/SGD steps of the
course's MLP on batches of 128 images already in memory (no data pipeline, no progress bar, no notebook), timed
before and after the lectures (median of all repeats). The lectures' floor is (epochs of MNIST trained) x (that
epoch); the target is a total within 1.3x of it. Everything else a lecture does (kernel start, imports, plots,
parity checks, evaluation, the 2-D experiments, the data pipeline) is the overhead above the floor.

B (classic pipeline): the course's original torchvision/PIL ``DataLoader`` prepares each image separately. Its cost
per training image and the fast pipeline's are measured side by side on the same images (median of 3 repeats), and
B's lecture time is estimated as A + (images trained on) x (classic - fast) seconds per image, since the models,
optimisers and everything else in the lectures are the same under both pipelines.

The full-size lecture run takes minutes, so it runs once (not 3 times) by default; set BENCH_LECTURE_REPEATS=3 for
a median. Run with ``python benchmarks/run.py`` (``make bench``) or ``python -m benchmarks.bench_lectures``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
import torch  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from tools import notebooks as nbtools  # noqa: E402

COUNTER_CELL = """\
import atexit, json
import course_utils.training as _training

_seen = {{"images": 0, "steps": 0, "other_steps": 0}}
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


_training.train_epoch = _counting_train_epoch
atexit.register(lambda: open({path!r}, "w").write(json.dumps(_seen)))
"""


def run_lectures(counts_dir: Path) -> dict[str, tuple[float, dict]]:
    """Execute every lecture at full size; return {name: (seconds, {"images": n, "steps": n})}."""
    results = {}
    for path in sorted(ROOT.glob(nbtools.LECTURE_GLOB)):
        nb = nbformat.read(path, as_version=nbtools.NB_VERSION)
        counts = counts_dir / f"{path.stem}.json"
        nb.cells.insert(0, nbformat.v4.new_code_cell(COUNTER_CELL.format(path=str(counts))))
        client = NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        start = time.perf_counter()
        client.execute(env=nbtools.kernel_env(fast=False))  # the kernel exits here and writes the counts
        seconds = time.perf_counter() - start
        results[path.stem] = (seconds, json.loads(counts.read_text()))
    return results


def bare_epoch_seconds(repeats: int = 3, steps: int = 469, batch_size: int = 128) -> float:
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


def seconds_per_image(pipeline: str, n_batches: int = 20, repeats: int = 3) -> float:
    """Median time per training image to produce augmented batches of 128 with the given pipeline."""
    from course_utils.data import get_dataloaders

    times = []
    for _ in range(repeats):
        train_loader, _, _ = get_dataloaders(batch_size=128, pipeline=pipeline, device="cpu", seed=0)
        start, images = time.perf_counter(), 0
        for (_images, labels), _ in zip(train_loader, range(n_batches)):
            images += len(labels)
        times.append((time.perf_counter() - start) / images)
    return statistics.median(times)


def run() -> str:
    """Markdown section with the measured lecture time and the classic pipeline's estimate."""
    threads = torch.get_num_threads()
    repeats = int(os.environ.get("BENCH_LECTURE_REPEATS", "1"))
    fast_per_image = seconds_per_image("fast")
    classic_per_image = seconds_per_image("classic")
    load_before = os.getloadavg()[0]
    epoch_times = [bare_epoch_seconds()]
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_lectures(Path(tmp)))
    epoch_times.append(bare_epoch_seconds())
    epoch_s = statistics.median(epoch_times)
    names = list(runs[0])
    seconds = {name: statistics.median(r[name][0] for r in runs) for name in names}
    images = {name: runs[0][name][1]["images"] for name in names}
    extra = classic_per_image - fast_per_image
    floor = {name: images[name] / 60_000 * epoch_s for name in names}
    rows = [
        f"| {name} | {images[name] / 60_000:.1f} | {floor[name]:.1f} | {seconds[name]:.1f} | "
        f"{seconds[name] / floor[name]:.2f}x | {seconds[name] + images[name] * extra:.0f} |"
        if floor[name]
        else f"| {name} | 0 | 0 | {seconds[name]:.1f} | - | {seconds[name]:.0f} |"
        for name in names
    ]
    total_s, total_images = sum(seconds.values()), sum(images.values())
    total_floor = total_images / 60_000 * epoch_s
    ratio = total_s / total_floor
    classic_total = total_s + total_images * extra
    return "\n".join(
        [
            "## Lectures at full size",
            "",
            f"**`make lectures`: {total_s:.0f} s for {total_images / 60_000:.1f} epochs of MNIST, "
            f"{ratio:.2f}x the arithmetic floor of {total_floor:.0f} s** "
            f"({total_images / 60_000:.1f} epochs x {epoch_s:.2f} s for one epoch of bare MLP arithmetic, measured "
            f"before and after the lectures: {', '.join(f'{t:.2f}' for t in epoch_times)} s); target: within 1.3x, "
            f"{'met' if ratio <= 1.3 else 'NOT met'}.",
            "",
            f"All {len(names)} lecture notebooks executed top to bottom at full size on the CPU, "
            f"{threads} torch threads ({os.cpu_count()} cores); lecture times are "
            f"{'the median of ' + str(repeats) + ' runs' if repeats > 1 else 'one run'} "
            "(`BENCH_LECTURE_REPEATS`), per-image pipeline costs the median of 3. "
            "*Classic* is estimated: measured time + images trained on x (classic - fast) cost per image. "
            f"1-minute load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} (other processes on "
            "the machine slow the measured times down).",
            "",
            "| pipeline | cost per training image (data preparation) |",
            "|---|---|",
            f"| fast (tensor batches, course_utils) | {fast_per_image * 1e6:.1f} µs |",
            f"| classic (torchvision PIL, per image) | {classic_per_image * 1e6:.1f} µs |",
            "",
            "| notebook | epochs of MNIST trained | floor s | fast pipeline: measured s | x floor | "
            "classic pipeline: estimated s |",
            "|---|---|---|---|---|---|",
            *rows,
            f"| **total** | **{total_images / 60_000:.1f}** | **{total_floor:.0f}** | "
            f"**{total_s:.0f} s ({total_s / 60:.1f} min)** | **{ratio:.2f}x** | "
            f"**{classic_total:.0f} s ({classic_total / 60:.1f} min)** |",
            "",
        ]
    )


if __name__ == "__main__":
    print(run())
