"""Grading on a Dask cluster of separate processes, as if on other machines, and surviving a lost worker.

A ``dask scheduler`` and two ``dask worker`` processes, each with its own
``--local-directory`` and no shared course folder, grade a small class; the CSV must be
the one the local default gives. Then one worker is killed while it grades: the task is
retried on the other, and the CSV is still the same.

The cluster recipe in assignments/INSTRUCTOR.md is run line for line (only the folder, the
host and the port replaced): it grades like the local default. Without its ``PYTHONPATH``
line the grader stops before submitting anything and names the fix.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import course, servers, solutions

pytestmark = pytest.mark.slow

ROOT = course.ROOT
BIN = Path(sys.executable).parent
CLASS = {
    "ada": course.CORRECT,
    "ben": {
        "accumulation": solutions.MATERIAL_ACCUMULATION,
        "adam": solutions.ADAM_MISTAKES["t_per_parameter"][0],
    },
}


def _grade_and_export(root: Path, *args: str) -> str:
    course.autograder(root, "grade", *args, timeout=1200)
    out = root.parent / "grades.csv"
    course.autograder(root, "export", "--csv", str(out))
    return out.read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cluster")
    port = servers.free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = course.env(DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="1")
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, cwd=base, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    workers = []
    for i in range(2):
        local = base / f"machine{i}"
        local.mkdir()
        workers.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--local-directory", str(local), "--name", f"machine{i}"],
            env=course.env(AUTOGRADER_SCRATCH=str(local)), cwd=local, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
    procs += workers
    from dask.distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    yield address, workers
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def local_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _grade_and_export(course.collected(tmp_path_factory.mktemp("local"), CLASS), "--workers", "2")


def test_a_separate_cluster_grades_like_the_local_default(cluster, local_csv: str, tmp_path: Path) -> None:
    address, _ = cluster
    csv = _grade_and_export(course.collected(tmp_path, CLASS), "--scheduler", address)
    assert csv == local_csv
    # the material's accumulation earns 1 mark (schedule); t counted per parameter fails every Adam part
    assert "ada,5,5,10,10" in csv and "ben,2,3,5,10" in csv


def test_killing_a_worker_mid_run_gives_the_same_csv(cluster, local_csv: str, tmp_path: Path) -> None:
    from dask.distributed import Client

    address, workers = cluster
    root = course.collected(tmp_path, CLASS)
    grading = subprocess.Popen(
        [sys.executable, "-m", "autograder", "--course", str(root), "grade", "--scheduler", address],
        cwd=ROOT,
        env=course.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with Client(address, timeout=60) as client:
        deadline = time.monotonic() + 300
        busy = {}
        while not busy and time.monotonic() < deadline and grading.poll() is None:
            busy = {w: keys for w, keys in client.processing().items() if keys}
            time.sleep(0.2)
        assert busy, "no worker ever started grading"
        victim = next(iter(busy))
        pids = client.run(os.getpid, workers=[victim])
    os.kill(pids[victim], signal.SIGKILL)  # the machine is gone, mid-task
    out, _ = grading.communicate(timeout=1200)
    assert grading.returncode == 0, out[-3000:]
    csv = root.parent / "grades.csv"
    course.autograder(root, "export", "--csv", str(csv))
    assert csv.read_text() == local_csv
    assert any(w.poll() is not None for w in workers)  # one worker really died


# ----------------------------------------------------------------------------- the documented recipe


def _documented_recipe(port: int) -> tuple[list[str], str, str]:
    """INSTRUCTOR.md's cluster lines: (setup lines, the scheduler's line, a worker's line), for this machine."""
    text = (ROOT / "assignments" / "INSTRUCTOR.md").read_text()
    block = re.search(r"<!-- dask-cluster[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "INSTRUCTOR.md lost its dask-cluster block"
    lines = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    lines = [line.replace("/path/to/optimizers-course", str(ROOT)).replace("tcp://SCHEDULER:", "tcp://127.0.0.1:")
             .replace("8786", str(port)) for line in lines]  # fmt: skip
    scheduler = next(line for line in lines if "dask scheduler" in line)
    worker = next(line for line in lines if "dask worker" in line)
    return [line for line in lines if line not in (scheduler, worker)], scheduler, worker


def _start(setup: list[str], line: str, cwd: Path) -> subprocess.Popen:
    """One documented line in a shell, with the course's environment on PATH and nothing else of ours."""
    env = {k: v for k, v in course.env().items() if k not in ("PYTHONPATH", "DASK_SCHEDULER_ADDRESS")}
    return subprocess.Popen(["bash", "-c", " && ".join([*setup, line])], cwd=cwd, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _documented_cluster(workers: int, *, keep: tuple[str, ...] = ("PYTHONPATH",)) -> tuple[str, list]:
    from dask.distributed import Client

    port = servers.free_port()
    setup, scheduler, worker = _documented_recipe(port)
    setup = [line for line in setup if not line.startswith("export ") or any(k in line for k in keep)]
    procs = [_start(setup, scheduler, ROOT)]
    procs += [_start(setup, worker, ROOT) for _ in range(workers)]
    address = f"tcp://127.0.0.1:{port}"
    try:
        with Client(address, timeout=120) as client:
            client.wait_for_workers(workers, timeout=180)
    except BaseException:
        servers.stop(*procs, timeout=30)
        raise
    return address, procs


def test_the_documented_cluster_grades_like_the_local_default(local_csv: str, tmp_path: Path) -> None:
    address, procs = _documented_cluster(1)
    try:
        csv = _grade_and_export(course.collected(tmp_path, CLASS), "--scheduler", address)
    finally:
        servers.stop(*procs, timeout=30)
    assert csv == local_csv


def test_a_cluster_without_the_grader_on_its_path_stops_before_grading(tmp_path: Path) -> None:
    address, procs = _documented_cluster(1, keep=())  # the recipe without `export PYTHONPATH=$PWD`
    root = course.collected(tmp_path, CLASS)
    try:
        grade = course.autograder(root, "grade", "--scheduler", address, timeout=600, check=False)
    finally:
        servers.stop(*procs, timeout=30)
    out = grade.stdout + grade.stderr
    assert grade.returncode == 2, out[-3000:]
    assert "the scheduler cannot import autograder" in out and "cannot import autograder" in out, out[-3000:]
    assert "PYTHONPATH=$PWD dask scheduler" in out  # the fix
    assert not (root / "autograded").exists()  # nobody graded
