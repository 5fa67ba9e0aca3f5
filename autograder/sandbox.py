"""The child process that runs a student's solution cell for the hidden checks.

``python -m autograder.sandbox`` reads one JSON request on stdin and answers one JSON line
per event on its original stdout. It never sees an expected value: it only runs the
student's code on inputs drawn from the grade-time seed and reports what that code did.
The grader (:mod:`autograder.hidden`) builds the same inputs, runs the reference in its
own clean process and compares. So patching ``torch.testing.assert_close``,
``torch.allclose`` or ``torch.optim`` in the solution changes nothing that is judged.

Before the student's code runs, this process

* sends the student's prints to /dev/null (the result channel is a private copy of stdout);
* replaces ``torch.optim.Adam`` and its functional and fused kernels with tripwires
  (Adam notebook), so a class that wraps them fails loudly;
* installs an audit hook (it cannot be removed) that refuses to open or list files of the
  course, the grader or the submissions, to start processes, to use sockets, to send
  signals and to re-execute ``torch.optim`` or grader modules. Every
  refusal is reported with the results, and a part with a refusal fails.
"""

from __future__ import annotations

import base64
import io
import json
import linecache
import os
import sys
import traceback


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _metadata(path: str) -> bool:
    """Package metadata (entry points), which torch itself reads lazily."""
    return any(part.endswith((".egg-info", ".dist-info")) for part in path.split(os.sep))


def _install_audit_hook(protected: list[str], allowed: list[str], current: list[list[str]]) -> list[bool]:
    """Arm-able audit hook; refusals are appended to ``current[0]`` (the running notebook's list)."""
    armed = [False]
    forbidden_events = {
        "subprocess.Popen": "starting a process",
        "os.system": "starting a process",
        "os.exec": "starting a process",
        "os.posix_spawn": "starting a process",
        "os.spawn": "starting a process",
        "os.fork": "forking",
        "os.forkpty": "forking",
        "pty.spawn": "starting a process",
        "socket.connect": "network access",
        "socket.bind": "network access",
        "os.kill": "sending a signal",
        "os.killpg": "sending a signal",
        "signal.pthread_kill": "sending a signal",
    }

    def deny(what: str) -> None:
        msg = f"not allowed while grading: {what}"
        violations = current[0]
        if len(violations) < 20 and msg not in violations:
            violations.append(msg)
        raise PermissionError(msg)

    def real(path: object) -> str | None:
        if isinstance(path, int):
            return None
        try:
            return os.path.realpath(os.fsdecode(path))
        except Exception:
            return None

    def hook(event: str, args: tuple) -> None:
        if not armed[0]:
            return
        if event == "open":
            path = real(args[0]) if args else None
            if path and _under(path, protected) and not _under(path, allowed) and not _metadata(path):
                deny(f"opening {path}")
        elif event in ("os.listdir", "os.scandir"):
            path = real(args[0] if args and args[0] is not None else ".")
            if path and _under(path, protected) and not _under(path, allowed):
                deny(f"listing {path}")
        elif event in forbidden_events:
            deny(f"{forbidden_events[event]} ({event})")
        elif event == "exec":
            filename = getattr(args[0], "co_filename", "") if args else ""
            path = real(filename) or ""
            if f"{os.sep}torch{os.sep}optim{os.sep}" in path or (
                _under(path, protected) and not _under(path, allowed)
            ):
                deny(f"re-executing {filename}")
        elif event == "import" and args and str(args[0]).split(".")[0] == "autograder":
            deny("importing the autograder")

    sys.addaudithook(hook)
    return armed


def _install_tripwires(torch, tripped: list[str]) -> None:  # noqa: ANN001
    """Make torch.optim's Adam (class, functional and fused kernels) raise when the student's class uses it."""
    import torch.optim._functional as functional
    import torch.optim.adam as adam_module
    import torch.optim.adamw as adamw_module

    def tripwire(name: str):  # noqa: ANN202
        def trip(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if len(tripped) < 10_000:
                tripped.append(name)
            raise RuntimeError(f"{name} is not allowed in the lab's Adam: implement the update yourself")

        return trip

    targets = [
        (torch.optim, "Adam"),
        (torch.optim, "AdamW"),
        (adam_module, "Adam"),
        (adam_module, "adam"),
        (adam_module, "_single_tensor_adam"),
        (adam_module, "_multi_tensor_adam"),
        (adam_module, "_fused_adam"),
        (adamw_module, "AdamW"),
        (functional, "adam"),
        (torch, "_fused_adam_"),
        (torch, "_fused_adamw_"),
    ]
    for module, name in targets:
        if hasattr(module, name):
            setattr(module, name, tripwire(f"{getattr(module, '__name__', 'torch')}.{name}"))


def _describe(exc: BaseException, filename: str) -> str:
    """The exception and the solution-cell lines it went through (no grader frames)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    lines = [f"  line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in frames[-4:]]
    text = f"{type(exc).__name__}: {exc}"[:600]
    return "\n".join([text] + (["in your solution cell:"] + lines if lines else []))


def _warm_up(torch, cases, device) -> None:  # noqa: ANN001
    """Load every library the checks use (CUDA, cuBLAS, autograd, meta tensors) before the hook is armed."""
    model = cases.tiny_model(0, device)
    ((x, y),) = cases.batches(0, 1)
    torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
    for dtype in (torch.float32, torch.float64):
        t = torch.ones(3, device=device, dtype=dtype)
        t.mul_(0.9).add_(t, alpha=0.1).addcmul_(t, t, value=0.1).div(2).sqrt().add(1e-8).sub_(t).zero_()
    torch.zeros(2).to("meta").add_(1).sqrt()


def _limit_memory(device: str) -> None:
    """Cap the address space on CPU-only runs (CUDA reserves huge virtual ranges), so a runaway
    allocation fails as a MemoryError in the student's part instead of exhausting the machine."""
    if device != "cpu":
        return
    try:
        import resource

        limit = 8 * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass


def main() -> None:
    request = json.loads(sys.stdin.read())
    sys.stdin.close()
    _limit_memory(request["device"])
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the result channel, before stdout goes away
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

    def emit(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    import math  # noqa: F401 - preloaded: the solution may import them after the audit hook is armed

    import numpy  # noqa: F401
    import torch
    import torch.nn.functional  # noqa: F401
    import tqdm  # noqa: F401
    import tqdm.auto  # noqa: F401

    from autograder import cases

    torch.set_num_threads(max(1, int(request.get("threads", 1))))
    device = torch.device(request["device"])
    _warm_up(torch, cases, device)
    save = torch.save

    seed = int(request["seed"])
    jobs = request["jobs"]  # {notebook: {"symbol", "prelude", "source"}}
    compiled = {}
    for name, job in jobs.items():
        filename = f"<{name} solution cell>"
        linecache.cache[filename] = (len(job["source"]), None, job["source"].splitlines(True), filename)
        compiled[name] = (
            compile(job["prelude"], "<prelude>", "exec"),
            compile(job["source"], filename, "exec"),
        )

    drivers = {
        "accumulation": lambda part, fn: [
            cases.run_train_epoch(fn, seed + 101 * i, n, k, device)
            for i, (n, k) in enumerate(cases.ACCUMULATION_CASES[part])
        ],
        "adam": lambda part, fn: {
            "first_step": cases.run_first_step,
            "many_steps": cases.run_many_steps,
            "generator": cases.run_generator,
            "zero_grad": cases.run_zero_grad,
            "device_state": cases.run_device_state,
        }[part](fn, seed, device),
    }

    # One notebook's refusals and tripwires must not count against another's parts.
    violations: dict[str, list[str]] = {name: [] for name in jobs}
    tripped: list[str] = []
    current: list[list[str]] = [[]]
    allowed = [os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    allowed += [os.path.realpath(p) for p in request.get("allowed", [])]
    protected = [os.path.realpath(p) for p in request.get("protected", [])]
    armed = _install_audit_hook(protected, allowed, current)

    for key in request["parts"]:
        name, part = key.split(":", 1)
        if name == "adam" and not tripped:
            _install_tripwires(torch, tripped)  # stays from here on; Adam's parts run last
            tripped.append("")  # marker: installed (empty entries are not reported)
        emit({"part": key, "event": "start"})
        current[0] = violations[name]
        prelude, code = compiled[name]
        filename = f"<{name} solution cell>"
        symbol = jobs[name]["symbol"]
        result: dict = {"ok": False, "error": None, "setup_error": None}
        namespace: dict = {"__name__": "__solution__", "__builtins__": __builtins__}
        used = len(tripped)
        armed[0] = True
        try:
            exec(prelude, namespace)
            try:
                exec(code, namespace)
            except BaseException as exc:  # top-level code may fail after the definition we need
                armed[0] = False
                result["setup_error"] = _describe(exc, filename)
                armed[0] = True
            fn = namespace.get(symbol)
            if fn is None:
                result["error"] = f"the solution cell does not define {symbol}" + (
                    f" (it raised {result['setup_error']})" if result["setup_error"] else ""
                )
            else:
                payload = drivers[name](part, fn)
                result.update(ok=True, payload=payload)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt and friends included
            armed[0] = False  # formatting the traceback reads grader files
            result["error"] = _describe(exc, filename)
        finally:
            armed[0] = False
        result["violations"] = list(violations[name])
        result["tripped"] = [t for t in tripped[used:] if t] if name == "adam" else []
        buffer = io.BytesIO()
        try:
            save(result, buffer)
        except Exception as exc:
            buffer = io.BytesIO()
            save({"ok": False, "error": f"the results could not be recorded: {exc}",
                  "violations": result["violations"], "tripped": result["tripped"]}, buffer)  # fmt: skip
        emit({"part": key, "event": "done", "data": base64.b64encode(buffer.getvalue()).decode()})
    emit({"event": "end"})
    out.close()
    os._exit(0)  # skip interpreter teardown: student objects' __del__ must not run unguarded


if __name__ == "__main__":
    main()
