"""Shared fixtures. MNIST comes from the course's cache (fetched by `make test` before pytest runs).

A test course (scratch copy, release, answers, nbgrader runs) is built with :mod:`tests.fixtures.course`.
Every test module is checked for processes it leaves behind (kernels, Dask, jails) and for course or
grader variables it leaves set in ``os.environ``: see :func:`_no_process_outlives_its_module` and
:func:`_no_setting_outlives_its_module`.
"""

import os

import matplotlib
import psutil
import pytest
import torch

matplotlib.use("Agg")  # tests draw figures without a screen

# Python's own helpers, started once on first use and meant to live as long as the interpreter.
LONG_LIVED = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
EXIT_GRACE = 30.0  # seconds a module's processes get to finish shutting down (generous: CI is busy)
SETTINGS_PREFIXES = ("AUTOGRADER_", "COURSE_", "NBGRADER")  # variables the course's code reads


@pytest.fixture(autouse=True)
def _normal_mode(monkeypatch):
    """Tests start in normal (not fast) mode unless they opt in with the ``fast_mode`` fixture."""
    monkeypatch.delenv("COURSE_FAST", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture
def fast_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")


@pytest.fixture(scope="session")
def mnist_dir():
    from course_utils.data import ensure_mnist

    return ensure_mnist()


@pytest.fixture(scope="session", autouse=True)
def _threads():
    # two OpenMP threads on the CI machine; don't oversubscribe when helpers run in parallel
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def _descendants() -> dict[int, psutil.Process]:
    """This pytest process's living descendants (zombies and Python's own helpers left out)."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or any(
                n in " ".join(proc.cmdline()) for n in LONG_LIVED
            ):
                continue
            found[proc.pid] = proc
        except psutil.Error:  # ended while we looked
            continue
    return found


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:300]}"
    except psutil.Error:
        return f"pid {proc.pid} (ended)"


@pytest.fixture(scope="module", autouse=True)
def _no_process_outlives_its_module(request):
    """Fail the module if a process it started (a kernel, a Dask worker, a jail) is still running after it.

    Runs after the module's own fixtures are torn down. A leaked process is killed, so that one leak
    does not cost the rest of the suite its memory, and reported as an error of the module's last test.
    """
    before = set(_descendants())
    yield
    left = [p for pid, p in _descendants().items() if pid not in before]
    _, alive = psutil.wait_procs(left, timeout=EXIT_GRACE) if left else ([], [])
    if not alive:
        return
    lines = [_describe(p) for p in alive]
    for proc in alive:
        try:
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
        except psutil.Error:
            pass
    pytest.fail(
        f"{request.module.__name__} left {len(alive)} process(es) running (now killed):\n  "
        + "\n  ".join(lines),
        pytrace=False,
    )


@pytest.fixture(scope="module", autouse=True)
def _no_setting_outlives_its_module(request):
    """Fail the module if it leaves a course or grader variable changed in os.environ (use monkeypatch)."""
    before = {k: v for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIXES)}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIXES)}
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        for key in changed:  # restored, so that the rest of the suite runs as it would alone
            if key in before:
                os.environ[key] = before[key]
            else:
                os.environ.pop(key, None)
        pytest.fail(
            f"{request.module.__name__} left {', '.join(changed)} changed in os.environ", pytrace=False
        )
