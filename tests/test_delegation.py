"""Delegation to torch's own Adam, judged by what runs (issue 19, point 4).

Each road in :mod:`tests.fixtures.delegation` earned adam 5/5 before: a fresh copy of
``torch.optim.adam`` compiled from torch's file, the same module's cached bytecode,
``SparseAdam`` (and its functional form) on sparse gradients that keep every index, and the
fused kernel called after undoing every tripwire the process could reach. Each now earns
0/5; an Adam that does its own maths with torch's ``_foreach_*`` ops keeps 5/5.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import checks, jail, sandbox
from tests.fixtures import delegation, solutions

pytestmark = pytest.mark.slow

# How each road ends: torch's Adam raised a tripwire, or the cached bytecode is not there to load.
EXPECTED = {
    "recompiled_copy": "disallowed",
    "cached_bytecode": "error",
    "sparse_adam": "disallowed",
    "functional_sparse_adam": "disallowed",
    "fused_untripped": "disallowed",
}


def _adam_verdicts(source: str) -> dict:
    return checks.run_checks({"adam": source}, device="cpu")["adam"]


@pytest.mark.parametrize("road", delegation.ROADS)
def test_every_road_to_torch_adam_earns_nothing(road: str) -> None:
    verdicts = _adam_verdicts(delegation.source(road))
    summary = {part: (v.status, v.message[:200]) for part, v in verdicts.items()}
    assert len(verdicts) == 5, summary
    assert all(v.status == EXPECTED[road] for v in verdicts.values()), summary
    if EXPECTED[road] == "disallowed":
        assert all("torch" in v.message or "fused" in v.message for v in verdicts.values()), summary


@pytest.mark.parametrize("name", ["foreach_own_maths", "optimizer_subclass"])
def test_own_maths_keeps_full_marks(name: str) -> None:
    source = solutions.ADAM_SUBCLASS if name == "optimizer_subclass" else delegation.source(name)
    verdicts = _adam_verdicts(source)
    assert {p: v.status for p, v in verdicts.items()} == dict.fromkeys(verdicts, "passed"), {
        p: v.message for p, v in verdicts.items()
    }
    assert len(verdicts) == 5


PROBE = """\
import importlib.util, json, sys
import torch, torch.optim, torch.optim._functional
found = {}
for name in ("adam", "adamw", "sparse_adam", "_functional"):
    origin = importlib.util.find_spec("torch.optim." + name).origin
    text = open(origin).read()
    cached = open(importlib.util.cache_from_source(origin), "rb").read()
    found[name] = {"maths": "exp_avg_sq" in text and "sqrt" in text, "cached_bytes": len(cached)}
raised = {}
p = torch.zeros(2, requires_grad=True)
for name in ("Adam", "AdamW", "SparseAdam"):
    try:
        getattr(torch.optim, name)([p])
        raised[name] = None
    except RuntimeError as exc:
        raised[name] = str(exc)
try:
    torch.optim._functional.sparse_adam([], [], [], [], [], eps=1e-8, beta1=0.9, beta2=0.99, lr=0.1, maximize=False)
except RuntimeError as exc:
    raised["sparse_adam"] = str(exc)
sgd = torch.optim.SGD([p], lr=0.1)  # the rest of torch.optim works
p.grad = torch.ones(2)
sgd.step()
print(json.dumps({"found": found, "raised": raised, "sgd": p.tolist(), "tripped": sys.autograder_tripped}))
"""


def test_torch_adam_source_is_not_in_the_checking_jail(tmp_path: Path) -> None:
    cell = jail.Jail(jail.new_scratch("probe"))
    cell.overlays = sandbox.torch_adam_stubs(cell.scratch / ".torch-adam")
    try:
        proc = subprocess.run(
            cell.command([sys.executable, "-I", "-c", PROBE]), capture_output=True, text=True, timeout=120
        )
    finally:
        cell.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["found"] == dict.fromkeys(seen["found"], {"maths": False, "cached_bytes": 0}), seen
    assert all(message and "not allowed" in message for message in seen["raised"].values()), seen
    assert set(seen["raised"]) == {"Adam", "AdamW", "SparseAdam", "sparse_adam"}
    assert seen["sgd"] == pytest.approx([-0.1, -0.1])
    assert len(seen["tripped"]) == 4
    # outside the jail, torch's files are untouched (the judge's reference is the real torch.optim.Adam)
    import importlib.util

    assert "exp_avg_sq" in Path(importlib.util.find_spec("torch.optim.adam").origin).read_text()
    assert not cell.scratch.exists()


UNDO = """\
import gc, json, sys
import torch
from autograder import sandbox

sandbox.install_tripwires(torch)
tries = {}
for obj in gc.get_objects():  # every Python-side registration that could be destroyed
    if type(obj).__name__ == "Library" and obj.ns == "aten":
        obj._destroy()
gc.collect()
kernel = torch._C._dispatch_get_computed_kernel_for_dispatch_key("aten::_fused_adam_", "CPU")
args = lambda: ([torch.zeros(3)], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [], [torch.ones(())])
kwargs = dict(lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
ways = {
    "torch": lambda: torch._fused_adam_(*args(), **kwargs),
    "ops": lambda: torch.ops.aten._fused_adamw_.default(*args(), **kwargs),
    "functional": lambda: torch.ops.aten._fused_adam.default(*args(), **kwargs),
    "_C": lambda: torch._C._VariableFunctions._fused_adamw_(*args(), **kwargs),
    "boxed": lambda: torch._C._dispatch_call_boxed(
        torch._C._dispatch_find_schema_or_throw("aten::_fused_adam_", ""), *args(), **kwargs),
    "computed kernel": lambda: kernel.call_boxed(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args(), **kwargs),
}
for name, way in ways.items():
    try:
        way()
        tries[name] = "ran"
    except RuntimeError as exc:
        tries[name] = "fused Adam" in str(exc)
p = [torch.ones(3)]
torch._foreach_mul_(p, 2.0)
torch._foreach_addcmul_(p, p, p, value=0.5)
print(json.dumps({"tries": tries, "foreach": p[0].tolist()}))
"""


def test_the_fused_kernel_tripwire_cannot_be_taken_back() -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", UNDO], capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["tries"] == dict.fromkeys(seen["tries"], True), seen
    assert seen["foreach"] == [4.0, 4.0, 4.0]  # generic element-wise kernels still run
