"""The instructor's pipeline: release, collect, grade, feedback, export.

Every step works on the nbgrader course directory (``assignments/``) and can be run on
its own (``python -m autograder STEP``) or all at once (``python -m autograder run``).
Grading runs each student in a worker process and each notebook in its own throw-away
nbgrader course, so a submission that loops, crashes its kernel, floods its output or
breaks its JSON can only cost its own marks.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from autograder import spec
from autograder.hidden import REPO_ROOT

ASSIGNMENT = spec.ASSIGNMENT
RESULT_FILE = "autograder.json"
LEAK_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "autograder")

# Name patterns of flat uploads: each a regex with named groups `student` and `notebook`.
PATTERNS = {
    # Google Forms file-upload questions store "<original file name> - <respondent name>.ipynb".
    "forms": r"^(?P<notebook>.+?) - (?P<student>[^-]+?)$",
    # Canvas "Download submissions": "<sortable name>[_LATE]_<user id>_<submission id>_<file name>".
    "canvas": r"^(?P<student>[a-z]+)(?:_LATE)?_\d+_\d+_(?P<notebook>.+)$",
    # Moodle: a folder per submission, "<Full Name>_<id>_assignsubmission_file_" (matched on folder names).
    "moodle": r"^(?P<student>.+?)_\d+_assignsubmission_file_?$",
}


class PipelineError(RuntimeError):
    """A step cannot go on; the message says what to do."""


@dataclass
class Options:
    """Grading settings (time limits in seconds)."""

    workers: int = 2
    cell_timeout: int = 60
    notebook_timeout: int = 300
    part_timeout: float = 30.0
    device: str | None = None
    threads: int | None = None  # torch threads per process (kernels, sandboxes); default 1


@dataclass
class Course:
    """Paths of an nbgrader course directory."""

    root: Path = field(default_factory=lambda: REPO_ROOT / "assignments")

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if not (self.root / "nbgrader_config.py").exists():
            raise PipelineError(f"{self.root} is not an nbgrader course directory (no nbgrader_config.py)")

    source = property(lambda self: self.root / "source" / ASSIGNMENT)
    release = property(lambda self: self.root / "release" / ASSIGNMENT)
    submitted = property(lambda self: self.root / "submitted")
    autograded = property(lambda self: self.root / "autograded")
    feedback = property(lambda self: self.root / "feedback")
    db = property(lambda self: self.root / "gradebook.db")

    def students(self) -> list[str]:
        if not self.submitted.exists():
            return []
        return sorted(p.name for p in self.submitted.iterdir() if (p / ASSIGNMENT).is_dir())

    def result_path(self, student: str) -> Path:
        return self.autograded / student / ASSIGNMENT / RESULT_FILE


def course_id(course: Course) -> str:
    text = (course.root / "nbgrader_config.py").read_text()
    found = re.search(r"course_id\s*=\s*[\"']([^\"']+)", text)
    return found.group(1) if found else "default_course"


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic` from here
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


# `python -m nbgrader`, minus one second of start-up: jsonschema builds an IRI grammar
# (rfc3987_syntax) at import time that nbgrader never uses; hiding it makes jsonschema skip it.
_NBGRADER_MAIN = (
    "import sys; sys.modules['rfc3987_syntax'] = None; "
    "from nbgrader.apps.nbgraderapp import main; sys.exit(main())"
)


def nbgrader(
    args: list[str], cwd: Path, *, timeout: float | None = None, env: dict | None = None
) -> tuple[int, str]:
    """Run ``nbgrader ARGS`` in ``cwd`` (its own process group, killed on timeout); (exit code, log tail)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _NBGRADER_MAIN, *args], cwd=cwd, env=env or _env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")[-6000:]
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the kernel is in the same group
        except ProcessLookupError:
            pass
        proc.communicate()
        return -9, f"timed out after {timeout} s"


# --------------------------------------------------------------------------- release


def release(course: Course) -> list[Path]:
    """``nbgrader generate_assignment`` then :func:`check_release`; the released notebooks."""
    code, log = nbgrader(["generate_assignment", ASSIGNMENT, "--force"], course.root)
    if code != 0:
        raise PipelineError(f"nbgrader generate_assignment failed:\n{log}")
    problems = check_release(course)
    if problems:
        raise PipelineError("The release is not safe to hand out:\n  - " + "\n  - ".join(problems))
    return sorted(course.release.glob("*.ipynb"))


def _secret_lines(cells: list) -> list[str]:
    """Distinctive lines inside solution or hidden-test regions that appear nowhere public."""
    secret, public = [], set()
    for cell in cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN SOLUTION" in line or "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END SOLUTION" in line or "END HIDDEN TESTS" in line:
                inside = False
            elif inside:
                if len(line.strip()) >= 16 and not line.strip().startswith("#"):
                    secret.append(line.strip())
            else:
                public.add(line.strip())
    return [line for line in secret if line not in public]


def check_release(course: Course) -> list[str]:
    """Problems that would leak answers or hidden tests into the student version (empty = safe)."""
    import nbformat

    problems = []
    expected = {f"{name}.ipynb" for name in spec.NOTEBOOKS}
    found = {p.name for p in course.release.rglob("*") if p.is_file()} if course.release.exists() else set()
    for missing in sorted(expected - found):
        problems.append(f"{missing} is missing from {course.release}")
    for extra in sorted(found - expected):
        problems.append(f"unexpected file in the release: {extra} (only the notebooks should be handed out)")
    for name, nb in spec.NOTEBOOKS.items():
        path = course.release / f"{name}.ipynb"
        if not path.exists():
            continue
        text = path.read_text()
        for marker in LEAK_MARKERS:
            if marker in text:
                problems.append(f"{path.name} contains {marker!r}")
        released = nbformat.read(path, as_version=4)
        if any(c.get("outputs") for c in released.cells if c.cell_type == "code"):
            problems.append(f"{path.name} contains outputs")
        source = nbformat.read(course.source / f"{name}.ipynb", as_version=4)
        for line in _secret_lines(source.cells):
            if line in text:
                problems.append(f"{path.name} contains a solution or hidden-test line: {line[:60]!r}")
                break
        stubs = [
            c
            for c in released.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == nb.solution_id
        ]
        if len(stubs) != 1 or "NotImplementedError" not in stubs[0].source:
            problems.append(f"{path.name}: the solution cell {nb.solution_id!r} is not a stub")
    return problems


def ensure_release(course: Course) -> None:
    if check_release(course) or not course.db.exists():
        release(course)


# --------------------------------------------------------------------------- collect


def slug(name: str) -> str:
    """A student id nbgrader and file systems accept: 'Jane Doe' -> 'jane_doe', 'jd@uni.edu' -> 'jd'."""
    name = name.strip().split("@")[0] if "@" in name else name.strip()
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _notebook_name(stem: str, text: str) -> str | None:
    from autograder.repair import identify

    clean = re.sub(r"^(copy of |kopie von |copie de )", "", stem.lower().strip())
    clean = re.sub(r"(\s*\(\d+\)|[-_ ]\d+)$", "", clean)
    hits = [name for name in spec.NOTEBOOKS if name in clean]
    if len(hits) == 1:
        return hits[0]
    return identify(text)


@dataclass
class Upload:
    student: str
    notebook: str
    path: Path
    mtime: float


def scan(folder: Path, pattern: str | None = None) -> tuple[list[Upload], list[str]]:
    """Find submissions in ``folder``: a sub-folder per student, or flat files named by ``pattern``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"{folder} is not a folder of submissions")
    regex = re.compile(PATTERNS.get(pattern, pattern), re.IGNORECASE) if pattern else None
    uploads, skipped = [], []

    def add(student: str, path: Path, stem: str | None = None) -> None:
        try:
            text = path.read_text(errors="replace")[:2_000_000]
        except OSError as exc:
            skipped.append(f"{path}: unreadable ({exc})")
            return
        name = _notebook_name(stem or path.name.split(".ipynb")[0], text)
        if name is None:
            skipped.append(f"{path}: not recognisably one of {sorted(spec.NOTEBOOKS)}")
            return
        uploads.append(Upload(slug(student), name, path, path.stat().st_mtime))

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            student = entry.name
            for key in ([pattern] if pattern and pattern in PATTERNS else []) + ["moodle"]:
                found = re.match(PATTERNS[key], entry.name, re.IGNORECASE)
                if found and "student" in found.groupdict():
                    student = found.group("student")
                    break
            for path in sorted(entry.rglob("*.ipynb")):
                if ".ipynb_checkpoints" not in path.parts:
                    add(student, path)
        elif entry.suffix == ".ipynb" or entry.name.endswith(".ipynb.json"):
            stem = entry.name.split(".ipynb")[0]
            candidates = [regex] if regex else [re.compile(p, re.IGNORECASE) for p in PATTERNS.values()]
            for candidate in candidates:
                found = candidate.match(stem)
                if found and found.groupdict().get("student"):
                    add(found.group("student"), entry, found.groupdict().get("notebook") or stem)
                    break
            else:
                skipped.append(f"{entry.name}: the file name does not say whose it is (use a folder per student, "
                               f"or --pattern with (?P<student>...) and (?P<notebook>...) groups)")  # fmt: skip
    return uploads, skipped


def collect(course: Course, folder: Path, pattern: str | None = None) -> dict:
    """Copy the latest upload per student and notebook into ``submitted/`` (nbgrader's layout)."""
    uploads, skipped = scan(folder, pattern)
    latest: dict[tuple[str, str], Upload] = {}
    for up in uploads:
        key = (up.student, up.notebook)
        if not up.student:
            skipped.append(f"{up.path}: empty student id")
        elif key not in latest or up.mtime >= latest[key].mtime:
            latest[key] = up
    students: dict[str, float] = {}
    for (student, name), up in sorted(latest.items()):
        dest = course.submitted / student / ASSIGNMENT
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.fspath(up.path), dest / f"{name}.ipynb")
        students[student] = max(students.get(student, 0.0), up.mtime)
    for student, mtime in students.items():
        stamp = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f %Z")
        (course.submitted / student / ASSIGNMENT / "timestamp.txt").write_text(stamp)
    return {"students": sorted(students), "files": len(latest), "skipped": skipped}


# --------------------------------------------------------------------------- grade


def grade(
    course: Course, options: Options | None = None, students: list[str] | None = None
) -> dict[str, dict]:
    """Autograde every (or the given) collected student in parallel; results per student."""
    options = options or Options()
    if options.device == "cuda" and not _cuda_available():
        raise PipelineError("--device cuda was requested, but torch sees no CUDA GPU here; use --device cpu")
    ensure_release(course)
    students = students or course.students()
    if not students:
        raise PipelineError(
            f"nothing to grade in {course.submitted}: run `python -m autograder collect DIR` first"
        )
    workers = max(1, min(options.workers, len(students)))
    threads = options.threads or 1  # tiny tensors: extra threads only spin against the other processes
    results: dict[str, dict] = {}
    torch = sys.modules.get("torch")
    cuda_started = torch is not None and torch.cuda.is_initialized()
    context = get_context("spawn" if cuda_started else "fork")  # a forked child cannot use its parent's CUDA
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(grade_student, str(course.root), s, options, threads): s for s in students}
        for future in as_completed(futures):
            student = futures[future]
            try:
                results[student] = future.result()
            except Exception as exc:  # a grader bug or a dead worker must not cost other students
                results[student] = _failed_student(student, f"grader error: {type(exc).__name__}: {exc}")
            path = course.result_path(student)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results[student], indent=1))
    _record_in_gradebook(course, results)
    return dict(sorted(results.items()))


def _cuda_available() -> bool:
    """Asked in a child process, so this process never starts CUDA (its workers may be forked)."""
    code = "import torch; print(torch.cuda.is_available())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    return proc.stdout.strip() == "True"


def _failed_student(student: str, message: str) -> dict:
    notebooks = {}
    for name, nb in spec.NOTEBOOKS.items():
        notebooks[name] = _notebook_result(nb, "grader error", [message])
    return {"student_id": student, "notebooks": notebooks, "score": 0, "max_score": spec.MAX_SCORE}


def _notebook_result(nb: spec.Notebook, status: str, notes: list[str]) -> dict:
    parts = {p.name: {"title": p.title, "points": 0, "max_points": p.points, "status": status, "message": "",
                      "hint": "", "device": ""} for p in nb.parts}  # fmt: skip
    return {
        "status": status,
        "notes": notes,
        "score": 0,
        "max_score": nb.max_score,
        "parts": parts,
        "seconds": 0.0,
    }


def grade_student(root: str, student: str, options: Options, threads: int) -> dict:
    """Grade one student's notebooks (runs in a worker process)."""
    import nbformat

    from autograder.hidden import run_many
    from autograder.repair import InvalidNotebook, load_notebook, repair, solution_source

    course = Course(Path(root))
    notebooks: dict[str, dict] = {}
    ready: dict[str, tuple] = {}  # notebook -> (repaired notebook, notes)
    for name, nb in spec.NOTEBOOKS.items():
        path = course.submitted / student / ASSIGNMENT / f"{name}.ipynb"
        if not path.exists():
            notebooks[name] = _notebook_result(nb, "not submitted", [f"{name}.ipynb was not submitted"])
            continue
        try:
            submitted = load_notebook(path)
        except InvalidNotebook as exc:
            notebooks[name] = _notebook_result(nb, "invalid notebook", [str(exc)])
            continue
        ready[name] = repair(submitted, nbformat.read(course.release / f"{name}.ipynb", as_version=4), nb)

    with tempfile.TemporaryDirectory(prefix=f"autograde-{slug(student)}-") as work:
        work = Path(work)
        verdicts: dict[str, dict[str, dict]] = {name: {} for name in ready}
        lock = threading.Lock()

        def publish(name: str, part: str, verdict: dict) -> None:
            with lock:  # the kernel's hidden cells wait for their part to appear in this file
                verdicts[name][part] = verdict
                path = work / f"{name}-verdicts.json"
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({name: verdicts[name]}))
                tmp.replace(path)

        # One sandbox checks both solution cells while nbgrader runs the notebooks.
        sources = {name: solution_source(fixed, spec.notebook(name)) for name, (fixed, _) in ready.items()}
        checks = threading.Thread(
            target=run_many, args=(sources,), daemon=True,
            kwargs=dict(device=options.device, seed=secrets.randbelow(2**31), part_timeout=options.part_timeout,
                        protected=[course.root, work], threads=threads, on_verdict=publish),
        )  # fmt: skip
        if ready:
            checks.start()
        for name, (fixed, notes) in ready.items():
            start = time.monotonic()
            result = _run_nbgrader(
                course, student, name, fixed, verdicts[name], work, checks, options, threads
            )
            result["notes"] = notes + result["notes"]
            result["seconds"] = round(time.monotonic() - start, 2)
            notebooks[name] = result
    notebooks = {name: notebooks[name] for name in spec.NOTEBOOKS}
    score = sum(r["score"] for r in notebooks.values())
    return {"student_id": student, "notebooks": notebooks, "score": score, "max_score": spec.MAX_SCORE}


def _run_nbgrader(course: Course, student: str, name: str, repaired, verdicts: dict, work: Path,  # noqa: ANN001
                  checks: threading.Thread, options: Options, threads: int) -> dict:  # fmt: skip
    """Autograde one repaired notebook in a private copy of the course; reconcile with the verdicts."""
    import nbformat

    nb = spec.notebook(name)
    verdict_file = work / f"{name}-verdicts.json"
    iso = work / name
    (iso / "submitted" / student / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(course.root / "nbgrader_config.py", iso / "nbgrader_config.py")
    shutil.copy(course.db, iso / "gradebook.db")
    shutil.copytree(
        course.source, iso / "source" / ASSIGNMENT, ignore=shutil.ignore_patterns("*.ipynb", ".*")
    )
    sub = iso / "submitted" / student / ASSIGNMENT
    nbformat.write(repaired, sub / f"{name}.ipynb")
    stamp = course.submitted / student / ASSIGNMENT / "timestamp.txt"
    if stamp.exists():
        shutil.copy(stamp, sub / "timestamp.txt")
    env = _env({
        "AUTOGRADER_VERDICTS": str(verdict_file), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
        "AUTOGRADER_WAIT": str(max(10, options.cell_timeout - 5)),
    })  # fmt: skip
    code, log = nbgrader(
        ["autograde", ASSIGNMENT, "--student", student, "--force", f"--Execute.timeout={options.cell_timeout}",
         f"--CourseDirectory.root={iso}"],
        iso, timeout=options.notebook_timeout, env=env,
    )  # fmt: skip
    checks.join()  # bounded: every part has its own time limit
    graded = iso / "autograded" / student / ASSIGNMENT / f"{name}.ipynb"
    (course.autograded / student / ASSIGNMENT / graded.name).unlink(
        missing_ok=True
    )  # no stale copy from a past run
    cell_scores, errors = {}, {}
    status, notes = "graded", []
    if code == -9:
        status = "notebook timed out"
        notes.append(f"the notebook did not finish within {options.notebook_timeout} s; it gets no marks")
    elif not graded.exists():
        status = "notebook crashed"
        reason = (
            "the kernel died" if "DeadKernel" in log or "Kernel died" in log else "nbgrader could not run it"
        )
        notes.append(f"{reason}; the notebook gets no marks (did it call os._exit or exhaust memory?)")
    else:
        cell_scores = _cell_scores(iso, student, name)
        errors = _cell_errors(graded)
        dest = course.autograded / student / ASSIGNMENT
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(graded, dest / graded.name)
    parts, total = {}, 0.0
    for part in nb.parts:
        v = verdicts.get(part.name) or {"passed": False, "status": "error", "message": "the hidden check did not run",
                                         "hint": part.hint, "device": ""}  # fmt: skip
        cell = cell_scores.get(part.grade_id, 0.0)
        points = (
            min(cell, part.points) if v["passed"] else 0.0
        )  # both the cell and the hidden check must pass
        message, part_status = v["message"], v["status"]
        if v["passed"] and points < part.points:
            part_status = "visible test failed" if status == "graded" else status
            message = errors.get(part.grade_id) or "the test cell did not pass"
        total += points
        parts[part.name] = {"title": part.title, "points": points, "max_points": part.points, "status": part_status,
                            "message": message, "hint": part.hint if points < part.points else "",
                            "device": v["device"]}  # fmt: skip
    return {"status": status, "notes": notes, "score": total, "max_score": nb.max_score, "parts": parts}


def _cell_scores(iso: Path, student: str, name: str) -> dict[str, float]:
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(f"sqlite:///{iso / 'gradebook.db'}", course_id(Course(iso))) as gb:
        try:
            notebook = gb.find_submission_notebook(name, ASSIGNMENT, student)
        except MissingEntry:
            return {}
        for grade in notebook.grades:
            scores[grade.name] = float(grade.score or 0.0)
    return scores


def _cell_errors(path: Path) -> dict[str, str]:
    """The first error line of each failed test cell of an autograded notebook (its grade_id -> text)."""
    import nbformat

    errors = {}
    for cell in nbformat.read(path, as_version=4).cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors[gid] = f"{out.get('ename')}: {str(out.get('evalue'))[:400]}"
                break
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                errors[gid] = (
                    "the cell wrote to stderr, which nbgrader counts as a failure: "
                    + out.get("text", "")[:200]
                )
                break
    return errors


def _record_in_gradebook(course: Course, results: dict[str, dict]) -> None:
    """Store the reconciled scores in the course's gradebook.db (for formgrader and `nbgrader export`)."""
    import warnings

    from nbgrader.api import Gradebook, MissingEntry
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings(), Gradebook(f"sqlite:///{course.db}", course_id(course)) as gb:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush chatter
        for student, result in results.items():
            gb.update_or_create_student(student)
            gb.update_or_create_submission(ASSIGNMENT, student)
            for name, nb in spec.NOTEBOOKS.items():
                for part in nb.parts:
                    try:
                        grade = gb.find_grade(part.grade_id, name, ASSIGNMENT, student)
                    except MissingEntry:
                        continue
                    grade.auto_score = result["notebooks"][name]["parts"][part.name]["points"]
                    grade.needs_manual_grade = False
            gb.db.commit()


# --------------------------------------------------------------------------- feedback and export


def load_results(course: Course) -> dict[str, dict]:
    out = {}
    for student in course.students():
        path = course.result_path(student)
        if path.exists():
            out[student] = json.loads(path.read_text())
    return out


_STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.4rem;vertical-align:top;text-align:left}
.passed{color:#1a7f37}.lost{color:#b42318}pre{white-space:pre-wrap;margin:0;font-size:.9em}.note{color:#555}"""


def feedback(course: Course) -> list[Path]:
    """One HTML report per graded student: marks per part, what went wrong and a hint (no test code)."""
    written = []
    for student, result in load_results(course).items():
        esc = html.escape
        rows = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(ASSIGNMENT)}: {esc(student)}</title>"
                f"<style>{_STYLE}</style></head><body>",
                f"<h1>{esc(ASSIGNMENT)} - feedback for {esc(student)}</h1>",
                f"<p><b>Total: {_fmt(result['score'])} / {result['max_score']}</b></p>"]  # fmt: skip
        for name, nbres in result["notebooks"].items():
            rows.append(
                f"<h2>{esc(name)}.ipynb: {_fmt(nbres['score'])} / {nbres['max_score']} ({esc(nbres['status'])})</h2>"
            )
            rows += [f"<p class='note'>{esc(n)}</p>" for n in nbres.get("notes", [])]
            rows.append(
                "<table><tr><th>Check</th><th>Marks</th><th>Result</th><th>What happened / hint</th></tr>"
            )
            for part in nbres["parts"].values():
                ok = part["points"] >= part["max_points"]
                detail = esc(part["message"]) + (
                    f"<br><b>Hint:</b> {esc(part['hint'])}" if part.get("hint") else ""
                )
                device = (
                    f"<br><span class='note'>checked on {esc(part['device'])}</span>"
                    if part.get("device")
                    else ""
                )
                rows.append(f"<tr><td>{esc(part['title'])}</td><td>{_fmt(part['points'])} / {part['max_points']}</td>"
                            f"<td class='{'passed' if ok else 'lost'}'>{esc(part['status'])}</td>"
                            f"<td><pre>{detail}</pre>{device}</td></tr>")  # fmt: skip
            rows.append("</table>")
        rows.append("</body></html>")
        path = course.feedback / student / ASSIGNMENT / "report.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(rows))
        written.append(path)
    return written


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def export(course: Course, out: Path) -> Path:
    """A CSV with student_id, one column per notebook, total and max_score."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student_id", *spec.NOTEBOOKS, "total", "max_score"])
        for student, result in load_results(course).items():
            scores = [_fmt(result["notebooks"][name]["score"]) for name in spec.NOTEBOOKS]
            writer.writerow([student, *scores, _fmt(result["score"]), result["max_score"]])
    return out


def run(
    course: Course, folder: Path, out: Path, pattern: str | None = None, options: Options | None = None
) -> Path:
    """release + collect + grade + feedback + export."""
    release(course)
    summary = collect(course, folder, pattern)
    for line in summary["skipped"]:
        print(f"skipped: {line}", file=sys.stderr)
    grade(course, options, summary["students"])
    feedback(course)
    return export(course, out)
