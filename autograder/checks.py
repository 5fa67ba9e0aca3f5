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
import zipfile
from pathlib import Path

from autograder import jail, settings, spec
from autograder.judge import judge
from autograder.results import Verdict
from autograder.sandbox import torch_adam_stubs

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
    scratch: Path | None = None,
) -> dict[str, dict[str, Verdict]]:
    """A verdict per notebook and part for the solution cells ``{notebook: source}``; the jailed
    processes' folders go under ``scratch`` (default :func:`settings.scratch_root`)."""
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
            jobs[name] = {
                "symbol": graded.symbol,
                "prelude": graded.prelude,
                "source": source,
                "guarded": graded.guarded,
            }
    keys = [f"{name}:{p.name}" for name in jobs for p in spec.notebook(name).parts]
    drivers = {
        f"{name}:{p.name}": (p.driver, p.driver_args) for name in jobs for p in spec.notebook(name).parts
    }
    while keys:  # each round runs what is left; a hang or a crash costs one part
        events, ended = _run_runner(
            {"jobs": jobs, "drivers": drivers, "seed": seed, "device": device, "parts": keys},
            limits,
            confined,
            scratch,
        )
        running = None
        for event in (e for e in events if e.get("part") in keys):
            name, part = event["part"].split(":", 1)
            running = event["part"] if event.get("event") == "start" else None
            if event.get("event") == "done":
                verdicts[name][part] = _judged(
                    spec.notebook(name), part, event.get("data"), seed, device, label
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


def _judged(graded: spec.Notebook, part: str, data: object, seed: int, device: str, label: str) -> Verdict:
    """The verdict on one part from the runner's message: validated first, then judged."""
    hint = graded.part(part).hint
    result, problem = load_result(data)
    if problem:
        return Verdict(part, INVALID_RESULT, f"the checking process sent back {problem}", hint, label, seed)
    try:
        return judge(graded, part, result, seed, device, label)
    except Exception as exc:  # the grader's own failure: this part says so, the others are judged
        why = f"grader error: {type(exc).__name__}: {str(exc)[:300]}"
        return Verdict(part, "grader error", why, "", label, seed)


# ----------------------------------------------------------------------------- results are data

INVALID_RESULT = "invalid result"
MAX_LINE = 16 * 2**20  # bytes of one message from the runner (a part's results take well under 1 MiB)
MAX_RUNNER_BYTES = 64 * 2**20  # everything one runner may send
MAX_TENSOR_BYTES = 32 * 2**20  # the tensors of one result together
MAX_VALUES = 100_000  # numbers, strings, tensors and containers in one result
MAX_DEPTH = 12
MAX_STRING = 20_000
MAX_DIMS = 8
_ARCHIVE_ENTRIES = 10_000
_RESULT_KEYS = {
    "ok": (bool,),
    "error": (str, type(None)),
    "setup_error": (str, type(None)),
    "tripped": (list,),
}


def load_result(data: object) -> tuple[dict | None, str | None]:
    """(result, None) for a well-formed result message, else (None, what was wrong with it).

    The message is untrusted bytes: its size, then the archive ``torch.save`` wrote (every
    entry stored, no more bytes claimed than it holds), then ``torch.load(weights_only=True)``
    (plain tensors and containers, never code), then every value: types, nesting, counts,
    string lengths, and each tensor's dtype, layout, device, shape, strides and storage, before
    anything reads a tensor's elements. A forged stride-0 view of a huge shape is refused
    without being materialised."""
    import torch

    if not isinstance(data, str) or not data:
        return None, "no result" if not data else "a result that is not text"
    if len(data) > MAX_LINE:
        return None, f"a result larger than {MAX_LINE // 2**20} MiB"
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        return None, "a result that is not base64"
    problem = _archive_problem(raw)
    if problem:
        return None, problem
    try:
        result = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as exc:  # a garbled or forged archive
        return None, f"a result that could not be read ({type(exc).__name__})"
    problem = _value_problem(result)
    if problem:
        return None, problem
    for key, kinds in _RESULT_KEYS.items():
        if key in result and not isinstance(result[key], kinds):
            return None, f"a result whose {key!r} is of type {type(result[key]).__name__}"
    if not all(isinstance(t, str) for t in result.get("tripped", [])):
        return None, "a result whose 'tripped' holds something other than text"
    if "ok" not in result or (result["ok"] and "payload" not in result):
        return None, "a result without its verdict fields"
    return result, None


def _archive_problem(raw: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return "a result that is not a torch.save archive"
    if len(entries) > _ARCHIVE_ENTRIES:
        return f"a result archive of {len(entries)} entries"
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        return "a compressed result archive (torch.save stores its entries)"
    if sum(e.file_size for e in entries) > len(raw):
        return "a result archive that claims more bytes than it holds"
    return None


def _value_problem(result: object) -> str | None:
    """What makes ``result`` unfit to judge (None: it is a dict of plain data of bounded size)."""
    import torch

    if not isinstance(result, dict):
        return f"a {type(result).__name__} instead of a dict"
    allowed = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8,
               torch.int16, torch.int32, torch.int64, torch.bool}  # fmt: skip
    stack, count, storages = [(result, 0)], 0, {}
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"a result of more than {MAX_VALUES} values"
        if depth > MAX_DEPTH:
            return f"a result nested more than {MAX_DEPTH} deep"
        if value is None or type(value) in (bool, float):
            continue
        if type(value) is int:
            if abs(value) > 2**63:
                return "an integer of more than 64 bits"
        elif type(value) is str:
            if len(value) > MAX_STRING:
                return f"a string of more than {MAX_STRING} characters"
        elif type(value) in (list, tuple):
            stack.extend((item, depth + 1) for item in value)
        elif type(value) is dict:
            if not all(type(k) is str and len(k) < 200 for k in value):
                return "a dict whose keys are not short strings"
            stack.extend((item, depth + 1) for item in value.values())
        elif type(value) in (torch.Tensor, torch.nn.Parameter):
            problem = _tensor_problem(value, allowed)
            if problem:
                return problem
            storage = value.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            if sum(storages.values()) > MAX_TENSOR_BYTES:
                return f"tensors of more than {MAX_TENSOR_BYTES // 2**20} MiB"
        else:
            return f"a value of type {type(value).__name__}"
    return None


def _tensor_problem(t, allowed: set) -> str | None:
    import torch

    if t.layout != torch.strided or t.is_quantized or t.is_nested:
        return "a tensor that is not a plain dense tensor"
    if t.dtype not in allowed:
        return f"a tensor of dtype {t.dtype}"
    if t.device.type != "cpu":
        return f"a tensor on {t.device}"
    if t.dim() > MAX_DIMS or any(s < 0 for s in t.shape):
        return f"a tensor of shape {tuple(t.shape)}"
    numel = 1
    for size in t.shape:
        numel *= size
    if numel * t.element_size() > MAX_TENSOR_BYTES:
        return f"a tensor of shape {tuple(t.shape)[:MAX_DIMS]}, more than {MAX_TENSOR_BYTES // 2**20} MiB"
    if not t.is_contiguous():
        return f"a tensor with strides {tuple(t.stride())} (not contiguous: values repeated or skipped)"
    if (t.storage_offset() + numel) * t.element_size() > t.untyped_storage().nbytes():
        return "a tensor larger than the storage behind it"
    return None


# ----------------------------------------------------------------------------- the runner


def _run_runner(
    request: dict, limits: settings.Limits, confined: bool = True, scratch: Path | None = None
) -> tuple[list[dict], str]:
    """Run the jailed runner until it ends or a part overruns; (events, how it ended)."""
    request = dict(request, modules={name: path.read_text() for name, path in _HARNESS.items()})
    cell = jail.Jail(jail.new_scratch("checks", scratch), limits=limits, confined=confined)
    cell.overlays = torch_adam_stubs(cell.scratch / ".torch-adam")  # torch's Adam source is not in there
    try:
        proc = subprocess.Popen(
            cell.command([sys.executable, "-I", "-c", _BOOT]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    except BaseException:
        cell.close()
        raise
    lines: queue.Queue = queue.Queue(maxsize=16)  # a runner that writes faster than we read waits
    stop = threading.Event()

    def put(item: bytes | str | None) -> bool:
        while not stop.is_set():
            try:
                lines.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def read() -> None:
        total = 0
        for line in iter(lambda: proc.stdout.readline(MAX_LINE + 1), b""):
            total += len(line)
            if total > MAX_RUNNER_BYTES:
                put("too much")
                return
            if not put(line):
                return
        put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
    except OSError:
        pass
    try:
        events, ended = _collect(lines, request["parts"], limits)
        if ended == "ended":
            try:
                proc.wait(timeout=5)  # it closed its output: it should be ending
            except subprocess.TimeoutExpired:
                pass
            code = proc.poll()
            ended = "it ended early" if code == 0 else jail.describe_exit(code, cell.limits_hit())
    finally:
        stop.set()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        proc.stdout.close()
        cell.close()
    return events, ended


def _collect(lines: queue.Queue, parts: list[str], limits: settings.Limits) -> tuple[list[dict], str]:
    """The runner's events until its end, or until a part runs past its time limit.

    The limits are wall-clock: ``start_timeout`` until the first part starts, then
    ``part_timeout`` from each part's start to its result, and from each result to the next
    start. Only the protocol moves them on: the next part's start, then that part's result,
    each once and in order, so whatever else the solution writes into the channel extends
    nothing, and the whole run is bounded by start_timeout + 2 x parts x part_timeout."""
    events: list[dict] = []
    deadline = time.monotonic() + limits.start_timeout
    position, running = 0, None
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return events, "timeout"
        if time.monotonic() > deadline:
            return events, "timeout"
        if line is None:
            return events, "ended"
        if line == "too much":
            return events, f"it went past the result size limit ({MAX_RUNNER_BYTES // 2**20} MiB)"
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue  # the solution wrote into the channel: results carry their own data
        if not isinstance(event, dict):
            continue
        kind, part = event.get("event"), event.get("part")
        if kind == "start" and running is None and position < len(parts) and part == parts[position]:
            running = part
        elif (
            kind == "done" and running is not None and part == running and isinstance(event.get("data"), str)
        ):
            running, position = None, position + 1
        elif kind == "end" and running is None:
            return events, "finished"
        else:
            continue  # out of order, repeated or malformed: ignored, and it moves no deadline
        events.append({"part": part, "event": kind, "data": event.get("data")})
        deadline = time.monotonic() + limits.part_timeout
