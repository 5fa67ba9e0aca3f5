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
deserves with a clear status. The payloads aim at this test's temporary folders, and at
the real grader only to *open* its files for writing (never writing); their hashes are
compared before and after anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
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
from tests.fixtures import solutions
from tests.fixtures.timing import scaled

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
ASSIGNMENT = spec.ASSIGNMENT
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

# Runs in eve's solution cells, so in the jailed kernel and in the jailed hidden-check
# process. Every attempt either raises (denied) or counts as a breach; breaches that read
# something print what they read, so a leak would also show in her graded notebook.
ATTACKS = '''\
def _hostile(where):
    """Try to get out of the jail; return what worked (nothing should)."""
    import ctypes
    import os
    import socket
    import sqlite3
    import subprocess
    import sys

    T = %(targets)r
    worked, denied = [], []

    def attempt(label, fn):
        try:
            got = fn()
        except Exception as exc:
            denied.append(f"{label}: {type(exc).__name__}")
            return
        worked.append(label)
        print("BREACH", label, str(got)[:300])

    def read(path):
        with open(path, "rb") as fh:
            return fh.read()

    def libc_open(path, flags):
        fd = ctypes.CDLL(None, use_errno=True).open(path.encode(), flags)
        if fd < 0:
            raise OSError(ctypes.get_errno(), path)
        os.close(fd)
        return fd

    def write(path, data, mode="w"):
        with open(path, mode) as fh:
            fh.write(data)

    def at_dir(folder, name, flags):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.close(os.open(name, flags, dir_fd=fd))
        finally:
            os.close(fd)

    def sql(db, statement):
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
        con.execute(statement)
        con.commit()
        return con.total_changes

    def nbgrader_api(db):
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{db}", "optimizers-course") as gb:
            for student in ("eve", "alice"):
                grade = gb.find_grade("test_adam_first_step", "adam", "optimizers_lab", student)
                grade.manual_score = 5.0 if student == "eve" else 0.0
            gb.db.commit()

    def connect(host):
        socket.create_connection((host, T["port"]), timeout=2).close()

    def abstract():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect("\\0" + T["abstract"])

    # read_classmate
    for path in (T["alice_submitted"], T["alice_graded"], "/proc/1/root" + T["alice_submitted"]):
        attempt(f"read_classmate {path}", lambda path=path: read(path))
    attempt("read_classmate listdir", lambda: os.listdir(T["submitted"]))
    attempt("read_classmate hardlink", lambda: os.link(T["alice_submitted"], "alice.ipynb"))
    # read_hidden_checks
    for path in T["hidden"]:
        attempt(f"read_hidden_checks {path}", lambda path=path: read(path))
        attempt(f"read_hidden_checks libc {path}", lambda path=path: libc_open(path, os.O_RDONLY))
    attempt("read_hidden_checks import", lambda: __import__("tests.fixtures.solutions").fixtures.solutions.ADAM)
    # edit_gradebook
    attempt("edit_gradebook sqlite3", lambda: sql(T["gradebook"], "UPDATE grade SET manual_score = 0"))
    attempt("edit_gradebook nbgrader.api", lambda: nbgrader_api(T["gradebook"]))
    # overwrite_results
    attempt("overwrite_results alice", lambda: write(T["alice_graded"], "{}"))
    attempt("overwrite_results bob", lambda: write(T["bob_submitted"], "{}"))
    attempt("overwrite_results unlink", lambda: os.unlink(T["alice_graded"]))
    # write_outside
    attempt("write_outside open", lambda: write(T["canary"], "owned"))
    attempt("write_outside create", lambda: write(T["canary_dir"] + "/new.txt", "owned", "x"))
    attempt("write_outside dir_fd", lambda: at_dir(T["canary_dir"], "canary.txt", os.O_WRONLY | os.O_TRUNC))
    attempt("write_outside libc", lambda: libc_open(T["canary"], os.O_WRONLY | os.O_TRUNC))
    try:  # the jail's own /tmp (bubblewrap's private root) is fine; the host's is checked from outside
        write("/tmp/" + T["token"], "owned", "x")
    except OSError:
        pass
    # connect_out
    for host in ("127.0.0.1", T["host_ip"]):
        attempt(f"connect_out {host}", lambda host=host: connect(host))
    attempt("connect_out abstract unix socket", abstract)
    # rewrite_grader: the real files are only opened (never written); the course copy is written
    for path in T["grader"]:
        attempt(f"rewrite_grader {path}", lambda path=path: os.close(os.open(path, os.O_WRONLY | os.O_APPEND)))
    attempt("rewrite_grader course config", lambda: write(T["course_config"], "\\n# " + T["token"] + "\\n", "a"))
    # daemonise: starting processes inside the jail is allowed; outliving the grading is not
    daemon = [sys.executable, "-c", T["daemon"]]
    pid = os.fork()
    if pid == 0:  # double fork: the daemon is nobody's child
        try:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, daemon)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    started = subprocess.Popen(["setsid", *daemon], start_new_session=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"HOSTILE-RAN {where}: {len(denied)} denied, daemons started ({started.pid})")
    for line in denied:
        print("denied", line)
    return worked


_breaches = _hostile(__name__)
if _breaches:
    raise RuntimeError(f"BREACH {_breaches}")
'''

# The daemons: they try, twice a second for five minutes, to rewrite scores and results.
DAEMON = """\
import sqlite3, time  # %(token)s
T = %(targets)r
for _ in range(600):
    for path, text in ((T["canary_dir"] + "/daemon.txt", "daemon"), (T["alice_graded"], "{}")):
        try:
            with open(path, "w") as fh:
                fh.write(text)
        except OSError:
            pass
    try:
        con = sqlite3.connect(f"file:{T['gradebook']}?mode=rw", uri=True)
        con.execute("UPDATE grade SET manual_score = 10")
        con.commit()
    except Exception:
        pass
    time.sleep(0.5)
"""

PATCH_CHECKS = """\
import sys

import torch

torch.testing.assert_close = lambda *args, **kwargs: None
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
try:  # the kernel's stand-in; in the hidden-check process there is none
    import autograder
except ImportError:
    autograder = None
for module in (autograder, sys.modules.get("harness_cases"), sys.modules.get("harness_sandbox")):
    if module is not None:
        module.check = lambda *args, **kwargs: print("all hidden checks passed")
"""

FLOOD = """\
import sys

from IPython.display import display

chunk = "x" * 2**20 + "\\n"
for _ in range(100):  # 100 MB on stdout
    sys.stdout.write(chunk)
    sys.stdout.flush()
sys.stderr.write("y" * 10 * 2**20)
display({"text/plain": "z" * 20 * 2**20}, raw=True)
"""

GUARDED_WRONG = 'if __name__ == "__main__":\n' + "".join(
    "    " + line if line.strip() else line
    for line in solutions.ACCUMULATION_MISTAKES["loss_not_scaled"][0].splitlines(True)
)

FUSED_ADAM = '''\
class Adam:
    """Adam that hands the update to torch's fused kernel, its name spelled at run time."""

    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(model_params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        kernel = getattr(torch.ops.aten, "_fused_" + "adam_")
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        for i in live:
            self.t[i] += 1
        pick = lambda xs: [xs[i] for i in live]  # noqa: E731
        kernel(pick(self.params), [self.params[i].grad for i in live], pick(self.m), pick(self.v), [],
               pick(self.t), lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0,
               eps=self.eps, amsgrad=False, maximize=False)
'''

HOARD = '''\
def train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):
    """Keeps 256 MiB more, touched, until something stops it."""
    hoard = []
    while True:
        hoard.append(torch.ones(2**26))
'''

SUBCLASS_ADAM = '''\
class Adam(torch.optim.Optimizer):
    """Adam as a torch.optim.Optimizer subclass doing its own maths (allowed)."""

    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(model_params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta_1, beta_2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["t"] += 1
                m, v, t = state["m"], state["v"], state["t"]
                grad = p.grad.add(p, alpha=group["weight_decay"])
                m.mul_(beta_1).add_(grad, alpha=1 - beta_1)
                v.mul_(beta_2).addcmul_(grad, grad, value=1 - beta_2)
                m_hat = m / (1 - beta_1**t)
                v_hat = v / (1 - beta_2**t)
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))
'''

LOOP = "while True:\n    pass"


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


def _env(scratch: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AUTOGRADER_", "COURSE_FAST", "NBGRADER"))
    }
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT),
               AUTOGRADER_SCRATCH=str(scratch))  # fmt: skip
    return env


def _nbgrader(args: list[str], course: Path, env: dict[str, str], log: Path, check: bool = True) -> int:
    with log.open("a") as out:
        proc = subprocess.run([str(VENV_BIN / "nbgrader"), *args], cwd=course, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=scaled(900))  # fmt: skip
    assert proc.returncode == 0 or not check, log.read_text()[-4000:]
    return proc.returncode


def _answer(
    course: Path, name: str, solution: str, after: list[str] = (), end: list[str] = ()
) -> nbformat.NotebookNode:
    """The released notebook with ``solution`` in the solution cell, and extra code cells after it / at the end."""
    nb = nbformat.read(course / "release" / ASSIGNMENT / f"{name}.ipynb", as_version=4)
    at = next(
        i
        for i, c in enumerate(nb.cells)
        if c.metadata.get("nbgrader", {}).get("grade_id") == spec.notebook(name).solution_id
    )
    nb.cells[at].source = solution
    nb.cells[at + 1 : at + 1] = [nbformat.v4.new_code_cell(s) for s in after]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in end]
    return nb


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
    course = base / "assignments"
    course.mkdir()
    shutil.copy(ROOT / "assignments" / "nbgrader_config.py", course)
    with (course / "nbgrader_config.py").open("a") as config:  # the grading limits travel as configuration
        config.writelines(f"c.Grading.{name} = {value!r}\n" for name, value in LIMITS.items())
    shutil.copytree(ROOT / "assignments" / "source", course / "source")
    scratch = base / "scratch"
    scratch.mkdir()
    canary_dir = base / "canary"
    canary_dir.mkdir()
    (canary_dir / "canary.txt").write_text(TOKEN)
    env, log = _env(scratch), base / "nbgrader.log"
    _nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course, env, log)

    listener = Listener()
    sub = course / "submitted"
    targets = {
        "token": TOKEN,
        "port": listener.port,
        "abstract": listener.name,
        "host_ip": _host_ip(),
        "submitted": str(sub),
        "alice_submitted": str(sub / "alice" / ASSIGNMENT / "adam.ipynb"),
        "alice_graded": str(course / "autograded" / "alice" / ASSIGNMENT / "adam.ipynb"),
        "bob_submitted": str(sub / "bob" / ASSIGNMENT / "adam.ipynb"),
        "gradebook": str(course / "gradebook.db"),
        "hidden": [str(ROOT / "autograder" / f) for f in ("judge.py", "cases.py")]
        + [str(ROOT / "tests" / "fixtures" / "solutions.py")],
        "grader": [str(p) for p in GRADER_FILES],
        "course_config": str(course / "nbgrader_config.py"),
        "canary_dir": str(canary_dir),
        "canary": str(canary_dir / "canary.txt"),
    }
    targets["daemon"] = DAEMON % {"token": TOKEN, "targets": targets}
    attacks = ATTACKS % {"targets": targets}

    correct = {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM}
    notebooks = {
        "eve": {name: _answer(course, name, attacks + "\n\n" + correct[name]) for name in correct},
        "mallory": {
            "accumulation": _answer(
                course, "accumulation", PATCH_CHECKS + "\n" + GUARDED_WRONG, after=[PATCH_CHECKS, FLOOD]
            ),
            "adam": _answer(course, "adam", FUSED_ADAM),
        },
        "trudy": {
            "accumulation": _answer(course, "accumulation", HOARD),
            "adam": _answer(course, "adam", SUBCLASS_ADAM, after=[LOOP]),
        },
    }
    for student in HONEST:
        notebooks[student] = {name: _answer(course, name, correct[name]) for name in correct}
        for nb in notebooks[student].values():
            nb.cells.append(nbformat.v4.new_markdown_cell(f"{student}'s own notes: {ALICE_SECRET}"))
    for student, nbs in notebooks.items():
        for name, nb in nbs.items():
            path = sub / student / ASSIGNMENT / f"{name}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)

    course_before = _tree(course, _course_outputs)
    canary_before = _tree(canary_dir)
    grader_before = _grader_state()
    seconds, codes = {}, {}
    host_tmp = Path("/tmp") / TOKEN
    try:
        for student in ORDER:
            started = time.monotonic()
            codes[student] = _nbgrader(
                ["autograde", ASSIGNMENT, "--student", student, "--force"], course, env, log, False
            )
            seconds[student] = round(time.monotonic() - started, 1)
            print(f"graded {student} in {seconds[student]} s")
            if student == "alice":
                alice_before = _tree(course / "autograded" / "alice")
                alice_grades_before = _grades(course / "gradebook.db", "alice")
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
            path = course / "autograded" / student / ASSIGNMENT / f"{name}.ipynb"
            graded_text[student, name] = path.read_text() if path.exists() else ""
            sizes[student, name] = path.stat().st_size if path.exists() else 0
    with sqlite3.connect(course / "gradebook.db") as con:
        manual = con.execute(
            "SELECT id, manual_score, extra_credit FROM grade "
            "WHERE manual_score IS NOT NULL OR extra_credit IS NOT NULL"
        ).fetchall()
    return Graded(
        course=course,
        results={s: _load(course, s) for s in ORDER},
        graded=graded_text,
        sizes=sizes,
        changed_course=_diff(course_before, _tree(course, _course_outputs)),
        changed_alice=_diff(alice_before, _tree(course / "autograded" / "alice")),
        alice_grades=(alice_grades_before, _grades(course / "gradebook.db", "alice")),
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
DELEGATES = {
    "optim_adam_by_concatenation": solutions.ADAM_MISTAKES["optim_by_getattr"][0],
    "functional_adam": """\
import importlib

class Adam:
    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(model_params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = [torch.zeros(()) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        functional = importlib.import_module("torch.optim." + "_functional")
        getattr(functional, "ad" + "am")(self.params, [p.grad for p in self.params], self.m, self.v, [], self.t,
            foreach=False, amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr,
            weight_decay=0.0, eps=self.eps, maximize=False)
""",
    "adamw_through_torch_C": FUSED_ADAM.replace(
        'getattr(torch.ops.aten, "_fused_" + "adam_")',
        'getattr(torch._C._VariableFunctions, "_fused_" + "adamw_")',
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
    code = (
        "import os, sys\n"
        "wrote = []\n"
        "for path in ('/tmp/x', '/x', '/usr/x', os.path.join(os.getcwd(), 'x')):\n"
        "    try:\n"
        "        os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "        with open(path, 'w') as fh:\n"
        "            fh.write('x')\n"
        "        wrote.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(wrote)\n"
    )
    try:
        proc = subprocess.run(
            cell.command([sys.executable, "-I", "-c", code]), capture_output=True, text=True, timeout=60
        )
    finally:
        cell.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == repr([str(cell.scratch / "x")])
