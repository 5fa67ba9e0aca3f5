"""The hidden checks of a submission: run its solution cells in a jail, judge outside it.

:func:`run_checks` starts one jailed Python (:mod:`autograder.sandbox`, sent with
:mod:`autograder.cases` over stdin) for all the notebooks of a submission, collects one
result per part, and judges each with :mod:`autograder.judge`. A part that overruns its
time limit, or a runner that dies, costs that part only: the runner restarts for the rest.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from autograder import jail, settings, spec
from autograder.judge import judge
from autograder.results import Verdict

MAX_LINE = 64 * 2**20  # bytes of one result message
_BOOT = """\
import json, sys, types
request = json.loads(sys.stdin.buffer.read())
for name, source in request.pop("modules").items():
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, "<" + name + ">", "exec"), module.__dict__)
sys.modules["harness_sandbox"].main(request, sys.modules["harness_cases"])
"""
_HARNESS = {
    "harness_cases": Path(__file__).with_name("cases.py"),
    "harness_sandbox": Path(__file__).with_name("sandbox.py"),
}


def device_label(device: str) -> str:
    """The device as reports show it, with the GPU's name."""
    if device.startswith("cuda"):
        import torch

        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def resolve_device(device: str | None) -> str:
    """``device``, or the course's choice (the GPU when there is one); a clear error for a missing GPU."""
    from course_utils.config import get_device

    if device is None:
        return get_device().type
    if device.startswith("cuda") and get_device().type != "cuda":
        raise ValueError(f"Invalid device: {device!r} (CUDA is not available here; use 'cpu')")
    return device


def run_checks(
    sources: dict[str, str | None],
    *,
    device: str | None = None,
    seed: int | None = None,
    limits: settings.Limits | None = None,
    confined: bool = True,
) -> dict[str, dict[str, Verdict]]:
    """A verdict per notebook and part for the solution cells ``{notebook: source}``."""
    device = resolve_device(device)
    seed = settings.process_seed() if seed is None else int(seed)
    limits = limits or settings.Limits()
    label = device_label(device)
    verdicts: dict[str, dict[str, Verdict]] = {name: {} for name in sources}
    jobs = {}
    for name, source in sources.items():
        graded = spec.notebook(name)
        problem = _unusable(source, graded)
        if problem:
            verdicts[name] = {p.name: Verdict(p.name, *problem, p.hint, label, seed) for p in graded.parts}
        else:
            jobs[name] = {"symbol": graded.symbol, "prelude": graded.prelude, "source": source}
    keys = [f"{name}:{p.name}" for name in jobs for p in spec.notebook(name).parts]
    while keys:  # each round runs what is left; a hang or a crash costs one part
        events, ended = _run_runner({"jobs": jobs, "seed": seed, "device": device, "parts": keys}, limits, confined)
        running = None
        for event in (e for e in events if e.get("part") in keys):
            name, part = event["part"].split(":", 1)
            running = event["part"] if event.get("event") == "start" else None
            if event.get("event") == "done":
                verdicts[name][part] = judge(
                    spec.notebook(name), part, _load(event.get("data")), seed, device, label
                )
                keys.remove(event["part"])
        if keys:
            failed = running or keys[0]  # died before starting a part: blame the first, never loop forever
            name, part = failed.split(":", 1)
            verdicts[name][part] = _stopped(spec.notebook(name).part(part), ended, limits, label, seed)
            keys.remove(failed)
    return verdicts


def _stopped(part: spec.Part, ended: str, limits: settings.Limits, label: str, seed: int) -> Verdict:
    """The verdict on a part during which the runner hung or ended."""
    if ended == "timeout":
        status, message = (
            "timeout",
            f"stopped after {limits.part_timeout:g} s: an endless loop, or far too slow",
        )
    else:
        status = "limit" if "limit" in ended else "crashed"
        message = f"the checking process ended while running your code: {ended}"
    return Verdict(part.name, status, message, part.hint, label, seed)


def _unusable(source: str | None, graded: spec.Notebook) -> tuple[str, str] | None:
    if not source or not source.strip():
        return "missing", f"no solution cell with {graded.symbol} was found in the notebook"
    try:
        ast.parse(source)
    except SyntaxError as exc:
        return "error", f"the solution cell has a syntax error on line {exc.lineno}: {exc.msg}"
    return None


def _load(data: str | None) -> dict:
    import torch

    if not data:
        return {"ok": False, "error": "no result came back"}
    try:  # weights_only: plain tensors and containers, never code
        return torch.load(io.BytesIO(base64.b64decode(data)), weights_only=True)
    except Exception as exc:  # a garbled message, e.g. the solution wrote into the channel
        return {"ok": False, "error": f"the result could not be read ({type(exc).__name__})"}


def _run_runner(request: dict, limits: settings.Limits, confined: bool = True) -> tuple[list[dict], str]:
    """Run the jailed runner until it ends or a part overruns; (events, how it ended)."""
    request = dict(request, modules={name: path.read_text() for name, path in _HARNESS.items()})
    cell = jail.Jail(jail.new_scratch("checks"), limits=limits, confined=confined)
    proc = subprocess.Popen(
        cell.command([sys.executable, "-I", "-c", _BOOT]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in iter(lambda: proc.stdout.readline(MAX_LINE), b""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
    except OSError:
        pass
    try:
        events, ended = _collect(lines, limits)
        if ended == "ended":
            proc.wait()
            ended = (
                "ended" if proc.returncode == 0 else jail.describe_exit(proc.returncode, cell.limits_hit())
            )
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        cell.close()
    return events, ended


def _collect(lines: queue.Queue, limits: settings.Limits) -> tuple[list[dict], str]:
    """The runner's events until its last line, its end, or a silence past the time limit."""
    events: list[dict] = []
    deadline = time.monotonic() + limits.start_timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return events, "timeout"
        if line is None:
            return events, "ended"
        try:
            event = json.loads(line)
        except ValueError:
            continue  # the solution wrote into the channel: results carry their own data
        if isinstance(event, dict):
            events.append(event)
            if event.get("event") == "end":
                return events, "finished"
            deadline = time.monotonic() + limits.part_timeout
