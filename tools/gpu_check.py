"""``make gpu-check``: every CUDA path of the course, run once on a machine with an NVIDIA GPU.

No GPU has checked these yet; CI has none. On a machine with one this runs, in under 10 minutes:

1. the jail with CUDA: a jailed process sees ``/dev/nvidia*`` and computes on the GPU, under the memory
   cgroup (with CUDA the jail limits memory with a cgroup, not RLIMIT_DATA, whose virtual reservations
   CUDA would exceed at once), and a jailed CUDA process that takes more host memory than its limit is
   stopped;
2. the hidden checks on CUDA: the lab's reference solutions pass every part on ``cuda``, and an Adam that
   keeps its state on the CPU fails ``device_state`` there (it passes on a CPU-only grader);
3. parity on CUDA: the tests that compare against ``torch.optim`` on every device (tests/test_testing.py)
   and the hidden checks' test of the reference solutions (tests/test_autograder.py), with CUDA present;
4. the fast data pipeline on the GPU: its batches are CUDA tensors, one epoch timed;
5. the GPU benchmark: benchmarks/bench_data.py (classic vs fast pipeline on this device).

It prints one table, writes it with the benchmark's section to ``build/gpu-check.md`` (to be copied into
benchmarks/RESULTS.md and the README by whoever ran it), and exits 0 when every check passed, 1 when one
failed, 2 when there is no GPU here (nothing checked).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "gpu-check.md"
PYTEST_TIMEOUT = 300  # seconds for the parity tests (about two minutes on a GPU machine)
BUDGET = 540  # seconds: a check that would start later is skipped, so the whole run stays under 10 minutes

JAIL_PROBE = """
import glob, json, torch
x = torch.randn(512, 512, device="cuda")
print(json.dumps({"devices": sorted(glob.glob("/dev/nvidia*")), "cuda": torch.cuda.is_available(),
                  "name": torch.cuda.get_device_name(0), "sum": float((x @ x).sum().item())}))
"""
JAIL_HOARD = """
import torch
torch.ones(1, device="cuda")  # a CUDA context first: its large virtual reservations must not count
hoard = [bytearray(2**27) for _ in range(64)]  # 8 GiB of host memory, past the 1 GiB limit
print("not stopped")
"""


def _jail_run(
    code: str, memory_bytes: int | None = None, timeout: float = 300
) -> tuple[int, str, list[str], bool]:
    """Run ``code`` in a jail; (exit code, stdout, limits hit, whether a memory cgroup was used)."""
    from autograder import jail, settings

    limits = settings.Limits() if memory_bytes is None else settings.Limits(memory_bytes=memory_bytes)
    cell = jail.Jail(jail.new_scratch("gpu-check"), limits=limits)
    try:
        proc = subprocess.run(cell.command([sys.executable, "-c", code]), capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        return (
            proc.returncode,
            proc.stdout + proc.stderr[-2000:],
            cell.limits_hit(),
            "memory" in cell.cgroups.folders,
        )
    finally:
        cell.close()


def check_jail() -> str:
    code, out, hits, cgroup = _jail_run(JAIL_PROBE)
    assert code == 0, f"the jailed CUDA process failed ({code}, limits hit: {hits}):\n{out}"
    found = json.loads(out.strip().splitlines()[-1])
    assert found["cuda"] and found["devices"], found
    assert cgroup, "no memory cgroup: with /dev/nvidia* the jail cannot limit a CUDA process's memory"
    return f"{found['name']}; {len(found['devices'])} /dev/nvidia* inside; memory cgroup in use"


def check_jail_memory() -> str:
    code, out, hits, _ = _jail_run(JAIL_HOARD, memory_bytes=2**30)
    assert "not stopped" not in out, f"a jailed CUDA process took 8 GiB under a 1 GiB limit: {out}"
    assert code != 0, out
    return f"8 GiB hoard under a 1 GiB limit stopped (exit {code}, limits hit: {', '.join(hits) or 'none reported'})"


def check_hidden() -> str:
    sys.path.insert(0, str(ROOT))
    from autograder import checks, spec
    from tests.fixtures import solutions

    correct = {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM}
    verdicts = checks.run_checks(correct, device="cuda")
    wrong = {
        name: {p: v.status for p, v in parts.items() if not v.passed} for name, parts in verdicts.items()
    }
    assert not any(wrong.values()), f"the reference solutions failed on CUDA: {wrong}"
    devices = {v.device for parts in verdicts.values() for v in parts.values()}
    assert all(d.startswith("cuda") for d in devices), devices
    on_cpu = solutions.ADAM_MISTAKES["state_on_cpu"][0]
    caught = checks.run_checks({"adam": on_cpu}, device="cuda")["adam"]
    assert not caught["device_state"].passed, "state kept on the CPU passed device_state on CUDA"
    parts = sum(len(spec.notebook(n).parts) for n in correct)
    return f"{parts} parts passed on {sorted(devices)[0]}; state on the CPU fails device_state"


def check_parity() -> str:
    tests = ["tests/test_testing.py", "tests/test_autograder.py::test_correct_solution_passes_every_part",
             "tests/test_data.py::test_fast_pipeline_lives_on_the_gpu"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                          capture_output=True, text=True, timeout=PYTEST_TIMEOUT)  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    assert proc.returncode == 0 and "skipped" not in summary, proc.stdout[-3000:]
    return summary


def check_pipeline() -> str:
    import torch

    from course_utils.data import get_dataloaders

    train, _, _ = get_dataloaders(device="cuda")
    start = time.perf_counter()
    n = 0
    for x, y in train:
        assert x.is_cuda and y.is_cuda, (x.device, y.device)
        n += len(x)
    torch.cuda.synchronize()
    return f"{n} training images, augmented, on cuda in {time.perf_counter() - start:.2f} s"


def check_benchmark() -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_data

    section = bench_data.run()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    (OUT.parent / "gpu-check-bench_data.md").write_text(section)
    ratio = next((line for line in section.splitlines() if "faster than classic" in line), "").strip("* ")
    return ratio or "see build/gpu-check-bench_data.md"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("jail: CUDA inside, memory cgroup", check_jail),
    ("jail: CUDA process past its memory limit", check_jail_memory),
    ("hidden checks on cuda", check_hidden),
    ("parity tests with CUDA present", check_parity),
    ("fast pipeline on the GPU", check_pipeline),
    ("benchmark: data pipeline on the GPU", check_benchmark),
]


def gpu() -> str | None:
    """The GPU's name, or None when CUDA or /dev/nvidia* is missing."""
    import torch

    if not torch.cuda.is_available() or not list(Path("/dev").glob("nvidia*")):
        return None
    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", help="run only the checks whose name contains one of these words"
    )
    args = parser.parse_args(argv)
    device = gpu()
    if device is None:
        print("NO GPU: torch.cuda.is_available() is False or /dev/nvidia* is missing on this machine.")
        print(
            "Nothing was checked; every CUDA path of the course stays UNVERIFIED. Run `make gpu-check` on a"
        )
        print("machine with an NVIDIA GPU and its driver.")
        return 2
    rows = []
    started = time.monotonic()
    for name, check in CHECKS:
        if args.only and not any(word in name for word in args.only):
            continue
        if time.monotonic() - started > BUDGET:
            rows.append((name, "SKIP", 0.0, f"not started: past the {BUDGET} s budget"))
            continue
        print(f"== {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            result, detail = "PASS", check()
        except Exception as exc:  # every check runs; the table says which failed and why
            result, detail = "FAIL", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        rows.append((name, result, time.monotonic() - t0, " ".join(detail.split())[:300]))
    lines = [
        f"## GPU check: {device}\n",
        "| check | result | seconds | detail |",
        "| --- | --- | ---: | --- |",
        *(f"| {n} | {r} | {s:.1f} | {d.replace('|', '/')} |" for n, r, s, d in rows),
        f"\nTotal {time.monotonic() - started:.0f} s.",
    ]
    table = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(table)
    print("\n" + table + f"(written to {OUT.relative_to(ROOT)})")
    return 0 if all(r == "PASS" for _, r, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
