"""A second hostile class: submissions that attack the grader's own stages, not the jail's walls.

One ``python -m autograder grade`` (the coordinator, Dask, two workers) grades, beside two
honest classmates who must keep 10/10 and get their rows:

* ``deep``: an adam.ipynb that is valid JSON nested 100,000 deep (it raised in the coordinator,
  and no grades.csv was written);
* ``typed``: valid notebook JSON with the wrong types everywhere (sources that are numbers and
  dicts, metadata that is a list, cells that are not objects) around a correct solution;
* ``slow``: an accumulation.ipynb crafted to make the metadata repair quadratic (500 near-copies
  of the release's longest cell: 16 s on 336 KB before);
* ``flood``: a hidden-check process that keeps writing protocol-looking lines into its result
  pipe (only silence used to count against the part's limit);
* ``forged``: forged results down the pipe: an "error" that is a number, stride-0 tensors
  claiming 2**31 elements;
* ``noisy``: a correct Adam that makes torch print a UserWarning in every test cell;
* ``filler``: a kernel that fills its ZeroMQ socket folder (5 GiB reached the grader's disk).

Then: every student has a row in grades.csv, each hostile notebook scores what it deserves with
a clear status and costs only itself, the run's time is bounded, and nothing is left in the
scratch folder or the cgroup tree. The payloads are real files in ``tests/hostile/``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from autograder import checks, repair, spec
from autograder.limits import _cgroup_parents, _prefix
from autograder.results import StudentResult, load_student
from tests.fixtures import course
from tests.fixtures.course import ASSIGNMENT, CORRECT, ROOT
from tests.hostile import payload

HONEST = ("alice", "bob", "noisy", "filler")  # filler and noisy attack, but their answers are correct
RUN_SECONDS = 1800  # generous: the class takes a few minutes on a quiet machine
GRADING = ["--part-timeout", "8", "--cell-timeout", "60", "--notebook-timeout", "300", "--workers", "2"]
LIMITS = {"memory_bytes": 2 * 2**30}  # c.Grading.*, in the course's nbgrader_config.py


# ----------------------------------------------------------------------------- crafted files


def deep_json(depth: int = 100_000) -> str:
    """Valid JSON with the shape of a notebook, nested ``depth`` deep in its metadata."""
    return (
        '{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": {"x": '
        + "[" * depth
        + "]" * depth
        + "}}"
    )


def wrong_types(nb: nbformat.NotebookNode) -> str:
    """``nb`` as JSON with wrong types everywhere around its cells (valid JSON, not a valid notebook)."""
    data = json.loads(nbformat.writes(nb))
    for cell in data["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            cell["metadata"] = ["not", "a", "dict"]  # the solution cell's metadata lost
        if cell["cell_type"] == "code":
            cell["outputs"] = {"not": "a list"}
            cell["execution_count"] = "seven"
    data["cells"][:0] = [
        42,
        None,
        {"cell_type": "code", "source": [1, {"a": 2}]},
        {"cell_type": "code", "source": {"x": 1}},
        {"cell_type": "alien", "source": "?"},
        {"cell_type": "markdown", "source": "x", "id": 7},
    ]
    data["metadata"] = [1, 2, 3]
    return json.dumps(data)


def slow_to_repair(cells: int = 500, seed: int = 0) -> nbformat.NotebookNode:
    """Near-copies of the release's longest markdown cell: each pairs with every release cell, and
    difflib's ratio was quadratic in their length."""
    release = nbformat.read(ROOT / "assignments" / "source" / ASSIGNMENT / "accumulation.ipynb", as_version=4)
    longest = max((c.source for c in release.cells if c.cell_type == "markdown"), key=len)
    rng = random.Random(seed)
    out = []
    for _ in range(cells):
        text = list(longest)
        for _ in range(40):
            text[rng.randrange(len(text))] = rng.choice("abcdefgh ")
        out.append(nbformat.v4.new_markdown_cell("".join(text)))
    return nbformat.v4.new_notebook(cells=out)


# ----------------------------------------------------------------------------- the class


@dataclass
class Graded:
    course: Path
    code: int
    output: str
    seconds: float
    rows: dict[str, dict[str, str]]
    results: dict[str, StudentResult | Exception]
    graded: dict[tuple[str, str], str]
    scratch_left: list[str]
    cgroups_left: list[str]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _runs_seen(scratch: Path, seen: set[str], stop: threading.Event) -> None:
    """Record the grading run's folders while it lasts (their names give its cgroups' prefix)."""
    while not stop.wait(0.5):
        seen.update(str(p) for p in scratch.glob("autograder-run-*"))


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    base = tmp_path_factory.mktemp("stages")
    root, scratch = course.scratch(base, grading=LIMITS), base / "scratch"
    scratch.mkdir()
    env = {"AUTOGRADER_SCRATCH": str(scratch)}
    course.autograder(root, "release", timeout=600, **env)

    def answer(name: str, extra: str = "") -> str:
        return nbformat.writes(course.answer(root, name, CORRECT[name] + ("\n\n" + extra if extra else "")))

    sub = root / "submitted"
    files = {
        "alice": {name: answer(name) for name in CORRECT},
        "bob": {name: answer(name) for name in CORRECT},
        "deep": {"accumulation": answer("accumulation"), "adam": deep_json()},
        "typed": {
            "accumulation": answer("accumulation"),
            "adam": wrong_types(course.answer(root, "adam", CORRECT["adam"])),
        },
        "slow": {"accumulation": nbformat.writes(slow_to_repair()), "adam": answer("adam")},
        "flood": {"accumulation": answer("accumulation", payload("flood_channel")), "adam": answer("adam")},
        "forged": {"accumulation": answer("accumulation"), "adam": answer("adam", payload("forged_results"))},
        "noisy": {"accumulation": answer("accumulation"), "adam": answer("adam", payload("noisy_adam"))},
        "filler": {
            "accumulation": answer("accumulation"),
            "adam": answer("adam", payload("fill_socket_folder")),
        },
    }
    for student, notebooks in files.items():
        for name, text in notebooks.items():
            _write(sub / student / ASSIGNMENT / f"{name}.ipynb", text)

    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_runs_seen, args=(scratch, seen, stop), daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        proc = course.autograder(root, "grade", *GRADING, timeout=RUN_SECONDS + 300, check=False, **env)
    finally:
        stop.set()
        watcher.join()
    seconds = time.monotonic() - started
    print(f"graded the class in {seconds:.0f} s", proc.stdout[-3000:], proc.stderr[-3000:])
    course.autograder(root, "export", "--csv", str(base / "grades.csv"), timeout=600, **env)
    with (base / "grades.csv").open() as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh)}
    results: dict[str, StudentResult | Exception] = {}
    text = {}
    for student in files:
        try:
            results[student] = load_student(root, student)
        except Exception as exc:
            results[student] = exc
        for name in spec.NOTEBOOKS:
            path = root / "autograded" / student / ASSIGNMENT / f"{name}.ipynb"
            text[student, name] = path.read_text() if path.exists() else ""
    prefixes = [_prefix(Path(p)) for p in seen]
    cgroups = [
        str(f) for parent in _cgroup_parents().values() for pre in prefixes for f in parent.glob(f"{pre}*")
    ]
    return Graded(root, proc.returncode, proc.stdout + proc.stderr, seconds, rows, results, text,
                  sorted(p.name for p in scratch.iterdir()), cgroups)  # fmt: skip


def _nb(g: Graded, student: str, name: str):
    result = g.results[student]
    assert isinstance(result, StudentResult), f"{student}'s results cannot be read: {result!r}"
    return result.notebooks[name]


def _parts(g: Graded, student: str, name: str) -> dict[str, tuple[float, str, str]]:
    return {p.name: (p.points, p.status, p.message) for p in _nb(g, student, name).parts.values()}


def _marks(g: Graded, student: str) -> tuple[float, float]:
    row = g.rows[student]
    return float(row["accumulation"]), float(row["adam"])


# ----------------------------------------------------------------------------- the kinds


def _check_deep_json(g: Graded) -> None:  # point 1: reading
    assert _marks(g, "deep") == (5, 0), g.rows["deep"]
    nb = _nb(g, "deep", "adam")
    assert nb.status == "invalid notebook" and "nested too deeply" in " ".join(nb.notes), (
        nb.status,
        nb.notes,
    )


def _check_wrong_types(g: Graded) -> None:  # point 1: reading, repairing
    assert _marks(g, "typed") == (5, 5), (g.rows["typed"], _parts(g, "typed", "adam"))


def _check_slow_repair(g: Graded) -> None:  # point 1: repairing, linear and bounded
    nb = _nb(g, "slow", "accumulation")
    assert nb.score == 0 and nb.status in ("graded", "invalid notebook"), (nb.status, nb.notes)
    assert _marks(g, "slow") == (0, 5), g.rows["slow"]


def _check_flood_channel(g: Graded) -> None:  # point 2: output cannot extend a part's limit
    parts = _parts(g, "flood", "accumulation")
    assert all(points == 0 and status == "timeout" for points, status, _ in parts.values()), parts
    assert _marks(g, "flood") == (0, 5), g.rows["flood"]


def _check_forged_results(g: Graded) -> None:  # point 3: results are data, validated
    parts = _parts(g, "forged", "adam")
    assert all(points == 0 for points, _, _ in parts.values()), parts
    assert parts["first_step"][1] == "invalid result" and "'error'" in parts["first_step"][2], parts
    stride = [
        p
        for p, (_, status, message) in parts.items()
        if status == "invalid result" and "2147483648" in message
    ]
    assert stride, parts  # the stride-0 tensor was refused by its shape, never materialised
    assert _marks(g, "forged") == (5, 0), g.rows["forged"]


def _check_socket_folder(g: Graded) -> None:  # point 5: nothing on the grader's disk
    found = re.search(r"SOCKET-FOLDER-FULL after (\d+) MiB: OSError 28", g.graded["filler", "adam"])  # ENOSPC
    assert found and int(found.group(1)) <= 1, g.graded["filler", "adam"][
        -2000:
    ]  # its 1 MiB tmpfs, then full
    assert _marks(g, "filler") == (5, 5)


def _check_warnings(g: Graded) -> None:  # point 7
    assert "UserWarning" in g.graded["noisy", "adam"]  # the warning was printed, and kept
    assert _marks(g, "noisy") == (5, 5), _parts(g, "noisy", "adam")


KINDS = {
    "deep_json": _check_deep_json,
    "wrong_types": _check_wrong_types,
    "slow_repair": _check_slow_repair,
    "flood_channel": _check_flood_channel,
    "forged_results": _check_forged_results,
    "socket_folder": _check_socket_folder,
    "warnings_are_not_failures": _check_warnings,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_hostile_stage(kind: str, graded: Graded) -> None:
    KINDS[kind](graded)
    # every student has a row, the honest ones full marks, and the run finished in bounded time
    assert set(graded.rows) >= {"alice", "bob", "deep", "typed", "slow", "flood", "forged", "noisy", "filler"}
    for student in HONEST:
        assert _marks(graded, student) == (5, 5), (student, graded.rows.get(student), graded.output[-3000:])
    assert graded.seconds < RUN_SECONDS, graded.seconds
    assert "Traceback" not in graded.output, graded.output[-3000:]
    # nothing left behind
    assert graded.scratch_left == [], graded.scratch_left
    assert graded.cgroups_left == [], graded.cgroups_left


# ----------------------------------------------------------------------------- the stages alone


def test_reading_any_json_is_bounded_and_clean(tmp_path: Path) -> None:
    path = tmp_path / "x.ipynb"
    path.write_text(deep_json())
    with pytest.raises(repair.InvalidNotebook, match="nested too deeply"):
        repair.load_notebook(path)
    release = nbformat.read(ROOT / "assignments" / "source" / ASSIGNMENT / "adam.ipynb", as_version=4)
    path.write_text(wrong_types(release))
    nb = repair.load_notebook(path)
    nbformat.validate(nb)  # a clean notebook, whatever the JSON held
    assert all(isinstance(c.source, str) for c in nb.cells)
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "x"}] * (repair.MAX_CELLS + 1)}))
    with pytest.raises(repair.InvalidNotebook, match="cells"):
        repair.load_notebook(path)


def test_repair_is_linear_in_the_notebook_and_has_a_time_limit(tmp_path: Path) -> None:
    release = nbformat.read(ROOT / "assignments" / "source" / ASSIGNMENT / "accumulation.ipynb", as_version=4)
    times = {}
    for cells in (100, 400):
        nb = slow_to_repair(cells)
        started = time.monotonic()
        repair.repair(repair.normalize(nb), release, spec.ACCUMULATION)
        times[cells] = time.monotonic() - started
    # difflib took 16 s for 120 such cells; a generous bound that holds on a loaded machine
    assert times[400] < 20, times
    with pytest.raises(repair.RepairTimeout):
        repair.repair(repair.normalize(slow_to_repair(100)), release, spec.ACCUMULATION, seconds=0.0)


def _message(result: object) -> str:
    import torch

    buffer = io.BytesIO()
    torch.save(result, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def test_results_are_validated_before_use() -> None:
    import torch

    honest = {"ok": True, "error": None, "setup_error": None, "tripped": [],
              "payload": {"params": [torch.zeros(3, 2)], "steps": [1, 2], "returned": {"values": [0.5]}}}  # fmt: skip
    result, problem = checks.load_result(_message(honest))
    assert problem is None and torch.equal(result["payload"]["params"][0], torch.zeros(3, 2))
    forged = {
        "non-string error": {"ok": False, "error": 123, "tripped": []},
        "stride 0": {**honest, "payload": {"params": [torch.zeros(1).expand(2**31)]}},
        "repeated values": {**honest, "payload": {"params": [torch.zeros(4, 1).expand(4, 3)]}},
        "a class": {**honest, "payload": {"x": torch.float32}},
        "deep": {**honest, "payload": {"x": [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}},
        "long string": {**honest, "error": "x" * 100_000},
        "complex tensor": {**honest, "payload": {"x": torch.zeros(2, dtype=torch.complex64)}},
        "sparse tensor": {**honest, "payload": {"x": torch.zeros(2, 2).to_sparse()}},
        "many values": {**honest, "payload": {"x": list(range(checks.MAX_VALUES + 1))}},
        "not a dict": [1, 2],
        "no ok": {"error": None},
    }
    for label, value in forged.items():
        result, problem = checks.load_result(_message(value))
        assert result is None and problem, label
    for data in (
        None,
        "",
        "not base64!",
        base64.b64encode(b"not a zip").decode(),
        "A" * (checks.MAX_LINE + 4),
    ):
        assert checks.load_result(data)[1], data


@pytest.mark.slow
def test_a_dask_task_past_its_deadline_is_stopped_and_the_others_finish(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    from autograder.grade import _as_completed

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                     local_directory=str(tmp_path)) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        futures = {
            client.submit(time.sleep, 600, pure=False): "stuck",
            client.submit(sum, [1, 2], pure=False): "quick",
        }
        started = time.monotonic()
        seen = {
            futures[f]: (stopped, time.monotonic() - started)
            for f, stopped in _as_completed(client, futures, 5, False)
        }
        assert seen["quick"][0] is False and seen["stuck"][0] is True, seen
        assert seen["stuck"][1] < 120, seen  # 5 s on a worker, then stopped (generous on a loaded machine)
        assert client.submit(sum, [3, 4], pure=False).result(timeout=120) == 7  # the cluster goes on
