"""Read submitted notebooks defensively and restore their nbgrader metadata from the release.

Colab and other editors drop cell metadata, students delete, duplicate, move or rename
cells. Grading needs every graded cell back with its ``grade_id``: :func:`repair` aligns
the submission's cells with the released notebook's (order-preserving, by id, by the name
the solution defines, or by text similarity), copies the release's metadata onto the
matching cells, re-inserts graded cells that went missing, and strips nbgrader metadata
from everything else (duplicates included), so nbgrader sees a clean notebook.
"""

from __future__ import annotations

import ast
import copy
import difflib
import json
import uuid
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from autograder import settings, spec

MAX_NOTEBOOK_BYTES = 20 * 2**20


class InvalidNotebook(ValueError):
    """The file is not a notebook that can be graded (the message says why)."""


def load_notebook(path: str | Path) -> NotebookNode:
    """Read ``path`` as a v4 notebook, or raise :class:`InvalidNotebook` with a readable reason."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise InvalidNotebook(
            f"the file is {size / 2**20:.0f} MiB, more than {MAX_NOTEBOOK_BYTES // 2**20} MiB"
        )
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidNotebook(f"the file is not valid notebook JSON ({str(exc)[:120]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise InvalidNotebook("the file is JSON but not a Jupyter notebook (no list of cells)")
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
    except Exception as exc:
        raise InvalidNotebook(
            f"the notebook could not be read ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    return normalize(nb)


def normalize(nb: NotebookNode) -> NotebookNode:
    """Keep only well-formed cells, with string sources and no outputs."""
    cells = []
    for cell in nb.cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        source = cell.get("source", "")
        cell["source"] = "".join(source) if isinstance(source, list) else str(source)
        cell.setdefault("metadata", {})
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    nb.cells = cells
    return nb


def _essential(meta: object) -> dict:
    keys = ("grade", "solution", "locked", "grade_id", "points")
    return {k: meta.get(k) for k in keys} if isinstance(meta, dict) else {}


def _grade_id(cell: dict) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta.get("grade_id") if isinstance(meta, dict) else None


def defines(source: str, symbol: str) -> bool:
    """Whether ``source`` defines ``symbol`` (a function or class) at top level."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return f"def {symbol}(" in source or f"class {symbol}" in source
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == symbol for n in tree.body)


def _similarity(a: str, b: str) -> float:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < 0.5 or matcher.quick_ratio() < 0.5:
        return 0.0
    return matcher.ratio()


def _score(ref: dict, cell: dict, graded: spec.Notebook) -> float:
    """How well submission ``cell`` matches release cell ``ref`` (0 = not at all)."""
    if ref["cell_type"] != cell["cell_type"]:
        return 0.0
    ref_id = _grade_id(ref)
    score = 3.0 if ref_id and _grade_id(cell) == ref_id else 0.0
    if ref_id == graded.solution_id:
        return score + (2.0 if defines(cell["source"], graded.symbol) else 0.0)
    similarity = _similarity(ref["source"], cell["source"])
    if similarity >= 0.6:
        score += 2.0 * similarity
    return score


def _align(release: list, cells: list, graded: spec.Notebook) -> list[tuple[int | None, int | None]]:
    """Order-preserving alignment maximising the total match score; pairs (release index, cell index)."""
    n, m = len(release), len(cells)
    scores = [[_score(r, c, graded) for c in cells] for r in release]
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            take = scores[i][j] + best[i + 1][j + 1] if scores[i][j] > 0 else -1.0
            best[i][j] = max(take, best[i + 1][j], best[i][j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if scores[i][j] > 0 and best[i][j] == scores[i][j] + best[i + 1][j + 1]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            pairs.append((i, None))
            i += 1
        else:
            pairs.append((None, j))
            j += 1
    pairs += [(k, None) for k in range(i, n)] + [(None, k) for k in range(j, m)]
    return pairs


def repair(
    submitted: NotebookNode, release: NotebookNode, graded: spec.Notebook
) -> tuple[NotebookNode, list[str]]:
    """A gradable copy of ``submitted`` with the release's nbgrader metadata restored; (notebook, notes)."""
    cells = [copy.deepcopy(c) for c in submitted.cells]
    ref_cells = release.cells
    notes: list[str] = []
    out: list[dict] = []
    restored, dropped = 0, 0
    for i, j in _align(ref_cells, cells, graded):
        ref = ref_cells[i] if i is not None else None
        if ref is not None and j is not None:
            cell = cells[j]
            ref_meta = ref.get("metadata", {}).get("nbgrader")
            if ref_meta:
                if _essential(cell.get("metadata", {}).get("nbgrader")) != _essential(ref_meta):
                    restored += 1
                cell["metadata"]["nbgrader"] = copy.deepcopy(ref_meta)
                if not ref_meta.get("solution"):  # read-only cells get the release's text back
                    cell["source"] = ref["source"]
            else:
                cell["metadata"].pop("nbgrader", None)
            out.append(cell)
        elif ref is not None:
            if _grade_id(ref):
                out.append(copy.deepcopy(ref))
                what = "solution cell" if _grade_id(ref) == graded.solution_id else f"cell {_grade_id(ref)!r}"
                notes.append(f"the {what} was missing and was restored from the release")
        else:
            cell = cells[j]
            if cell.get("metadata", {}).pop("nbgrader", None) is not None:
                dropped += 1
            out.append(cell)
    notes += _summary(out, restored, dropped, graded)
    seen: set[str] = set()
    for cell in out:  # nbformat needs unique cell ids
        if not isinstance(cell.get("id"), str) or cell["id"] in seen:
            cell["id"] = uuid.uuid4().hex[:8]
        seen.add(cell["id"])
    result = nbformat.v4.new_notebook(metadata=copy.deepcopy(release.metadata))
    result.cells = [nbformat.from_dict(c) for c in out]
    result.nbformat, result.nbformat_minor = 4, max(5, submitted.get("nbformat_minor", 5))
    return result, notes


def _summary(cells: list[dict], restored: int, dropped: int, graded: spec.Notebook) -> list[str]:
    """What the report should say about the repair."""
    notes = []
    if restored:
        notes.append(
            f"nbgrader metadata of {restored} cell(s) was missing or changed and was restored from the release"
        )
    if dropped:
        notes.append(f"{dropped} extra copy(ies) of graded cells were ignored for grading")
    others = [
        c
        for c in cells
        if c["cell_type"] == "code" and not _grade_id(c) and defines(c["source"], graded.symbol)
    ]
    if others:
        notes.append(
            f"{len(others)} other cell(s) also define {graded.symbol}: the hidden checks used the solution cell, "
            "the notebook's own tests whichever definition ran last"
        )
    return notes


def solution_source(nb: NotebookNode, graded: spec.Notebook) -> str | None:
    """The source of the (repaired) notebook's solution cell, or None when there is none."""
    for cell in nb.cells:
        if _grade_id(cell) == graded.solution_id:
            return cell["source"]
    return None


def identify(notebook_text: str) -> str | None:
    """Which lab notebook a file is, from its content (for uploads with unhelpful names)."""
    hits = [name for name, graded in spec.NOTEBOOKS.items()
            if (f"def {graded.symbol}(" if graded.kind == "function" else f"class {graded.symbol}") in notebook_text]  # fmt: skip
    return hits[0] if len(hits) == 1 else None


class RepairMetadata(NbGraderPreprocessor):
    """nbgrader sanitize step: restore the release's metadata on a submission before OverwriteCells.

    Its notes (what was restored) travel in the notebook's metadata to the report."""

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        notebook = spec.NOTEBOOKS.get(resources.get("nbgrader", {}).get("notebook"))
        if notebook is None:
            return nb, resources
        from nbgrader.coursedir import CourseDirectory

        coursedir = CourseDirectory(config=self.config)
        released = Path(
            coursedir.format_path(coursedir.release_directory, ".", resources["nbgrader"]["assignment"])
        )
        path = released / f"{notebook.name}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `python -m autograder release` (or nbgrader "
                                    "generate_assignment) before autograding")  # fmt: skip
        fixed, notes = repair(normalize(nb), nbformat.read(path, as_version=4), notebook)
        fixed.metadata[settings.RESULT_KEY] = {"repair_notes": notes}
        return fixed, resources
