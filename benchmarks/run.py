"""Run every benchmarks/bench_*.py and write benchmarks/RESULTS.md.

Each module exposes ``run() -> str`` returning a Markdown section. Usage:
``python benchmarks/run.py [NAME ...]`` (e.g. ``data``) to run only some; the
other sections of RESULTS.md are then kept as they were.
"""

from __future__ import annotations

import datetime
import importlib.util
import platform
import re
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # so a benchmark's worker processes can find its functions by name
    spec.loader.exec_module(module)
    return module


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _old_sections() -> dict[str, str]:
    if not RESULTS.exists():
        return {}
    parts = re.split(r"(?m)^<!-- bench:(\w+) -->\n", RESULTS.read_text())
    return {parts[i]: parts[i + 1].rstrip() + "\n" for i in range(1, len(parts) - 1, 2)}


def main(names: list[str]) -> int:
    sys.path.insert(0, str(HERE.parent))
    paths = sorted(HERE.glob("bench_*.py"))
    sections = _old_sections()
    for path in paths:
        name = path.stem.removeprefix("bench_")
        if names and name not in names:
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        sections[name] = _load(path).run().rstrip() + "\n"
        print(sections[name], f"({time.perf_counter() - start:.0f} s)", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        "# Benchmark results\n",
        f"Written by `make bench` ({stamp}) on: {_machine()}.",
        "Medians of repeated runs; A and B are measured side by side in the same run.\n",
    ]
    for path in paths:
        name = path.stem.removeprefix("bench_")
        if name in sections:
            body.append(f"<!-- bench:{name} -->\n{sections[name]}")
    RESULTS.write_text("\n".join(body))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
