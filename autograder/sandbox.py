"""The hidden-check runner. It runs inside the jail, never on the grader's side.

:mod:`autograder.checks` sends this file's source and :mod:`autograder.cases`'s over
stdin (the jail holds no grader file), with one request: the solution cells, the parts
to run, the seed and the device. For each part it runs the student's code on inputs
drawn from the seed and answers one JSON line: what the code did, as plain tensors and
numbers. It never holds an expected value; the grader compares outside the jail.

Before the Adam notebook's parts, every way into torch's own Adam is turned into a
tripwire, judged by what runs and not by how the source spells it: the classes and
functions of ``torch.optim.adam``/``adamw`` (whatever name or module they are reached
through, their code objects are replaced) and the ``_fused_adam*`` and ``_foreach_*``
kernels (their CPU, CUDA and meta implementations are replaced in the dispatcher, so
``torch.ops.aten``, ``torch._C`` and ``getattr`` spellings all land on them). A subclass
of ``torch.optim.Optimizer`` that does its own maths never touches them.
"""

from __future__ import annotations

import base64
import io
import json
import linecache
import os
import sys
import traceback

TRIP_MESSAGE = (
    "torch's own Adam ({}) is not allowed in the lab's Adam: write the update with ordinary tensor operations"
)


def _trip_code(name: str):  # noqa: ANN202 - a code object with no globals or free variables
    source = (
        "def trip(*args, **kwargs):\n"
        "    import sys\n"
        f"    sys.autograder_tripped = getattr(sys, 'autograder_tripped', []) + [{name!r}]\n"
        f"    raise RuntimeError({TRIP_MESSAGE.format(name)!r})\n"
    )
    namespace: dict = {}
    exec(compile(source, "<tripwire>", "exec"), namespace)
    return namespace["trip"]


def install_tripwires(torch) -> None:  # noqa: ANN001
    """Make every road into torch's Adam raise (and be recorded in ``sys.autograder_tripped``)."""
    import torch.optim._functional as functional
    import torch.optim.adam as adam_module
    import torch.optim.adamw as adamw_module

    for module in (adam_module, adamw_module):
        for name, value in list(vars(module).items()):
            owners = [value] if isinstance(value, type) and value.__module__ == module.__name__ else []
            for owner in owners:  # Adam, AdamW: every method they define
                for attr, member in list(vars(owner).items()):
                    if callable(member) and not attr.startswith("__class"):
                        _disarm(owner, attr, member, f"{owner.__name__}.{attr}")
            if callable(value) and getattr(value, "__module__", "") == module.__name__ and not owners:
                _disarm(module, name, value, f"{module.__name__}.{name}")
    for name in ("adam", "adamw"):
        if hasattr(functional, name):
            setattr(functional, name, _trip_code(f"torch.optim._functional.{name}"))
    library = torch.library.Library("aten", "IMPL")  # noqa: F841 - kept alive by the module below
    kernel = _trip_code("a fused or _foreach_ kernel")
    keys = ["CPU", "Meta"] + (["CUDA"] if torch.cuda.is_available() else [])
    for op in torch._C._dispatch_get_all_op_names():
        if op.startswith(("aten::_fused_adam", "aten::_foreach_")):
            for key in keys:
                try:
                    library.impl(op.split("::", 1)[1], kernel, key)
                except Exception:  # an overload without a kernel for this key
                    pass
    sys.modules["torch"].__dict__.setdefault("_autograder_tripwires", []).append(library)


def _disarm(owner, attr: str, member, label: str) -> None:  # noqa: ANN001
    trip = _trip_code(label)
    function = getattr(member, "__func__", member)
    code = getattr(function, "__code__", None)
    if code is not None and not code.co_freevars:
        function.__code__ = trip.__code__  # every reference to this function now trips
    try:
        setattr(owner, attr, trip)
    except (AttributeError, TypeError):
        pass


def tripped() -> list[str]:
    return list(getattr(sys, "autograder_tripped", []))


def _describe(exc: BaseException, filename: str) -> str:
    """The exception and the solution-cell lines it went through (no harness frames)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    lines = [f"  line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in frames[-4:]]
    text = f"{type(exc).__name__}: {exc}"[:600]
    return "\n".join([text] + (["in your solution cell:"] + lines if lines else []))


def _warm_up(torch, cases, device) -> None:  # noqa: ANN001
    """Load what the checks use (CUDA, autograd, meta tensors) before any student code runs."""
    model = cases.tiny_model(0, device)
    ((x, y),) = cases.batches(0, 1)
    torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
    torch.zeros(2).to("meta").add_(1).sqrt()


def _run_part(job: dict, name: str, drive) -> dict:  # noqa: ANN001 - drive(fn) runs the part's cases
    """Define the solution in a fresh namespace and run one part's cases on it; what happened."""
    filename = f"<{name} solution cell>"
    linecache.cache[filename] = (len(job["source"]), None, job["source"].splitlines(True), filename)
    result: dict = {"ok": False, "error": None, "setup_error": None}
    namespace: dict = {"__name__": "__main__", "__builtins__": __builtins__}  # a __main__ guard runs too
    before = len(tripped())
    try:
        exec(compile(job["prelude"], "<prelude>", "exec"), namespace)
        try:
            exec(compile(job["source"], filename, "exec"), namespace)
        except BaseException as exc:  # top-level code may fail after the definition we need
            result["setup_error"] = _describe(exc, filename)
        fn = namespace.get(job["symbol"])
        if fn is None:
            result["error"] = f"the solution cell does not define {job['symbol']}" + (
                f" (it raised {result['setup_error']})" if result["setup_error"] else ""
            )
        else:
            result.update(ok=True, payload=drive(fn))
    except BaseException as exc:  # SystemExit, KeyboardInterrupt and MemoryError included
        result["error"] = _describe(exc, filename)
    result["tripped"] = tripped()[before:][:5]
    return result


def main(request: dict, cases) -> None:  # noqa: ANN001 - the harness module, sent with the request
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the result channel, before stdout goes away
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

    def emit(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    import torch

    device = torch.device(request["device"])
    _warm_up(torch, cases, device)
    save = torch.save
    seed = int(request["seed"])
    drivers = {
        "accumulation": lambda part, fn: [
            cases.run_train_epoch(fn, seed + 101 * i, n, k, device)
            for i, (n, k) in enumerate(cases.ACCUMULATION_CASES[part])
        ],
        "adam": lambda part, fn: cases.ADAM_DRIVERS[part](fn, seed, device),
    }
    armed = False
    for key in request["parts"]:
        name, part = key.split(":", 1)
        if name == "adam" and not armed:
            install_tripwires(torch)  # for good: the Adam parts run last
            armed = True
        emit({"part": key, "event": "start"})
        result = _run_part(request["jobs"][name], name, lambda fn: drivers[name](part, fn))  # noqa: B023
        result["tripped"] = result["tripped"] if armed else []
        buffer = io.BytesIO()
        try:
            save(result, buffer)
        except Exception as exc:
            buffer = io.BytesIO()
            save({"ok": False, "error": f"the results could not be recorded: {exc}", "tripped": result["tripped"]},
                 buffer)  # fmt: skip
        emit({"part": key, "event": "done", "data": base64.b64encode(buffer.getvalue()).decode()})
    emit({"event": "end"})
    out.close()
    os._exit(0)  # skip interpreter teardown: student objects' __del__ must not run
