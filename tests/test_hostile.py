"""Hostile submissions, graded by nbgrader's own ``autograde`` beside honest classmates.

One scratch course grades five students, one ``nbgrader autograde --student S --force``
each (exactly what formgrader's Autograde button runs), in this order:

* ``alice``: honest and correct; graded first, so her results are there to be attacked;
* ``eve``: correct answers whose solution cells (run in the jailed kernel *and* in the
  jailed hidden-check process) first try every attack on the world outside the jail:
  reading alice's files and the grader's source, editing the gradebook, overwriting
  alice's results and bob's not-yet-graded submission, writing a canary, connecting to a
  listener, double-forking daemons that keep trying after grading, and opening the
  grader's files for writing. Each attempt that works is a breach: it is printed and it
  breaks her solution, so a breach costs marks as well as failing the checks below;
* ``mallory``: a wrong ``train_epoch`` inside ``if __name__ == "__main__":``, the checks
  patched in her kernel and her solution cell, 100 MB of output; an Adam that calls
  torch's fused kernel through ``getattr``;
* ``trudy``: a ``train_epoch`` that allocates far beyond the memory limit; a correct
  subclass of ``torch.optim.Optimizer`` followed by ``while True: pass``;
* ``bob``: honest and correct; graded last, after every attack on his submission.

Every kind then asserts four things: nothing outside its scratch changed (the course
minus the expected outputs, the canaries, the repository's grader), no connection
arrived, the honest classmates keep 10/10, and the hostile part scores what its code
deserves with a clear status. The payloads are real files in ``tests/hostile/``; they aim at
this test's temporary folders, and at the real grader only to *open* its files for writing
(never writing); their hashes are compared before and after anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from autograder import spec
from autograder.results import StudentResult, load_student
from tests.fixtures import course, solutions
from tests.fixtures.course import ASSIGNMENT, CORRECT, ROOT
from tests.fixtures.timing import scaled
from tests.hostile import call, payload

pytestmark = pytest.mark.slow

HONEST = ("alice", "bob")
ORDER = ("alice", "eve", "mallory", "trudy", "bob")  # alice's results exist before the attacks; bob's do not
TOKEN = "hostile" + secrets.token_hex(6)  # marks every process and file a payload makes
ALICE_SECRET = "alice-secret-" + secrets.token_hex(6)
GRADER_FILES = sorted((ROOT / "autograder").glob("*.py")) + [ROOT / "assignments" / "nbgrader_config.py"]
LIMITS = {  # small, so that the looping and hoarding students cost seconds, not minutes (c.Grading.*)
    "memory_bytes": 2 * 2**30,
    "cell_timeout": round(scaled(30)),  # scaled: on a busy machine alice's honest cells must still finish
    "notebook_timeout": round(scaled(300)),
    "part_timeout": scaled(20),
}


# ----------------------------------------------------------------------------- the payloads

# Real files in tests/hostile/. eve's escape_jail runs in her solution cells, so in the jailed
# kernel and in the jailed hidden-check process, and starts outlive_grading's daemons; the fixture
# below appends the calls with its targets.
PATCH_CHECKS = payload("patch_checks")
FLOOD = payload("flood_output")
FUSED_ADAM = payload("fused_adam")
HOARD = payload("hoard_memory")
SUBCLASS_ADAM = payload("subclass_adam")
LOOP = payload("loop_forever")
# mallory's wrong train_epoch (it does not scale the loss) inside `if __name__ == "__main__":`
GUARDED_WRONG = 'if __name__ == "__main__":\n' + "".join(
    "    " + line if line.strip() else line
    for line in solutions.ACCUMULATION_MISTAKES["loss_not_scaled"][0].splitlines(True)
)


# ----------------------------------------------------------------------------- the course


class Listener:
    """A TCP listener on every address and an abstract Unix socket; records what connects."""

    def __init__(self) -> None:
        self.connections: list[str] = []
        self.tcp = socket.create_server(("0.0.0.0", 0))
        self.port = self.tcp.getsockname()[1]
        self.name = f"autograder-{TOKEN}"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind("\0" + self.name)
        self.unix.listen()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, args=(s,), daemon=True) for s in (self.tcp, self.unix)
        ]
        for t in self._threads:
            t.start()

    def _accept(self, server: socket.socket) -> None:
        server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, address = server.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(f"{server.family.name} {address!r}")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.tcp.close()
        self.unix.close()


def _host_ip() -> str:
    """An address of this machine other than loopback, where there is one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.2"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (folders as entries too, so new ones show)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if skip(rel):
            continue
        out[str(rel)] = "dir" if path.is_dir() else _digest(path)
    return out


def _course_outputs(rel: Path) -> bool:
    """What grading may write in a course: autograded/, the gradebook, nbgrader's log."""
    return rel.parts[0] in (
        "autograded",
        "gradebook.db",
        ".nbgrader.log",
        "gradebook.db-journal",
        ".autograder_seed",
    )


def _grades(db: Path, student: str) -> list[tuple]:
    """(notebook, grade id, auto score, manual score) of every grade of ``student``, from nbgrader's API."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}", "optimizers-course") as gb:
        submission = gb.find_submission(ASSIGNMENT, student)
        return sorted(
            (nb.name, g.name, g.auto_score, g.manual_score) for nb in submission.notebooks for g in nb.grades
        )


def _grader_state() -> dict[str, str]:
    return {str(p): _digest(p) for p in GRADER_FILES if p.exists()}


def _assert_grader_untouched(g: Graded) -> None:
    """The real grader is byte-identical after grading (the payloads only try to open it for writing).

    Outside CI someone may be editing the grader in the same checkout while this runs; then a
    changed file must at least carry no trace of a payload, and the change is reported."""
    changed = sorted(p for p in g.grader_before if g.grader_after.get(p) != g.grader_before[p])
    assert not [p for p in changed if Path(p).exists() and TOKEN in Path(p).read_text()], changed
    if changed and not os.environ.get("CI"):
        warnings.warn(
            f"the grader changed while the hostile battery ran (someone editing?): {changed}", stacklevel=2
        )
    else:
        assert changed == [], changed


def _processes_with(token: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline and proc.name != str(os.getpid()):
                found.append(f"{proc.name}: {cmdline[:200]!r}")
    return found


@dataclass
class Graded:
    course: Path
    results: dict[str, StudentResult | Exception]
    graded: dict[tuple[str, str], str]  # (student, notebook) -> the autograded notebook's text
    sizes: dict[tuple[str, str], int]
    changed_course: dict[str, tuple]
    changed_alice: dict[str, tuple]
    alice_grades: tuple[list, list]
    manual_scores: list[tuple]
    canary_before: dict[str, str]
    canary_after: dict[str, str]
    grader_before: dict[str, str]
    grader_after: dict[str, str]
    connections: list[str]
    survivors: list[str]
    host_tmp_written: bool
    scratch_left: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)  # of each student's nbgrader autograde


def _load(course: Path, student: str) -> StudentResult | Exception:
    """The student's results, or what made them unreadable (a graded notebook overwritten, say)."""
    try:
        return load_student(course, student)
    except Exception as exc:
        return exc


def _diff(before: dict, after: dict) -> dict[str, tuple]:
    return {
        k: (before.get(k), after.get(k))
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k)
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    base = tmp_path_factory.mktemp("hostile")
    root = course.scratch(base, grading=LIMITS)  # the grading limits travel as configuration
    scratch = base / "scratch"
    scratch.mkdir()
    canary_dir = base / "canary"
    canary_dir.mkdir()
    (canary_dir / "canary.txt").write_text(TOKEN)
    log = base / "nbgrader.log"

    def nbgrader(*args: str, check: bool = True) -> int:
        """nbgrader's own command line on the course, its output kept in ``log``."""
        proc = course.nbgrader(root, *args, check=check, AUTOGRADER_SCRATCH=str(scratch))
        with log.open("a") as out:
            out.write(proc.stdout + proc.stderr)
        return proc.returncode

    nbgrader("generate_assignment", ASSIGNMENT, "--force")

    listener = Listener()
    sub = root / "submitted"
    targets = {
        "token": TOKEN,
        "port": listener.port,
        "abstract": listener.name,
        "host_ip": _host_ip(),
        "submitted": str(sub),
        "alice_submitted": str(sub / "alice" / ASSIGNMENT / "adam.ipynb"),
        "alice_graded": str(root / "autograded" / "alice" / ASSIGNMENT / "adam.ipynb"),
        "bob_submitted": str(sub / "bob" / ASSIGNMENT / "adam.ipynb"),
        "gradebook": str(root / "gradebook.db"),
        "hidden": [str(ROOT / "autograder" / f) for f in ("judge.py", "cases.py")]
        + [str(ROOT / "tests" / "fixtures" / "solutions.py")],
        "grader": [str(p) for p in GRADER_FILES],
        "course_config": str(root / "nbgrader_config.py"),
        "canary_dir": str(canary_dir),
        "canary": str(canary_dir / "canary.txt"),
    }
    targets["daemon"] = call("outlive_grading", targets)  # its command line holds TOKEN (in targets)
    attacks = call("escape_jail", targets)

    notebooks = {
        "eve": {name: course.answer(root, name, attacks + "\n\n" + CORRECT[name]) for name in CORRECT},
        "mallory": {
            "accumulation": course.answer(
                root, "accumulation", PATCH_CHECKS + "\n" + GUARDED_WRONG, after=[PATCH_CHECKS, FLOOD]
            ),
            "adam": course.answer(root, "adam", FUSED_ADAM),
        },
        "trudy": {
            "accumulation": course.answer(root, "accumulation", HOARD),
            "adam": course.answer(root, "adam", SUBCLASS_ADAM, after=[LOOP]),
        },
    }
    for student in HONEST:
        notebooks[student] = {name: course.answer(root, name, CORRECT[name]) for name in CORRECT}
        for nb in notebooks[student].values():
            nb.cells.append(nbformat.v4.new_markdown_cell(f"{student}'s own notes: {ALICE_SECRET}"))
    for student, nbs in notebooks.items():
        for name, nb in nbs.items():
            path = sub / student / ASSIGNMENT / f"{name}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)

    course_before = _tree(root, _course_outputs)
    canary_before = _tree(canary_dir)
    grader_before = _grader_state()
    seconds, codes = {}, {}
    host_tmp = Path("/tmp") / TOKEN
    try:
        for student in ORDER:
            started = time.monotonic()
            codes[student] = nbgrader("autograde", ASSIGNMENT, "--student", student, "--force", check=False)
            seconds[student] = round(time.monotonic() - started, 1)
            print(f"graded {student} in {seconds[student]} s")
            if student == "alice":
                alice_before = _tree(root / "autograded" / "alice")
                alice_grades_before = _grades(root / "gradebook.db", "alice")
        time.sleep(2)  # a daemon that escaped would have written by now
        survivors = _processes_with(TOKEN)
        written = host_tmp.exists()
    finally:
        listener.close()
        for line in _processes_with(TOKEN):  # never leave one behind, whatever the assertions say
            try:
                os.kill(int(line.split(":")[0]), 9)
            except OSError:
                pass
        host_tmp.unlink(missing_ok=True)
    graded_text, sizes = {}, {}
    for student in ORDER:
        for name in spec.NOTEBOOKS:
            path = root / "autograded" / student / ASSIGNMENT / f"{name}.ipynb"
            graded_text[student, name] = path.read_text() if path.exists() else ""
            sizes[student, name] = path.stat().st_size if path.exists() else 0
    with sqlite3.connect(root / "gradebook.db") as con:
        manual = con.execute(
            "SELECT id, manual_score, extra_credit FROM grade "
            "WHERE manual_score IS NOT NULL OR extra_credit IS NOT NULL"
        ).fetchall()
    return Graded(
        course=root,
        results={s: _load(root, s) for s in ORDER},
        graded=graded_text,
        sizes=sizes,
        changed_course=_diff(course_before, _tree(root, _course_outputs)),
        changed_alice=_diff(alice_before, _tree(root / "autograded" / "alice")),
        alice_grades=(alice_grades_before, _grades(root / "gradebook.db", "alice")),
        manual_scores=manual,
        canary_before=canary_before,
        canary_after=_tree(canary_dir),
        grader_before=grader_before,
        grader_after=_grader_state(),
        connections=list(listener.connections),
        survivors=survivors,
        host_tmp_written=written,
        scratch_left=sorted(p.name for p in scratch.iterdir()),
        seconds=seconds,
        exit_codes=codes,
    )


# ----------------------------------------------------------------------------- the kinds


def _outputs(text: str) -> str:
    """Everything the cells of a graded notebook printed (not their sources)."""
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception:  # empty or overwritten: whatever is there
        return text
    return json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])


def _result(g: Graded, student: str) -> StudentResult:
    result = g.results[student]
    assert isinstance(result, StudentResult), f"{student}'s results cannot be read: {result!r}"
    return result


def _parts(g: Graded, student: str, name: str) -> dict[str, tuple[float, str, str]]:
    nb = _result(g, student).notebooks[name]
    return {p.name: (p.points, p.status, p.message) for p in nb.parts.values()}


def _full_marks_and_every_attempt_denied(
    labels: list[str | tuple[str, ...]], name: str | None = None
) -> Callable[[Graded], None]:
    """eve's check: every attack of this kind was tried in her kernel, denied, and she keeps her marks.

    A label may be a tuple of spellings (the grader's own paths are shown as ``<course>/...``)."""

    def check(g: Graded) -> None:
        for nb in (name,) if name else tuple(spec.NOTEBOOKS):
            text = _outputs(g.graded["eve", nb])
            assert "HOSTILE-RAN __main__" in text, f"eve's {nb} payload never ran in the kernel"
            assert "BREACH" not in text, text[text.find("BREACH") - 200 : text.find("BREACH") + 400]
            for label in labels:
                spellings = (label,) if isinstance(label, str) else label
                assert any(f"denied {s}" in text for s in spellings), (
                    f"{label!r} was not denied in eve's {nb} kernel"
                )
            result = _result(g, "eve").notebooks[nb]
            assert result.status == "graded" and result.score == 5, _parts(g, "eve", nb)
            assert all(p.status == "passed" for p in result.parts.values()), _parts(g, "eve", nb)

    return check


def _check_read_classmate(g: Graded) -> None:
    _full_marks_and_every_attempt_denied(["read_classmate"])(g)
    for student in ("eve", "mallory", "trudy"):
        for name in spec.NOTEBOOKS:
            assert ALICE_SECRET not in g.graded[student, name]


def _check_read_hidden_checks(g: Graded) -> None:
    _full_marks_and_every_attempt_denied(
        [
            ("read_hidden_checks /", "read_hidden_checks <course>/"),
            "read_hidden_checks libc",
            "read_hidden_checks import",
        ]
    )(g)
    secret = "def reference_train_epoch"  # in judge.py only
    assert not any(secret in text for (student, _), text in g.graded.items() if student != "alice")


def _check_edit_gradebook(g: Graded) -> None:
    _full_marks_and_every_attempt_denied(["edit_gradebook sqlite3", "edit_gradebook nbgrader.api"])(g)
    assert g.manual_scores == []
    assert g.alice_grades[0] == g.alice_grades[1]


def _check_overwrite_results(g: Graded) -> None:
    _full_marks_and_every_attempt_denied(
        ["overwrite_results alice", "overwrite_results bob", "overwrite_results unlink"]
    )(g)
    assert g.changed_alice == {}
    assert _result(g, "bob").notebooks["adam"].score == 5  # graded after the attempt on his submission


def _check_write_outside(g: Graded) -> None:
    _full_marks_and_every_attempt_denied(["write_outside"])(g)
    assert g.canary_after == g.canary_before
    assert not g.host_tmp_written


def _check_connect_out(g: Graded) -> None:
    _full_marks_and_every_attempt_denied(["connect_out 127.0.0.1", "connect_out abstract unix socket"])(g)
    assert g.connections == []


def _check_daemonise(g: Graded) -> None:
    _full_marks_and_every_attempt_denied([])(g)
    assert "daemons started" in _outputs(g.graded["eve", "adam"])
    assert g.survivors == [], "processes of a submission outlived its grading"
    assert "daemon.txt" not in str(g.canary_after) and g.manual_scores == []
    assert g.scratch_left == [], "the jails' scratch folders were not removed"


def _check_rewrite_grader(g: Graded) -> None:
    _full_marks_and_every_attempt_denied(
        [("rewrite_grader /", "rewrite_grader <course>/"), "rewrite_grader course config"]
    )(g)
    _assert_grader_untouched(g)
    assert "nbgrader_config.py" not in g.changed_course


# mallory's train_epoch does not scale the loss: it loses exactly the parts about that idea
_, _, GUARDED_LOSES = solutions.ACCUMULATION_MISTAKES["loss_not_scaled"]
GUARDED_SCORE = spec.ACCUMULATION.max_score - sum(
    p.points for p in spec.ACCUMULATION.parts if p.name in GUARDED_LOSES
)


def _check_patch_checks(g: Graded) -> None:
    # patched checks must not turn the wrong train_epoch into marks
    parts = _parts(g, "mallory", "accumulation")
    assert {p for p, v in parts.items() if v[0] == 0} == GUARDED_LOSES, parts
    assert all(parts[p][1] == "failed" for p in GUARDED_LOSES), parts


def _check_name_guard(g: Graded) -> None:
    # the guard does not hide the wrong train_epoch from the hidden checks: it is graded as written
    result = _result(g, "mallory").notebooks["accumulation"]
    assert result.status == "graded" and result.score == GUARDED_SCORE, _parts(g, "mallory", "accumulation")
    for part in GUARDED_LOSES:
        assert result.parts[part].message and result.parts[part].hint, _parts(g, "mallory", "accumulation")


def _check_flood_output(g: Graded) -> None:
    assert g.sizes["mallory", "accumulation"] < 2 * 2**20, g.sizes
    assert "output truncated" in g.graded["mallory", "accumulation"]
    assert _result(g, "mallory").notebooks["accumulation"].score == GUARDED_SCORE  # the flood costs nothing


def _check_delegate_fused(g: Graded) -> None:
    parts = _parts(g, "mallory", "adam")
    stepping = ("first_step", "many_steps", "training_loop", "device_state")
    assert all(parts[p][:2] == (0, "disallowed") for p in stepping), parts
    assert all("fused" in parts[p][2] for p in stepping), parts
    assert parts["weight_decay"][:2] == (0, "error"), parts  # FUSED_ADAM takes no weight_decay keyword
    assert _result(g, "mallory").notebooks["adam"].score == 0


def _check_exhaust_memory(g: Graded) -> None:
    parts = _parts(g, "trudy", "accumulation")
    assert all(
        points == 0 and status == "limit" and "memory" in message
        for points, status, message in parts.values()
    ), parts


def _check_loop_forever(g: Graded) -> None:
    nb = nbformat.reads(g.graded["trudy", "adam"], as_version=4)
    loop = next(c for c in nb.cells if c.cell_type == "code" and c.source == LOOP)
    assert any(o.output_type == "error" for o in loop.outputs), (
        loop.outputs
    )  # interrupted, then the notebook went on
    assert _result(g, "trudy").notebooks["adam"].score == 5, _parts(g, "trudy", "adam")


def _check_optimizer_subclass(g: Graded) -> None:
    result = _result(g, "trudy").notebooks["adam"]
    assert result.status == "graded" and result.score == 5, _parts(g, "trudy", "adam")
    assert all(p.status == "passed" for p in result.parts.values())


KINDS: dict[str, Callable[[Graded], None]] = {
    "read_classmate": _check_read_classmate,
    "read_hidden_checks": _check_read_hidden_checks,
    "edit_gradebook": _check_edit_gradebook,
    "overwrite_results": _check_overwrite_results,
    "write_outside": _check_write_outside,
    "connect_out": _check_connect_out,
    "daemonise": _check_daemonise,
    "rewrite_grader": _check_rewrite_grader,
    "patch_checks": _check_patch_checks,
    "name_guard": _check_name_guard,
    "flood_output": _check_flood_output,
    "delegate_fused_kernel": _check_delegate_fused,
    "exhaust_memory": _check_exhaust_memory,
    "loop_forever": _check_loop_forever,
    "optimizer_subclass": _check_optimizer_subclass,
}


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_kind(kind: str, graded: Graded) -> None:
    # 4 first, as it names the attack that worked: the part scores what its code deserves, with a clear status
    KINDS[kind](graded)
    # 1. nothing outside the scratch folders changed
    assert graded.changed_course == {}, graded.changed_course
    assert graded.canary_after == graded.canary_before
    _assert_grader_untouched(graded)
    # 2. no connection was made
    assert graded.connections == []
    # 3. the honest classmates keep full marks (and every student was graded)
    assert graded.exit_codes == dict.fromkeys(ORDER, 0), graded.exit_codes
    for student in HONEST:
        result = _result(graded, student)
        assert result.score == 10, {n: _parts(graded, student, n) for n in spec.NOTEBOOKS}


# Other spellings of torch's Adam, in the hidden-check jail alone (one jailed process each).
FUSED_KERNEL = 'getattr(torch.ops.aten, "_fused_" + "adam_")'  # AdamW's spelling replaces it
assert FUSED_KERNEL in FUSED_ADAM, "tests/hostile/fused_adam.py no longer spells its kernel this way"
DELEGATES = {
    "optim_adam_by_concatenation": solutions.ADAM_MISTAKES["optim_by_getattr"][0],
    "functional_adam": payload("functional_adam"),
    "adamw_through_torch_C": FUSED_ADAM.replace(
        FUSED_KERNEL, 'getattr(torch._C._VariableFunctions, "_fused_" + "adamw_")'
    ),
}


@pytest.mark.parametrize("spelling", DELEGATES)
def test_other_spellings_of_torch_adam_are_disallowed(spelling: str) -> None:
    from autograder import checks

    verdicts = checks.run_checks({"adam": DELEGATES[spelling]}, device="cpu")["adam"]
    assert verdicts["first_step"].status == "disallowed", verdicts["first_step"]
    assert verdicts["many_steps"].status == "disallowed", verdicts["many_steps"]


def test_the_scratch_folder_is_the_only_writable_place(tmp_path: Path) -> None:
    from autograder import jail

    cell = jail.Jail(tmp_path / "scratch")
    code = payload("write_everywhere")
    try:
        proc = subprocess.run(
            cell.command([sys.executable, "-I", "-c", code]), capture_output=True, text=True, timeout=60
        )
    finally:
        cell.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == repr([str(cell.scratch / "x")])
