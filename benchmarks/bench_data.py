"""One training epoch of the course MLP with SGD-momentum: classic vs fast data pipeline."""

from __future__ import annotations

import statistics
import time

import torch

from course_utils import MLP, get_dataloaders, set_seed, train_epoch
from course_utils.training import get_device

REPEATS = 3


def _epoch(loader, device) -> float:
    model = MLP().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    train_epoch(loader, model, optimizer, criterion, device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _iterate(loader) -> float:
    start = time.perf_counter()
    for batch in loader:  # noqa: B007 - the last batch tells the device
        pass
    if batch[0].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _arithmetic(device) -> float:
    """The MLP's forward, backward and update alone, on batches already in memory."""
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    model = MLP().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(469):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run() -> str:
    set_seed(0)
    device = get_device()
    fast, _, _ = get_dataloaders(pipeline="fast", device=device)
    classic, _, _ = get_dataloaders(pipeline="classic")
    _epoch(fast, device)  # warm-up (allocations, kernel caches)
    times = {"classic": [], "fast": [], "arith": [], "classic_data": [], "fast_data": []}
    for _ in range(REPEATS):  # interleaved, so both see the same machine load
        times["classic"].append(_epoch(classic, device))
        times["fast"].append(_epoch(fast, device))
        times["arith"].append(_arithmetic(device))
        times["classic_data"].append(_iterate(classic))
        times["fast_data"].append(_iterate(fast))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["classic"] / med["fast"]
    where = (
        torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    rows = [
        ("one epoch, classic pipeline (PIL + DataLoader)", med["classic"], times["classic"]),
        ("one epoch, fast pipeline (tensors on device)", med["fast"], times["fast"]),
        ("MLP arithmetic alone (469 steps, no data)", med["arith"], times["arith"]),
        ("data only, classic (iterate, no model)", med["classic_data"], times["classic_data"]),
        ("data only, fast (iterate, no model)", med["fast_data"], times["fast_data"]),
    ]
    lines = [
        "## Data pipeline: one epoch of the course MLP (784-256-256-10, SGD momentum 0.9, batch 128)\n",
        f"Device: {where}. 60,000 images, 469 steps, augmentation on. Median of {REPEATS}, runs interleaved.\n",
        "| what | median (s) | runs (s) |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {name} | {m:.2f} | {', '.join(f'{t:.2f}' for t in ts)} |" for name, m, ts in rows]
    lines.append(
        f"\n**Fast is {ratio:.1f}x faster than classic** per epoch (target: at least 8x on a 2-core CPU)."
    )
    return "\n".join(lines) + "\n"
