"""Hidden checks: run a solution cell in the sandbox, compare with the reference, explain failures.

Two entry points:

* :func:`run_checks` (grader side) - a verdict per graded part of one notebook;
* :func:`check` (called by the notebooks' hidden test cells) - raises with a hint when the
  part failed. While ``python -m autograder grade`` runs, it reads the verdicts the grader
  computed before the notebook was executed (``$AUTOGRADER_VERDICTS``); the grader later
  takes the lower of that verdict and the cell's nbgrader score, so whatever a notebook
  does to its own kernel cannot raise a mark. Anywhere else (``nbgrader validate``, the
  instructor's own Jupyter) it runs the checks itself, in a fresh process.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from autograder import spec

REPO_ROOT = Path(__file__).resolve().parents[1]
PART_TIMEOUT = 30.0  # seconds one part may run in the sandbox
START_TIMEOUT = 120.0  # seconds the sandbox may take to import torch and start the first part
MAX_LINE = 64 * 2**20  # bytes of one result message

# Static rules: things a solution cell has no business touching. The audit hook and the
# tripwires in the sandbox back these up at run time.
FORBIDDEN_MODULES = {
    "autograder",
    "builtins",
    "ctypes",
    "gc",
    "importlib",
    "inspect",
    "marshal",
    "socket",
    "subprocess",
}
FORBIDDEN_CALLS = {"__import__", "breakpoint", "compile", "eval", "exec", "globals", "open", "vars"}
FORBIDDEN_ATTRS = {
    "__builtins__", "__closure__", "__code__", "__globals__", "__subclasses__", "_getframe",
    "f_back", "f_globals", "f_locals", "gi_frame", "modules", "tb_frame",
}  # fmt: skip
FORBIDDEN_FOR = {"adam": {"optim", "_fused_adam_", "_fused_adamw_", "_functional"}}


# --------------------------------------------------------------------------- verdicts


def verdict(part: str, status: str, message: str = "", *, device: str = "", seed: int | None = None,
            hint: str = "") -> dict:  # fmt: skip
    return {"part": part, "passed": status == "passed", "status": status, "message": message, "hint": hint,
            "device": device, "seed": seed}  # fmt: skip


def static_problems(source: str, notebook: str) -> list[str]:
    """What in the solution cell's source is off-limits (empty when nothing is)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"the solution cell has a syntax error on line {exc.lineno}: {exc.msg}"]
    extra = FORBIDDEN_FOR.get(notebook, set())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")
                if top[0] in FORBIDDEN_MODULES or extra & set(top):
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            parts = set((node.module or "").split(".")) | {a.name for a in node.names}
            if (node.module or "").split(".")[0] in FORBIDDEN_MODULES or extra & parts:
                found.append(f"from {node.module} import ...")
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"{node.func.id}()")
        elif isinstance(node, ast.Attribute) and (node.attr in FORBIDDEN_ATTRS or node.attr in extra):
            found.append(f".{node.attr}")
        elif isinstance(node, ast.Name) and (node.id in extra or node.id in FORBIDDEN_MODULES):
            found.append(node.id)
    return sorted(set(found))


def _device_label(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_checks(
    notebook: str,
    source: str | None,
    *,
    parts: list[str] | None = None,
    device: str | None = None,
    seed: int | None = None,
    part_timeout: float = PART_TIMEOUT,
    start_timeout: float = START_TIMEOUT,
    protected: list[str | os.PathLike] = (),
    threads: int = 1,
    on_verdict=None,  # noqa: ANN001 - called as on_verdict(part, verdict) as soon as a part is judged
) -> dict[str, dict]:
    """Run the hidden checks of ``notebook`` on a solution cell's ``source``; a verdict per part.

    The solution runs in ``python -m autograder.sandbox`` (fresh process, empty working
    directory, audit hook) on inputs drawn from ``seed`` (random when None); the reference
    runs here. A part that hangs is stopped after ``part_timeout`` seconds and the sandbox
    restarts for the remaining parts. ``protected`` adds folders the solution may not read.
    """
    callback = (lambda _nb, part, v: on_verdict(part, v)) if on_verdict else None
    return run_many(
        {notebook: source}, parts={notebook: parts} if parts else None, device=device, seed=seed,
        part_timeout=part_timeout, start_timeout=start_timeout, protected=protected, threads=threads,
        on_verdict=callback,
    )[notebook]  # fmt: skip


def run_many(
    sources: dict[str, str | None],
    *,
    parts: dict[str, list[str]] | None = None,
    device: str | None = None,
    seed: int | None = None,
    part_timeout: float = PART_TIMEOUT,
    start_timeout: float = START_TIMEOUT,
    protected: list[str | os.PathLike] = (),
    threads: int = 1,
    on_verdict=None,  # noqa: ANN001 - called as on_verdict(notebook, part, verdict)
) -> dict[str, dict[str, dict]]:
    """:func:`run_checks` for several notebooks' solution cells (``{notebook: source}``) in one
    sandbox process, which saves a torch start-up per notebook; verdicts per notebook and part."""
    device = device or default_device()
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"Invalid device: {device!r} (CUDA is not available here; use 'cpu')")
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    label = _device_label(device)
    results = _Results(on_verdict)
    wanted: dict[str, list[str]] = {}
    jobs: dict[str, dict] = {}
    for name, source in sources.items():
        nb = spec.notebook(name)
        wanted[name] = list((parts or {}).get(name) or [p.name for p in nb.parts])

        def fail_all(status: str, message: str, nb: spec.Notebook = nb, name: str = name) -> None:
            for n in wanted[name]:
                results[name, n] = verdict(n, status, message, device=label, seed=seed, hint=nb.part(n).hint)

        if not source or not source.strip():
            fail_all("missing", f"no solution cell with {nb.symbol} was found in the notebook")
            continue
        problems = static_problems(source, name)
        if problems and problems[0].startswith("the solution cell has a syntax error"):
            fail_all("error", problems[0])
        elif problems:
            fail_all(
                "disallowed",
                "the solution cell uses " + ", ".join(problems[:8]) + ", which the lab does not allow here"
                + (" (implement Adam yourself, without torch.optim)" if name == "adam" else ""),
            )  # fmt: skip
        else:
            jobs[name] = {"symbol": nb.symbol, "prelude": nb.prelude, "source": source}
    if jobs:
        request = {
            "jobs": jobs,
            "seed": seed,
            "device": device,
            "threads": threads,
            "protected": [str(Path(p).resolve()) for p in [REPO_ROOT, Path.cwd(), *protected]],
            "allowed": [str(REPO_ROOT / "course_utils")],  # public course code a solution may import
        }
        keys = [f"{name}:{part}" for name in jobs for part in wanted[name]]
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)  # tiny tensors: extra threads only spin against the sandbox's
        try:
            _run_parts(keys, request, results, seed, device, label, part_timeout, start_timeout)
        finally:
            torch.set_num_threads(previous_threads)
    return {name: {p: results[name, p] for p in wanted[name]} for name in sources}


def _run_parts(keys: list[str], request: dict, results: dict, seed: int, device: str, label: str,
               part_timeout: float, start_timeout: float) -> None:  # fmt: skip
    """Run the sandbox until every "notebook:part" key has a verdict, restarting it after a hang or crash."""

    def store(key: str, status: str, message: str) -> None:
        name, part = key.split(":", 1)
        hint = spec.notebook(name).part(part).hint
        results[name, part] = verdict(part, status, message, device=label, seed=seed, hint=hint)

    remaining = list(keys)
    while remaining:
        events, status = _run_sandbox(dict(request, parts=remaining), part_timeout, start_timeout, device)
        started = None
        for event in events:
            if event.get("event") == "start" and event.get("part") in remaining:
                started = event["part"]
            elif event.get("event") == "done" and event.get("part") in remaining:
                key = event["part"]
                name, part = key.split(":", 1)
                results[name, part] = _judge(
                    spec.notebook(name), part, _load(event.get("data")), seed, device, label
                )
                remaining.remove(key)
                started = None
        if not remaining:
            break
        if started is None:  # the sandbox died before starting a part: do not loop forever
            for key in remaining:
                store(key, "crashed", f"the checker could not start ({status})")
            break
        if status == "timeout":
            store(started, "timeout", f"stopped after {part_timeout:g} s: an endless loop, or far too slow")
        else:
            store(started, "crashed", f"your code ended the checking process ({status})")
        remaining.remove(started)


class _Results(dict):
    """Verdicts keyed by (notebook, part), each reported to ``callback`` as soon as it is stored."""

    def __init__(self, callback) -> None:  # noqa: ANN001
        super().__init__()
        self.callback = callback

    def __setitem__(self, key: tuple[str, str], value: dict) -> None:
        super().__setitem__(key, value)
        if self.callback:
            self.callback(*key, value)


def _load(data: str | None) -> dict:
    import torch

    if not data:
        return {"ok": False, "error": "no result came back"}
    try:
        return torch.load(io.BytesIO(base64.b64decode(data)), weights_only=True)
    except Exception as exc:  # a garbled message, e.g. the solution wrote into the channel
        return {"ok": False, "error": f"the result could not be read ({type(exc).__name__})"}


def _run_sandbox(
    request: dict, part_timeout: float, start_timeout: float, device: str
) -> tuple[list[dict], str]:
    """Start the sandbox, collect its events until it ends or a part overruns; (events, how it ended)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOGRADER_", "NBGRADER_", "JPY_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), TQDM_DISABLE="1", PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS=str(request["threads"]), MKL_NUM_THREADS=str(request["threads"]))  # fmt: skip
    events: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="autograder-sandbox-") as cwd:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autograder.sandbox"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd, env=env,
            start_new_session=True,
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
        status = "ended"
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                status = "timeout"
                break
            if line is None:
                proc.wait()
                status = "ended" if proc.returncode == 0 else _exit_reason(proc.returncode)
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the solution wrote into the channel: ignore, results carry their own data
            if not isinstance(event, dict):
                continue
            events.append(event)
            if event.get("event") == "end":
                break
            deadline = time.monotonic() + part_timeout
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
    return events, status


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --------------------------------------------------------------------------- judging


def _difference(actual: object, expected, rtol: float, atol: float) -> str | None:  # noqa: ANN001
    """Why ``actual`` is not close to ``expected`` (None when it is)."""
    import torch

    if actual is None:
        return "is missing (None)"
    if not isinstance(actual, torch.Tensor):
        return f"is a {type(actual).__name__}, not a tensor"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"has shape {tuple(actual.shape)} instead of {tuple(expected.shape)}"
    a, e = actual.detach().double(), expected.detach().double()
    if not bool(torch.isfinite(a).all()):
        return "contains NaN or inf"
    diff = (a - e).abs()
    bad = diff > atol + rtol * e.abs()
    if bool(bad.any()):
        return f"is off by up to {diff.max().item():.3g} ({int(bad.sum())} of {bad.numel()} values)"
    return None


def _explain_error(result: dict) -> tuple[str, str]:
    """(status, message) for a part whose code raised, with the most useful pointer first."""
    error = result.get("error") or "unknown error"
    extra = ""
    if "NotImplementedError" in error:
        extra = " - the solution cell is still the stub: replace `raise NotImplementedError()` with your code"
    elif "leaf Variable that requires grad" in error:
        extra = " - update parameters inside `with torch.no_grad():` (or decorate step with @torch.no_grad())"
    elif "same device" in error or "Expected all tensors" in error:
        extra = " - create state with torch.zeros_like(param) so it lives on the parameter's device"
    first, _, where = error.partition("\n")
    message = f"your code raised {first}{extra}" + (f"\n{where}" if where else "")
    if result.get("setup_error") and "does not define" not in error:
        message += f"\n(the solution cell's top-level code also raised {result['setup_error']})"
    return "error", message


def _judge(nb: spec.Notebook, part: str, result: dict, seed: int, device: str, label: str) -> dict:
    hint = nb.part(part).hint

    def out(status: str, message: str = "") -> dict:
        return verdict(
            part, status, message, device=label, seed=seed, hint="" if status == "passed" else hint
        )

    if not isinstance(result, dict):
        return out("error", "the result could not be read")
    if result.get("violations"):
        return out("disallowed", "; ".join(result["violations"][:3]))
    if result.get("tripped"):
        return out("disallowed", f"the solution used {result['tripped'][0]}: implement the update yourself")
    if not result.get("ok"):
        return out(*_explain_error(result))
    try:
        judge = _ACCUMULATION_JUDGES[part] if nb.name == "accumulation" else _ADAM_JUDGES[part]
        problem = judge(result["payload"], seed, _torch_device(device))
    except Exception as exc:  # malformed payloads are the student's; never crash the batch
        problem = f"the checker could not understand your results ({type(exc).__name__}: {str(exc)[:200]})"
    return out("passed") if problem is None else out("failed", problem)


def _torch_device(device: str):  # noqa: ANN202
    import torch

    return torch.device(device)


def reference_train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):  # noqa: ANN001, ANN201
    """The contract, written plainly: one step per group of ``accumulation_steps`` batches (and one for
    a final partial group), each batch's loss divided by its group's size, one mean loss per step.
    Lives here, in the grader's process only: the sandbox never holds a reference."""
    model.train()
    n = len(iterator)
    losses, group = [], []
    for i, (images, labels) in enumerate(iterator):
        start = i - i % accumulation_steps
        size = min(accumulation_steps, n - start)  # the last group may be smaller
        loss = criterion(model(images.to(device)), labels.to(device))
        (loss / size).backward()
        group.append(loss.item())
        if len(group) == size:
            optimizer.step()
            optimizer.zero_grad()
            losses.append(sum(group) / size)
            group = []
    return losses


def _groups(n: int, k: int) -> list[range]:
    return [range(s, min(s + k, n)) for s in range(0, n, k)]


def _accumulation_cases(payload: list, part: str, seed: int, device) -> list[tuple[dict, dict]]:  # noqa: ANN001
    from autograder import cases

    pairs = []
    for i, (n, k) in enumerate(cases.ACCUMULATION_CASES[part]):
        ref = cases.run_train_epoch(reference_train_epoch, seed + 101 * i, n, k, device)
        pairs.append((payload[i], ref))
    return pairs


def _case(got: dict) -> str:
    return f"with {got['n']} batches and accumulation_steps={got['k']}"


def _check_returned(got: dict, expected: list[float]) -> str | None:
    returned = got["returned"]
    if returned["values"] is None:
        return f"{_case(got)} train_epoch returned a {returned['type']}, not a list of losses"
    values = returned["values"]
    if returned["length"] != len(expected):
        return f"{_case(got)} train_epoch returned {returned['length']} losses; expected {len(expected)} (one per optimizer step)"
    for j, (a, e) in enumerate(zip(values, expected)):
        if a is None or not abs(a - e) <= 1e-6 + 1e-4 * abs(e):
            shown = "not a number" if a is None else f"{a:.6g}"
            return f"{_case(got)} loss {j} you returned is {shown}; the mean of that group's batch losses is {e:.6g}"
    return None


def _judge_plain(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got, ref in _accumulation_cases(payload, "plain", seed, device):
        if got["steps"] != ref["steps"]:
            return f"{_case(got)} the optimizer stepped after batches {got['steps']}; plain training steps after every batch {ref['steps']}"
        for j, (a, e) in enumerate(zip(got["params"], ref["params"])):
            why = _difference(a, e, 1e-4, 1e-6)
            if why:
                return f"{_case(got)} parameter {j} after the epoch {why} compared with plain mini-batch training"
        problem = _check_returned(got, ref["returned"]["values"])  # same steps and weights: same losses
        if problem:
            return problem
    return None


def _judge_schedule(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got in payload:
        expected = [g[-1] + 1 for g in _groups(got["n"], got["k"])]
        if got["steps"] != expected:
            return f"{_case(got)} your optimizer stepped after batches {got['steps'] or 'none'}; expected after {expected}"
    return None


def _step_at(got: dict, batch: int) -> int | None:
    return got["steps"].index(batch) if batch in got["steps"] else None


def _judge_group_gradient(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got, ref in _accumulation_cases(payload, "group_gradient", seed, device):
        for j, batch in enumerate(ref["steps"]):
            at = _step_at(got, batch)
            if at is None:
                return f"{_case(got)} there was no optimizer step right after batch {batch}, so the update of that group could not be checked"
            for q, (a, e) in enumerate(zip(got["grads"][at], ref["grads"][j])):
                why = _difference(a, e, 1e-4, 1e-7)
                if why:
                    ratio = ""
                    if a is not None and e.abs().sum() > 0 and a.shape == e.shape:
                        ratio = f" (your gradient is {float((a * e).sum() / (e * e).sum()):.3g}x the expected one)"
                    return f"{_case(got)} at the step after batch {batch} the gradient of parameter {q} {why}{ratio}"
    return None


def _judge_partial_group(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got, ref in _accumulation_cases(payload, "partial_group", seed, device):
        n = got["n"]
        at = _step_at(got, n)
        if at is None or at != len(got["steps"]) - 1:
            return f"{_case(got)} the last {n % got['k']} batch(es) form a partial group, but there was no final optimizer step after batch {n}"
        for q, (a, e) in enumerate(zip(got["grads"][at], ref["grads"][-1])):
            why = _difference(a, e, 1e-4, 1e-7)
            if why:
                return f"{_case(got)} the final partial group's gradient of parameter {q} {why} (it should be the gradient of the mean of that group's batch losses)"
    return None


def _replayed_losses(got: dict, seed: int, device) -> list[float]:  # noqa: ANN001
    """Each batch's loss at the weights the student's run had when it took that batch.

    Rebuilt here from the initial weights and the recorded steps (SGD with the recorded
    gradients), never from numbers the student's process reported as losses, so the
    returned losses are judged against values the solution cannot tamper with."""
    import torch
    from torch import nn

    from autograder import cases

    model = cases.tiny_model(seed, device)
    criterion = nn.CrossEntropyLoss()
    losses, applied = [], 0
    with torch.no_grad():
        for batch, (x, y) in enumerate(cases.batches(seed, got["n"]), start=1):
            losses.append(criterion(model(x.to(device)), y.to(device)).item())
            while applied < len(got["steps"]) and got["steps"][applied] <= batch:
                for p, g in zip(model.parameters(), got["grads"][applied]):
                    if isinstance(g, torch.Tensor) and g.shape == p.shape:
                        p.sub_(cases.LR_SGD * g.to(device=device, dtype=p.dtype))
                applied += 1
    return losses


def _judge_losses(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for i, got in enumerate(payload):
        seen = _replayed_losses(got, seed + 101 * i, device)
        expected = [sum(seen[j] for j in g) / len(g) for g in _groups(got["n"], got["k"])]
        problem = _check_returned(got, expected)
        if problem:
            return problem
    return None


_ACCUMULATION_JUDGES = {
    "plain": _judge_plain,
    "schedule": _judge_schedule,
    "group_gradient": _judge_group_gradient,
    "partial_group": _judge_partial_group,
    "losses": _judge_losses,
}


def _reference_adam():  # noqa: ANN202
    import torch.optim

    return torch.optim.Adam


def _compare_params(
    got: list, expected: list, where: str, rtol: float = 1.3e-6, atol: float = 1e-5
) -> str | None:
    if len(got) != len(expected):
        return f"{where}: {len(got)} parameters came back instead of {len(expected)}"
    for q, (a, e) in enumerate(zip(got, expected)):
        why = _difference(a, e, rtol, atol)
        if why:
            return f"{where}, parameter {q} {why} compared with torch.optim.Adam"
    return None


def _judge_first_step(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    ref = cases.run_first_step(_reference_adam(), seed, device)
    problem = _compare_params(payload["params"], ref["params"], "after the first step (lr=0.01)")
    if problem:
        start = cases.adam_params(seed, device)
        moved = [float((a - s.detach().cpu()).abs().max()) for a, s in zip(payload["params"], start)]
        if max(moved, default=0.0) > 0.05:
            problem += f"; your first step moved a parameter by {max(moved):.3g}, but Adam's first step is at most about lr=0.01"
    return problem


def _judge_many_steps(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    ref = cases.run_many_steps(_reference_adam(), seed, device)
    for i, (got, exp) in enumerate(zip(payload["trajectories"], ref["trajectories"])):
        hp = cases.ADAM_SETTINGS[i] or "defaults"
        for t, (g, e) in enumerate(zip(got, exp), start=1):
            problem = _compare_params(g, e, f"with {hp}, after step {t} of {cases.ADAM_STEPS}")
            if problem:
                return problem
    return None


def _judge_generator(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    ref = cases.run_generator(_reference_adam(), seed, device)
    start = [p.detach().cpu() for p in cases.tiny_model(seed, device).parameters()]
    got = payload["trajectory"]
    if got and all(_difference(a, s, 0, 0) is None for a, s in zip(got[-1], start)):
        return "given model.parameters() (a generator), your optimizer never changed the parameters"
    for t, (g, e) in enumerate(zip(got, ref["trajectory"]), start=1):
        problem = _compare_params(g, e, f"given model.parameters() (a generator), after step {t}")
        if problem:
            return problem
    return None


def _judge_zero_grad(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    if any(s != "none" for s in payload["before"]):
        return "zero_grad() before any backward() gave parameters new gradient tensors; leave missing gradients as None"
    for q, state in enumerate(payload["after"]):
        if state == "new_tensor":
            return f"zero_grad() replaced parameter {q}'s gradient with a newly allocated tensor"
        if state == "not_zeroed":
            return f"zero_grad() left parameter {q}'s gradient non-zero"
    for q, (a, e) in enumerate(zip(payload["grads"], cases.reference_grads(seed, device))):
        why = _difference(a, e, 1e-5, 1e-7)
        if why:
            return f"after zero_grad() and a new backward(), the gradient of parameter {q} {why} (old gradients were not cleared)"
    return None


def _judge_device_state(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    if payload["misplaced"]:
        return f"with float64 parameters on {device}, your optimizer keeps {payload['misplaced'][0]}"
    if payload["meta_misplaced"]:
        return (
            f"with parameters on another device (meta), your optimizer keeps {payload['meta_misplaced'][0]}"
        )
    ref = cases.run_device_state(_reference_adam(), seed, device)
    for t, (g, e) in enumerate(zip(payload["trajectory"], ref["trajectory"]), start=1):
        problem = _compare_params(
            g, e, f"with float64 parameters on {device}, after step {t}", rtol=1e-9, atol=1e-12
        )
        if problem:
            return problem + " (are m and v float64 like the parameters?)"
    return None


_ADAM_JUDGES = {
    "first_step": _judge_first_step,
    "many_steps": _judge_many_steps,
    "generator": _judge_generator,
    "zero_grad": _judge_zero_grad,
    "device_state": _judge_device_state,
}


# --------------------------------------------------------------------------- notebook side


class HiddenTestFailure(AssertionError):
    """A hidden check failed; it renders as its message and hint only (no grader code in the traceback)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return [f"\x1b[0;31mHiddenTestFailure\x1b[0m: {self.args[0]}"]


_LIVE_CACHE: dict[tuple[str, str], dict] = {}


def _solution_from_history(nb: spec.Notebook) -> str | None:
    """The latest executed cell that defines the notebook's function or class (IPython history)."""
    try:
        history = get_ipython().user_ns.get("In", [])  # type: ignore[name-defined]  # noqa: F821
    except NameError:
        return None
    for source in reversed(history[:-1]):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == nb.symbol:
                return source
    return None


def _live_verdicts(notebook: str, source: str | None) -> dict:
    key = (notebook, hashlib.sha256((source or "").encode()).hexdigest())
    if key not in _LIVE_CACHE:
        proc = subprocess.run(
            [sys.executable, "-m", "autograder.hidden"],
            input=json.dumps({"notebook": notebook, "source": source}), capture_output=True, text=True,
            timeout=START_TIMEOUT + 6 * PART_TIMEOUT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"the hidden checks could not run:\n{proc.stderr[-2000:]}")
        _LIVE_CACHE[key] = json.loads(proc.stdout)
    return _LIVE_CACHE[key]


def _wait_for_verdict(path: Path, notebook: str, part: str, wait: float) -> dict | None:
    """The grader computes verdicts while the notebook runs; wait until this part's is written."""
    deadline = time.monotonic() + wait
    while True:
        try:
            found = json.loads(path.read_text()).get(notebook, {}).get(part)
        except (OSError, ValueError):
            found = None
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def check(notebook: str, part: str) -> None:
    """The hidden test of one graded part: silent success (one line), or a HiddenTestFailure with a hint."""
    nb = spec.notebook(notebook)
    nb.part(part)  # a clear KeyError for a typo in a test cell
    path = os.environ.get("AUTOGRADER_VERDICTS")
    if path:
        result = _wait_for_verdict(
            Path(path), notebook, part, float(os.environ.get("AUTOGRADER_WAIT", "300"))
        )
        if result is None:
            result = verdict(part, "error", "no verdict was recorded for this part", hint=nb.part(part).hint)
    else:
        result = _live_verdicts(notebook, _solution_from_history(nb))[part]
    where = f" on {result['device']}" if result.get("device") else ""
    if result["passed"]:
        print(f"hidden check {notebook}/{part} passed{where}")
        return
    text = f"hidden check {notebook}/{part} {result['status']}{where}: {result['message']}"
    if result.get("hint"):
        text += f"\nHint: {result['hint']}"
    raise HiddenTestFailure(text)


def main() -> None:
    """``python -m autograder.hidden``: JSON {notebook, source} on stdin -> verdicts on stdout."""
    request = json.loads(sys.stdin.read())
    print(json.dumps(run_checks(request["notebook"], request.get("source"))))


if __name__ == "__main__":
    main()
