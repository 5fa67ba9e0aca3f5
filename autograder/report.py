"""The report stage: feedback per student, the class at a glance, and the grades as CSV.

Everything here reads typed results (:mod:`autograder.results`) or the gradebook, and
renders with Jinja2 templates (``autograder/templates/``). Nothing a student wrote is
rendered unescaped, and no line of the grader's own code reaches a report.

The class page answers "what should I reteach?": the score distribution per notebook,
how many students made each known mistake (the codes the hidden checks' verdicts carry,
:data:`autograder.spec.MISTAKES`; no message is read), and the parts most often failed.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jinja2
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins.export import ExportPlugin

from autograder import settings, spec
from autograder.results import NOT_SUBMITTED, NotebookResult, StudentResult, fmt
from autograder.spec import Mistake

TEMPLATES = Path(__file__).with_name("templates")
_GRADER_LINE = re.compile(r"autograder|harness_|HIDDEN TESTS|BEGIN SOLUTION|END SOLUTION")


def public(text: str) -> str:
    """``text`` without any line that shows the grader's code (hidden tests, harness frames)."""
    lines = text.splitlines()
    kept = [line for line in lines if not _GRADER_LINE.search(line)]
    return "\n".join(
        kept + (["(a line from the grader's code is not shown)"] if len(kept) < len(lines) else [])
    )


def diagnose(result: NotebookResult) -> list[Mistake]:
    """The known mistakes one graded notebook's hidden checks named (each once), in the registry's order."""
    named = {p.mistake for p in result.parts.values() if p.mistake and not p.full_marks}
    return [m for m in spec.MISTAKES.values() if m.code in named and m.notebook == result.name]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["public"] = public
    return env


def student_page(course_root: Path, student: str) -> Path:
    """Where :func:`feedback` writes one student's page."""
    return Path(course_root) / "reports" / "students" / f"{student}.html"


def feedback(course_root: Path, results: dict[str, StudentResult]) -> list[Path]:
    """One HTML page per student at ``reports/students/<student>.html``, for the instructor (or to hand out
    where there is no nbgrader exchange, e.g. Colab with uploads); the paths. Students on nbgrader get the
    same per-part verdicts and hints in the graded notebook, through nbgrader's own feedback; nothing here
    goes into nbgrader's ``feedback/`` folder, which ``generate_feedback`` owns."""
    template = _environment().get_template("feedback.html.j2")
    written = []
    for student, result in sorted(results.items()):
        path = student_page(course_root, student)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.render(assignment=spec.ASSIGNMENT, result=result))
        written.append(path)
    return written


@dataclass
class ClassSummary:
    """What the class page shows, counted from the typed results."""

    students: int
    scores: dict[str, Counter]  # notebook -> score -> students (graded notebooks)
    missing: dict[str, int]  # notebook -> students who did not submit it
    mistakes: list[tuple[Mistake, int, int]]  # mistake, students who made it, students who submitted
    failed_parts: list[tuple[str, str, int, int]]  # notebook, part, students who lost marks, submitted


def summarize(results: dict[str, StudentResult]) -> ClassSummary:
    """Count scores, diagnosed mistakes and failed parts over a class."""
    scores = {name: Counter() for name in spec.NOTEBOOKS}
    missing = dict.fromkeys(spec.NOTEBOOKS, 0)
    made: Counter = Counter()
    lost: Counter = Counter()
    for result in results.values():
        for name, nb_result in result.notebooks.items():
            if nb_result.status == NOT_SUBMITTED:
                missing[name] += 1
                continue
            scores[name][nb_result.score] += 1
            made.update(m.code for m in diagnose(nb_result))
            lost.update((name, p.name) for p in nb_result.parts.values() if not p.full_marks)
    submitted = {name: sum(scores[name].values()) for name in spec.NOTEBOOKS}
    mistakes = [(m, made[m.code], submitted[m.notebook]) for m in spec.MISTAKES.values()]
    mistakes.sort(key=lambda row: -row[1])
    failed = [
        (n, p.name, lost[n, p.name], submitted[n])
        for n, graded in spec.NOTEBOOKS.items()
        for p in graded.parts
    ]
    failed.sort(key=lambda row: -row[2])
    return ClassSummary(len(results), scores, missing, mistakes, failed)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(summary: ClassSummary) -> dict[str, str]:
    """The class page's figures, as base64 PNGs (drawn without pyplot, so no global state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(spec.NOTEBOOKS), 3))
    for ax, (name, graded) in zip(
        fig.subplots(1, len(spec.NOTEBOOKS), squeeze=False)[0], spec.NOTEBOOKS.items()
    ):
        marks = sorted(set(range(graded.max_score + 1)) | set(summary.scores[name]))
        ax.bar([fmt(x) for x in marks], [summary.scores[name][x] for x in marks], color="#4c72b0")
        ax.bar(["not\nsubmitted"], [summary.missing[name]], color="#999999")
        ax.set(title=f"{name}.ipynb", xlabel="score", ylabel="students")
        ax.yaxis.get_major_locator().set_params(integer=True)
    figures = {"scores": _png(fig)}
    for key, rows in (
        ("mistakes", [(m.label, made, of) for m, made, of in summary.mistakes if made]),
        ("parts", [(f"{n}: {p}", lost, of) for n, p, lost, of in summary.failed_parts if lost]),
    ):
        fig = Figure(figsize=(7, 0.4 * len(rows) + 1.2))
        ax = fig.subplots()
        ax.barh([r[0] for r in rows][::-1], [r[1] / max(r[2], 1) for r in rows][::-1], color="#c44e52")
        ax.set(xlim=(0, 1), xlabel="share of the students who submitted the notebook")
        if not rows:
            ax.text(0.5, 0.5, "none in this class", ha="center", va="center", transform=ax.transAxes)
        figures[key] = _png(fig)
    return figures


def write_class_csv(summary: ClassSummary, out: Path) -> Path:
    """The class page's numbers: one row per (kind, notebook, item) with students and out of how many."""
    with Path(out).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["kind", "notebook", "item", "students", "of"])
        for name in spec.NOTEBOOKS:
            graded = sum(summary.scores[name].values())
            for score in sorted(summary.scores[name]):
                writer.writerow(["score", name, fmt(score), summary.scores[name][score], graded])
            writer.writerow(["score", name, "not submitted", summary.missing[name], summary.students])
        for mistake, made, of in summary.mistakes:
            writer.writerow(["mistake", mistake.notebook, mistake.label, made, of])
        for name, part, lost, of in summary.failed_parts:
            writer.writerow(["failed part", name, part, lost, of])
    return Path(out)


def class_page(course_root: Path, results: dict[str, StudentResult], out: Path) -> Path:
    """The class at a glance: ``out`` (HTML with embedded plots) and the same numbers in ``out``.csv."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    csv_path = write_class_csv(summary, out.with_suffix(".csv"))
    html = _environment().get_template("class.html.j2").render(
        course=_course_name(Path(course_root)), assignment=spec.ASSIGNMENT, summary=summary,
        plots=_plots(summary), csv_name=csv_path.name,
        unconfined=sorted(s for s, r in results.items() if not r.confined),
        collected=_collect_notices(course_root),
    )  # fmt: skip
    out.write_text(html)
    return out


def _collect_notices(course_root: Path) -> list[str]:
    """What the last collect reported by name (collisions, unreadable uploads, archives): issue 19.6."""
    from autograder.collect import read_notes

    return [str(line) for line in read_notes(Path(course_root)).get("notices") or []]


def _course_name(root: Path) -> str:
    try:
        return settings.course_id(root)
    except Exception:  # no readable nbgrader_config.py: the folder's name will do
        return root.name


class LabCsvExport(ExportPlugin):
    """nbgrader export plugin: the lab's grades, one row per student with a column per notebook.

    ``nbgrader export --exporter=autograder.report.LabCsvExport --to grades.csv`` from the course
    folder; marks come from the gradebook, so manual grades in formgrader count."""

    def export(self, gradebook: Gradebook) -> None:
        """Write the CSV to ``self.to`` (default grades.csv)."""
        wanted = {str(s) for s in self.student}
        dest = Path(self.to or "grades.csv")
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.log.info("Exporting the lab's grades to %s", dest)
        with dest.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["student_id", *spec.NOTEBOOKS, "total", "max_score"])
            for student in sorted(s.id for s in gradebook.students):
                if wanted and student not in wanted:
                    continue
                scores = _notebook_scores(gradebook, student)
                if scores is not None:
                    writer.writerow([student, *map(fmt, scores), fmt(sum(scores)), fmt(spec.MAX_SCORE)])


def _notebook_scores(gradebook: Gradebook, student: str) -> list[float] | None:
    """The student's score per lab notebook, or None if they have no submission of the lab."""
    try:
        gradebook.find_submission(spec.ASSIGNMENT, student)
    except MissingEntry:
        return None
    scores = []
    for name in spec.NOTEBOOKS:
        try:
            scores.append(float(gradebook.find_submission_notebook(name, spec.ASSIGNMENT, student).score))
        except MissingEntry:
            scores.append(0.0)
    return scores


def export_csv(course_root: Path, out: Path) -> Path:
    """Run :class:`LabCsvExport` on ``course_root/gradebook.db``; the CSV's path."""
    root = Path(course_root)
    db = root / "gradebook.db"
    if not db.exists():
        raise FileNotFoundError(f"{db} does not exist: grade the class first (python -m autograder grade)")
    with Gradebook(f"sqlite:///{db}", settings.course_id(root)) as gradebook:
        LabCsvExport(to=str(out)).export(gradebook)
    return Path(out)
