"""The hidden-check runner. It runs inside the jail (only :func:`torch_adam_stubs` is the grader's).

:mod:`autograder.checks` sends this file's source and :mod:`autograder.cases`'s over
stdin (the jail holds no grader file), with one request: the solution cells, the parts
to run, the seed and the device. For each part it runs the student's code on inputs
drawn from the seed and answers one JSON line: what the code did, as plain tensors and
numbers. It never holds an expected value; the grader compares outside the jail.

No part may run torch's own Adam, whatever road leads there. Two barriers, judged by what
runs and not by how the source spells it:

* torch's Adam *source* is not in the checking jail. :func:`torch_adam_stubs` (grader side)
  writes stubs that :class:`autograder.jail.Jail` binds over ``torch/optim/adam.py``,
  ``adamw.py``, ``sparse_adam.py`` and ``_functional.py`` (there only ``sparse_adam``
  changes) and an empty file over their cached bytecode. ``torch.optim`` still imports;
  its ``Adam``, ``AdamW``, ``SparseAdam`` and their functional forms raise. Reading the
  file, recompiling it or loading its ``__pycache__`` finds only the stub.
* torch's fused Adam *kernels* (``aten::_fused_adam*``, ``_fused_adamw*``) are compiled
  into libtorch, so :func:`install_tripwires` replaces their CPU and CUDA entries in the
  dispatcher before any student code runs, through a registration no Python object
  refers to: nothing in the process can take it back (short of writing its memory).

torch's generic element-wise kernels (``torch._foreach_mul_`` and friends) are allowed:
they are ordinary tensor operations, and a student's own Adam may use them. A subclass
of ``torch.optim.Optimizer`` that does its own maths never touches either barrier.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import linecache
import os
import sys
import traceback
from pathlib import Path

TRIP_MESSAGE = (
    "torch's own Adam ({}) is not allowed in the lab's Adam: write the update with ordinary tensor operations"
)
FUSED_KERNELS = ("aten::_fused_adam", "aten::_fused_adamw")  # op-name prefixes: in-place, functional, out=


def _trip_code(name: str):
    source = (
        "def trip(*args, **kwargs):\n"
        "    import sys\n"
        f"    sys.autograder_tripped = getattr(sys, 'autograder_tripped', []) + [{name!r}]\n"
        f"    raise RuntimeError({TRIP_MESSAGE.format(name)!r})\n"
    )
    namespace: dict = {}
    exec(compile(source, "<tripwire>", "exec"), namespace)
    return namespace["trip"]


# ----------------------------------------------------------------------------- grader side: the stubs

_STUB_HEADER = '''"""{module} as the autograder's checking jail shows it: torch's own Adam is not here.

The lab's Adam does its own maths (torch's generic element-wise ops, _foreach_* included, are fine)."""

from torch.optim.optimizer import Optimizer


def _trip(name):
    def trip(*args, **kwargs):
        import sys

        sys.autograder_tripped = getattr(sys, "autograder_tripped", []) + [name]
        raise RuntimeError({message!r}.format(name))

    return trip

'''
_STUBS = {
    "adam": """
class Adam(Optimizer):
    __init__ = _trip("torch.optim.Adam")
    step = _trip("torch.optim.Adam.step")


adam = _trip("torch.optim.adam.adam")
__all__ = ["Adam", "adam"]
""",
    "adamw": """
from torch.optim.adam import Adam


class AdamW(Adam):
    __init__ = _trip("torch.optim.AdamW")
    step = _trip("torch.optim.AdamW.step")


adamw = _trip("torch.optim.adamw.adamw")
__all__ = ["AdamW", "adamw"]
""",
    "sparse_adam": """
class SparseAdam(Optimizer):
    __init__ = _trip("torch.optim.SparseAdam")
    step = _trip("torch.optim.SparseAdam.step")


__all__ = ["SparseAdam"]
""",
}


def _functional_stub(source: str) -> str:
    """torch/optim/_functional.py with its one Adam body, ``sparse_adam``, replaced by a tripwire (the
    other functional forms are imported from their modules, stubs for adam and adamw)."""
    lines = source.splitlines(keepends=True)
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == "sparse_adam":
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            lines[first : node.end_lineno] = ['sparse_adam = _trip("torch.optim._functional.sparse_adam")\n']
    header = _STUB_HEADER.format(module="torch.optim._functional", message=TRIP_MESSAGE)
    return header + "".join(lines) + 'sparse_adam = _trip("torch.optim._functional.sparse_adam")\n'


def torch_adam_stubs(folder: Path) -> dict[str, Path]:
    """Write the stubs into ``folder``; ``{path of torch's file: stub to bind over it}`` for the jail.

    Runs on the grader's side, without importing torch. The cached bytecode of each stubbed
    module (``__pycache__/adam.*.pyc``) gets an empty file, which Python rejects and recompiles
    from the stub."""
    import importlib.util

    optim = Path(importlib.util.find_spec("torch").submodule_search_locations[0]).resolve() / "optim"
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.pyc"
    empty.write_bytes(b"")
    texts = {
        name: _STUB_HEADER.format(module=f"torch.optim.{name}", message=TRIP_MESSAGE) + body
        for name, body in _STUBS.items()
    }
    texts["_functional"] = _functional_stub((optim / "_functional.py").read_text())
    overlays: dict[str, Path] = {}
    for name, text in texts.items():
        (folder / f"{name}.py").write_text(text)
        overlays[str(optim / f"{name}.py")] = folder / f"{name}.py"
        for cached in sorted((optim / "__pycache__").glob(f"{name}.*.pyc")):
            overlays[str(cached)] = empty
    return overlays


# ----------------------------------------------------------------------------- inside the jail: tripwires


def install_tripwires(torch) -> None:
    """Make every road into torch's Adam that the process holds raise (and be recorded in
    ``sys.autograder_tripped``): the fused kernels always, and, where the jail could not hide torch's
    Adam source (grading ``--unconfined``), the functions and methods of its modules as well."""
    import ctypes

    import torch.optim._functional as functional
    import torch.optim.adam as adam_module
    import torch.optim.adamw as adamw_module
    import torch.optim.sparse_adam as sparse_adam_module

    for module in (adam_module, adamw_module, sparse_adam_module):
        for name, value in list(vars(module).items()):
            owners = [value] if isinstance(value, type) and value.__module__ == module.__name__ else []
            for owner in owners:  # Adam, AdamW, SparseAdam: every method they define
                for attr, member in list(vars(owner).items()):
                    if callable(member) and not attr.startswith("__class"):
                        _disarm(owner, attr, member, f"{owner.__name__}.{attr}")
            if callable(value) and getattr(value, "__module__", "") == module.__name__ and not owners:
                _disarm(module, name, value, f"{module.__name__}.{name}")
    for name in ("adam", "adamw", "sparse_adam"):
        if hasattr(functional, name):
            setattr(functional, name, _trip_code(f"torch.optim._functional.{name}"))
    # The fused kernels: a raw dispatcher registration, kept alive by one leaked reference and by
    # nothing else. torch.library.Library would leave a Python object that gc can find and destroy.
    registration = torch._C._dispatch_library("IMPL", "aten", "", "<tripwire>", 0)
    kernel = _trip_code("a fused Adam kernel")
    for op in torch._C._dispatch_get_all_op_names():
        if op.startswith(FUSED_KERNELS):
            for key in ("CPU", "CUDA"):
                try:
                    registration.impl(op.split("::", 1)[1], key, kernel, False)
                except Exception:  # an overload without a kernel for this key
                    pass
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(registration))


def _disarm(owner, attr: str, member, label: str) -> None:
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


def _warm_up(torch, cases, device) -> None:
    """Load what the checks use (CUDA, autograd, meta tensors) before any student code runs."""
    model = cases.tiny_model(0, device)
    ((x, y),) = cases.batches(0, 1)
    torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
    torch.zeros(2).to("meta").add_(1).sqrt()


def _run_part(job: dict, name: str, drive) -> dict:
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


def main(request: dict, cases) -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the result channel, before stdout goes away
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")

    def emit(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    import torch

    device = torch.device(request["device"])
    _warm_up(torch, cases, device)
    install_tripwires(torch)  # before any student code, so that none can keep a way past them
    save = torch.save
    seed = int(request["seed"])
    armed = False
    for key in request["parts"]:  # "notebook:part", with its driver in cases and the driver's arguments
        name = key.split(":", 1)[0]
        job = request["jobs"][name]
        armed = armed or bool(job.get("guarded"))  # trips are reported from the guarded notebook on
        emit({"part": key, "event": "start"})
        driver, kwargs = request["drivers"][key]
        result = _run_part(job, name, lambda fn: getattr(cases, driver)(fn, seed, device, **kwargs))  # noqa: B023
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
