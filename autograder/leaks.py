"""The one leak check: nothing of the solutions or hidden tests reaches students.

Two entry points share one notion of what is secret (:func:`secret_lines`, :func:`secret_snippets`, read from
the instructor's source notebooks):

* :func:`release_problems` checks nbgrader's release of the lab (``release/optimizers_lab/``): the expected
  notebooks and nothing else, no markers, no outputs, no distinctive solution or hidden-test line, stubs in place;
* :func:`edition_leaks` checks a whole student edition folder: no instructor-only files, no markers, no run of
  solution lines anywhere (``course_utils`` shares single lines with the solutions, four in a row are the
  solution's own), and the release check's single-line test on the edition's lab notebooks.

Both return a list of readable problems; an empty list means safe to hand out.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from autograder import spec
from autograder.repair import grade_id

MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
FORBIDDEN_TEXT = (*MARKERS, "import autograder", "from autograder", "autograder.")
FORBIDDEN_NAMES = {"autograder", "gradebook.db", "submitted", "autograded", "feedback", "source", "release"}
TEXT_SUFFIXES = {".ipynb", ".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".json", ""}
WINDOW = 4  # this many consecutive secret lines found together count as a leak
MIN_LINE = 16  # shorter lines (``return losses``) are too common to be anyone's secret


def _source_notebooks(course_root: Path) -> dict[str, nbformat.NotebookNode]:
    folder = Path(course_root) / "source" / spec.ASSIGNMENT
    return {path.name: nbformat.read(path, as_version=4) for path in sorted(folder.glob("*.ipynb"))}


def _split(cells: list) -> tuple[list[list[str]], set[str]]:
    """(secret regions as lists of stripped non-empty lines, every public stripped line)."""
    regions, public = [], set()
    for cell in cells:
        region = None
        for line in cell.source.splitlines():
            if any(m in line for m in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS")):
                region = []
                regions.append(region)
            elif any(m in line for m in ("END SOLUTION", "END HIDDEN TESTS")):
                region = None
            elif region is not None:
                if line.strip():
                    region.append(line.strip())
            else:
                public.add(line.strip())
    return regions, public


def secret_lines(cells: list) -> list[str]:
    """Distinctive lines inside solution or hidden-test regions that appear nowhere public."""
    regions, public = _split(cells)
    return [
        line
        for region in regions
        for line in region
        if len(line) >= MIN_LINE and not line.startswith("#") and line not in public
    ]


def secret_snippets(cells: list, window: int = WINDOW) -> list[str]:
    """Every run of ``window`` consecutive lines inside the solution or hidden-test regions."""
    regions, _ = _split(cells)
    return ["\n".join(region[i : i + window]) for region in regions for i in range(len(region) - window + 1)]


def _cell_text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in nb.cells)


def _notebook_problems(
    name: str, released: nbformat.NotebookNode, source: nbformat.NotebookNode
) -> list[str]:
    """The single-line check shared by the release and the edition's lab."""
    text = _cell_text(released)
    problems = [f"{name} contains {m!r}" for m in FORBIDDEN_TEXT if m in text]
    lines = {line.strip() for line in text.splitlines()}
    leaked = [line for line in secret_lines(source.cells) if line in lines]
    if leaked:
        problems.append(f"{name} contains a solution or hidden-test line: {leaked[0][:60]!r}")
    return problems


def release_problems(course_root: Path) -> list[str]:
    """Problems that would leak answers or hidden tests into nbgrader's release of the lab (empty = safe)."""
    course_root = Path(course_root)
    release = course_root / "release" / spec.ASSIGNMENT
    sources = _source_notebooks(course_root)
    problems = []
    expected = {f"{name}.ipynb" for name in spec.NOTEBOOKS}
    found = {p.name for p in release.rglob("*") if p.is_file()} if release.exists() else set()
    problems += [f"{missing} is missing from {release}" for missing in sorted(expected - found)]
    problems += [
        f"unexpected file in the release: {extra} (only the notebooks should be handed out)"
        for extra in sorted(found - expected)
    ]
    for name, nb in spec.NOTEBOOKS.items():
        path = release / f"{name}.ipynb"
        if not path.exists() or path.name not in sources:
            continue
        released = nbformat.read(path, as_version=4)
        problems += _notebook_problems(path.name, released, sources[path.name])
        if any(c.get("outputs") for c in released.cells if c.cell_type == "code"):
            problems.append(f"{path.name} contains outputs")
        stubs = [c for c in released.cells if grade_id(c) == nb.solution_id]
        if len(stubs) != 1 or "NotImplementedError" not in stubs[0].source:
            problems.append(f"{path.name}: the solution cell {nb.solution_id!r} is not a stub")
    return problems


def edition_leaks(folder: Path, course_root: Path, allow_solutions: bool = False) -> list[str]:
    """Everything in the student edition ``folder`` that students must not get (empty when clean).

    ``course_root`` is the instructor's nbgrader course directory, whose source notebooks define the secrets.
    With ``allow_solutions`` the edition's ``solutions/`` folder may hold solution code (never markers or
    hidden tests).
    """
    folder = Path(folder)
    sources = _source_notebooks(course_root)
    snippets = [s for nb in sources.values() for s in secret_snippets(nb.cells)]
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if set(rel.parts) & FORBIDDEN_NAMES or path.suffix == ".db":
            found.append(f"{rel}: instructor-only file or folder")
        if ".git" in rel.parts or not path.is_file() or path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".ipynb":  # compare cell sources line by line, not JSON strings
            nb = nbformat.reads(text, as_version=4)
            text = _cell_text(nb)
            if rel.parts[0] == "lab" and path.name in sources:
                found += [f"{rel}: {p}" for p in _notebook_problems(path.name, nb, sources[path.name])]
                continue
        found += [f"{rel}: contains {needle!r}" for needle in FORBIDDEN_TEXT if needle in text]
        if allow_solutions and rel.parts[0] == "solutions":
            continue
        flat = "\n".join(line.strip() for line in text.splitlines() if line.strip())
        found += [f"{rel}: contains solution code:\n{s}" for s in snippets if s in flat][:1]
    return found
