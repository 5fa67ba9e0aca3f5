"""Typed results that pass between the grading stages: a verdict, a part, a notebook, a student.

A graded notebook carries its :class:`NotebookResult` in its metadata (written by the
grader's nbgrader preprocessors, outside the jail), and the gradebook carries the scores;
:func:`load_student` rebuilds a :class:`StudentResult` from those two, so formgrader's
Autograde, ``nbgrader autograde`` and ``python -m autograder grade`` all report the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder import settings, spec

PASSED = "passed"
# Statuses of a whole notebook.
GRADED = "graded"
NOT_SUBMITTED = "not submitted"
NOT_GRADED = "not graded"
INVALID = "invalid notebook"


@dataclass
class Verdict:
    """What a hidden check, computed outside the student's kernel, says about one part."""

    part: str
    status: str  # passed | failed | error | timeout | crashed | disallowed | missing | limit
    message: str = ""
    hint: str = ""
    device: str = ""
    seed: int | None = None
    mistake: str | None = None  # the code of the known mistake it recognised (autograder.spec.MISTAKES)

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@dataclass
class PartResult:
    """One graded part after reconciliation: its marks and why."""

    name: str
    title: str
    points: float
    max_points: float
    status: str
    message: str = ""
    hint: str = ""
    device: str = ""
    mistake: str | None = None  # the known mistake the hidden check named, if any

    @property
    def full_marks(self) -> bool:
        return self.points >= self.max_points


@dataclass
class NotebookResult:
    """One notebook of one student."""

    name: str
    status: str  # graded | not submitted | invalid notebook | notebook crashed | notebook timed out
    score: float
    max_score: float
    parts: dict[str, PartResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    confined: bool = True
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NotebookResult:
        stored = data.get("parts", {})
        order = [p.name for p in spec.notebook(data["name"]).parts]  # JSON on disk sorts keys
        parts = {
            name: PartResult(**stored[name])
            for name in sorted(stored, key=lambda n: (n not in order, order.index(n) if n in order else 0))
        }
        return cls(**{**data, "parts": parts})

    @classmethod
    def empty(cls, name: str, status: str, note: str) -> NotebookResult:
        """A notebook that scores 0 as a whole (not submitted, unreadable, crashed)."""
        graded = spec.notebook(name)
        parts = {p.name: PartResult(p.name, p.title, 0.0, p.points, status) for p in graded.parts}
        return cls(name, status, 0.0, graded.max_score, parts, [note])


@dataclass
class StudentResult:
    """One student's notebooks; their total and whether all of it was graded in the jail."""

    student_id: str
    notebooks: dict[str, NotebookResult]

    @property
    def score(self) -> float:
        return sum(result.score for result in self.notebooks.values())

    @property
    def max_score(self) -> float:
        return spec.MAX_SCORE

    @property
    def confined(self) -> bool:
        return all(result.confined for result in self.notebooks.values())


def crash_file(course_root: Path, student: str) -> Path:
    """Where grading notes that a submission killed its worker twice (the reports read the reason there)."""
    return Path(course_root) / "autograded" / student / spec.ASSIGNMENT / "crashed.txt"


def fmt(x: float) -> str:
    """Marks in one format everywhere (CSV, reports): 5, 2.5, 3.25 (2 decimals at most, no trailing 0)."""
    return f"{round(float(x), 2):g}"


def load_student(course_root: Path, student: str) -> StudentResult:
    """A student's results from the autograded notebooks (statuses) and the gradebook (scores)."""
    import nbformat

    from autograder.repair import InvalidNotebook, load_notebook

    root = Path(course_root)
    notebooks = {}
    scores = gradebook_marks(root, student)
    manual = gradebook_manual(root, student)
    crash = crash_file(root, student)
    for name in spec.NOTEBOOKS:
        if crash.exists():
            notebooks[name] = NotebookResult.empty(name, "crashed", crash.read_text())
            continue
        submitted = root / "submitted" / student / spec.ASSIGNMENT / f"{name}.ipynb"
        graded = root / "autograded" / student / spec.ASSIGNMENT / f"{name}.ipynb"
        if not submitted.exists():
            notebooks[name] = NotebookResult.empty(name, NOT_SUBMITTED, f"{name}.ipynb was not submitted")
            continue
        try:
            load_notebook(submitted)
        except InvalidNotebook as exc:
            notebooks[name] = NotebookResult.empty(name, INVALID, str(exc))
            continue
        data = (
            nbformat.read(graded, as_version=4).metadata.get(settings.RESULT_KEY) if graded.exists() else None
        )
        if not data:
            notebooks[name] = NotebookResult.empty(
                name, "not graded", "this notebook has not been autograded"
            )
            continue
        result = NotebookResult.from_dict(data)
        for part in spec.notebook(name).parts:  # the gradebook has the last word on marks
            if (name, part.grade_id) in scores:
                result.parts[part.name].points = scores[name, part.grade_id]
            if (name, part.grade_id) in manual and part.name in result.parts:
                _mark_by_hand(result.parts[part.name], *manual[name, part.grade_id])
        result.score = sum(p.points for p in result.parts.values())
        notebooks[name] = result
    return StudentResult(student, notebooks)


def gradebook_marks(root: Path, student: str, field: str = "score") -> dict[tuple[str, str], float]:
    """``{(notebook, grade_id): marks}`` from the course's gradebook; ``field`` is nbgrader's
    ``score`` (manual marks win) or ``auto_score`` (what autograde wrote)."""
    from nbgrader.api import Gradebook, MissingEntry

    db = Path(root) / "gradebook.db"
    if not db.exists():
        return {}
    marks = {}
    with Gradebook(f"sqlite:///{db}", settings.course_id(Path(root))) as gb:
        for name in spec.NOTEBOOKS:
            try:
                notebook = gb.find_submission_notebook(name, spec.ASSIGNMENT, student)
            except MissingEntry:
                continue
            for grade in notebook.grades:
                marks[name, grade.name] = float(getattr(grade, field) or 0.0)
    return marks


MARKED_BY_HAND = "marked by the instructor"


def _mark_by_hand(part: PartResult, score: float | None, comment: str | None) -> None:
    """Show a formgrader score or comment as the instructor's, with what the hidden check said kept below it."""
    said = f"\n(the autograder said: {part.status}{': ' + part.message if part.message else ''})"
    if score is not None:
        part.status = MARKED_BY_HAND
        part.message = (f"Instructor's comment: {comment}" if comment else "") + said
    elif comment:
        part.message = f"Instructor's comment: {comment}\n{part.message}".strip()


def gradebook_manual(root: Path, student: str) -> dict[tuple[str, str], tuple[float | None, str | None]]:
    """``{(notebook, grade_id): (manual score or None, the instructor's comment or None)}`` for the cells
    an instructor scored or commented on in formgrader."""
    from nbgrader.api import Gradebook, MissingEntry

    db = Path(root) / "gradebook.db"
    if not db.exists():
        return {}
    out: dict[tuple[str, str], tuple[float | None, str | None]] = {}
    with Gradebook(f"sqlite:///{db}", settings.course_id(Path(root))) as gb:
        for name in spec.NOTEBOOKS:
            try:
                notebook = gb.find_submission_notebook(name, spec.ASSIGNMENT, student)
            except MissingEntry:
                continue
            comments = {c.name: c.manual_comment for c in notebook.comments if c.manual_comment}
            for grade in notebook.grades:
                if grade.manual_score is not None or grade.name in comments:
                    out[name, grade.name] = (grade.manual_score, comments.get(grade.name))
    return out


def load_class(course_root: Path, students: list[str] | None = None) -> dict[str, StudentResult]:
    """Every (or the given) submitted student's results, by student id."""
    students = submitted_students(course_root) if students is None else students
    return {s: load_student(course_root, s) for s in students}


def submitted_students(course_root: Path) -> list[str]:
    """The students with a submission of the lab in ``course_root/submitted/``."""
    return sorted(
        p.parent.name for p in Path(course_root).glob(f"submitted/*/{spec.ASSIGNMENT}") if p.is_dir()
    )
