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
import json
import re
import time
import uuid
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from autograder import settings, spec

MAX_NOTEBOOK_BYTES = 20 * 2**20  # a file past this is not read at all
MAX_CELLS = 1000  # the lab's notebooks have about 25
MAX_SOURCE_CHARS = 2 * 2**20  # code and text in all cells together (outputs are dropped on reading)
REPAIR_SECONDS = 20.0  # repairing one notebook; an honest one takes well under a second
_COMPARE_CHARS = 2000  # cells are compared on their first characters only, so each pair costs a bound
_PARSE_CHARS = 200_000  # longer cells are searched for a definition textually, never parsed


class InvalidNotebook(ValueError):
    """The file is not a notebook that can be graded (the message says why)."""


class RepairTimeout(InvalidNotebook):
    """Repairing the notebook took longer than :data:`REPAIR_SECONDS`."""


def load_notebook(path: str | Path) -> NotebookNode:
    """Read ``path`` as a v4 notebook, or raise :class:`InvalidNotebook` with a readable reason.

    The size is checked before anything is parsed; whatever the JSON holds (any nesting,
    any types), the result is a clean notebook: well-formed cells with string sources, no
    outputs, only nbgrader's metadata and tags, so every later stage reads plain data."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise InvalidNotebook(
            f"the file is {size / 2**20:.0f} MiB, more than {MAX_NOTEBOOK_BYTES // 2**20} MiB"
        )
    with path.open("rb") as fh:
        raw = fh.read(MAX_NOTEBOOK_BYTES + 1)  # (a file that grew meanwhile is read no further)
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise InvalidNotebook(f"the file is not valid notebook JSON ({why})") from None
    return normalize(data)


def normalize(nb: dict) -> NotebookNode:
    """A clean v4 notebook from any parsed JSON: only well-formed cells, with string sources and no
    outputs, nbgrader metadata of plain values; :class:`InvalidNotebook` past the size bounds."""
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise InvalidNotebook("the file is JSON but not a Jupyter notebook (no list of cells)")
    if len(nb["cells"]) > MAX_CELLS:
        raise InvalidNotebook(f"the notebook has {len(nb['cells'])} cells, more than {MAX_CELLS}")
    makers = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
              "raw": nbformat.v4.new_raw_cell}  # fmt: skip
    cells, seen, total = [], set(), 0
    for cell in nb["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") not in makers:
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        elif not isinstance(source, str):
            source = ""
        total += len(source)
        if total > MAX_SOURCE_CHARS:
            raise InvalidNotebook(
                f"the cells hold more than {MAX_SOURCE_CHARS // 2**20} MiB of code and text"
            )
        clean = makers[cell["cell_type"]](source)
        meta = cell.get("metadata")
        if isinstance(meta, dict):
            if isinstance(meta.get("nbgrader"), dict):
                clean.metadata["nbgrader"] = {k: v for k, v in meta["nbgrader"].items()
                                              if isinstance(k, str) and _plain(v)}  # fmt: skip
            tags = meta.get("tags")
            if isinstance(tags, list) and all(isinstance(t, str) and len(t) < 200 for t in tags[:50]):
                clean.metadata["tags"] = tags[:50]
        cell_id = cell.get("id")
        if isinstance(cell_id, str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", cell_id) and cell_id not in seen:
            clean["id"] = cell_id
        seen.add(clean["id"])
        cells.append(clean)
    out = nbformat.v4.new_notebook(cells=cells)
    meta = nb.get("metadata")
    for key in ("kernelspec", "language_info"):
        value = meta.get(key) if isinstance(meta, dict) else None
        if isinstance(value, dict):
            out.metadata[key] = {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    return out


def _plain(value: object) -> bool:
    return (
        value is None
        or isinstance(value, (bool, int, float))
        or (isinstance(value, str) and len(value) < 10_000)
    )


def _essential(meta: object) -> dict:
    keys = ("grade", "solution", "locked", "grade_id", "points")
    return {k: meta.get(k) for k in keys} if isinstance(meta, dict) else {}


def grade_id(cell: dict) -> str | None:
    """The cell's nbgrader ``grade_id`` (None without one, or with metadata that is not a dict)."""
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta.get("grade_id") if isinstance(meta, dict) else None


def defines(source: str, symbol: str) -> bool:
    """Whether ``source`` defines ``symbol`` (a function or class) at top level."""
    textual = f"def {symbol}(" in source or f"class {symbol}" in source
    if not textual or len(source) > _PARSE_CHARS:
        return textual  # (no definition without the words; a huge cell is not parsed)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return textual
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == symbol for n in tree.body)


def _shingles(text: str) -> frozenset[str]:
    """The character trigrams of the start of ``text``: a text fingerprint of bounded size."""
    text = text[:_COMPARE_CHARS]
    return frozenset(text[i : i + 3] for i in range(max(1, len(text) - 2)))


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """How alike two fingerprints are (Dice's coefficient; 1 for the same text), in time linear in their size."""
    if not a or not b or 2 * min(len(a), len(b)) < 0.6 * (len(a) + len(b)):
        return 0.0
    return 2 * len(a & b) / (len(a) + len(b))


def _check_time(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise RepairTimeout(f"repairing the notebook took more than {REPAIR_SECONDS:g} s")


def _scores(release: list, cells: list, graded: spec.Notebook, deadline: float | None) -> list[list[float]]:
    """How well each submission cell matches each release cell (0 = not at all), in time linear in the
    submission: each pair compares bounded fingerprints, each cell is parsed at most once."""
    ref_prints = [_shingles(r["source"]) for r in release]
    scores = [[0.0] * len(cells) for _ in release]
    for j, cell in enumerate(cells):
        _check_time(deadline)
        printed, defined = None, None
        for i, ref in enumerate(release):
            if ref["cell_type"] != cell["cell_type"]:
                continue
            ref_id = grade_id(ref)
            score = 3.0 if ref_id and grade_id(cell) == ref_id else 0.0
            if ref_id == graded.solution_id:
                if defined is None:
                    defined = defines(cell["source"], graded.symbol)
                score += 2.0 if defined else 0.0
            else:
                if ref["source"] == cell["source"]:
                    similarity = 1.0
                else:
                    printed = _shingles(cell["source"]) if printed is None else printed
                    similarity = _similarity(ref_prints[i], printed)
                if similarity >= 0.6:
                    score += 2.0 * similarity
            scores[i][j] = score
    return scores


def _align(
    release: list, cells: list, graded: spec.Notebook, deadline: float | None = None
) -> list[tuple[int | None, int | None]]:
    """Order-preserving alignment maximising the total match score; pairs (release index, cell index)."""
    n, m = len(release), len(cells)
    scores = _scores(release, cells, graded, deadline)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        _check_time(deadline)
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
    submitted: NotebookNode, release: NotebookNode, graded: spec.Notebook, seconds: float = REPAIR_SECONDS
) -> tuple[NotebookNode, list[str]]:
    """A gradable copy of ``submitted`` with the release's nbgrader metadata restored; (notebook, notes).

    Its cost is linear in the submission's size; past ``seconds`` it raises :class:`RepairTimeout`."""
    deadline = time.monotonic() + seconds
    cells = [copy.deepcopy(c) for c in submitted.cells]
    ref_cells = release.cells
    notes: list[str] = []
    out: list[dict] = []
    restored, dropped = 0, 0
    for i, j in _align(ref_cells, cells, graded, deadline):
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
            if grade_id(ref):
                out.append(copy.deepcopy(ref))
                what = "solution cell" if grade_id(ref) == graded.solution_id else f"cell {grade_id(ref)!r}"
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
        if c["cell_type"] == "code" and not grade_id(c) and defines(c["source"], graded.symbol)
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
        if grade_id(cell) == graded.solution_id:
            return cell["source"]
    return None


def identify(notebook_text: str) -> str | None:
    """Which lab notebook a file is, from its content (for uploads with unhelpful names)."""
    hits = [
        name
        for name, graded in spec.NOTEBOOKS.items()
        if (f"def {graded.symbol}(" if graded.kind == "function" else f"class {graded.symbol}")
        in notebook_text
    ]
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
        release = nbformat.read(path, as_version=4)
        try:
            fixed, notes = repair(normalize(nb), release, notebook)
            fixed.metadata[settings.RESULT_KEY] = {"repair_notes": notes}
        except InvalidNotebook as exc:  # this notebook scores 0 with the reason; the grading goes on
            fixed = invalid_stand_in(release, f"{INVALID}: {exc}")
        return fixed, resources


INVALID = "the notebook could not be graded"


def invalid_stand_in(release: NotebookNode, why: str) -> NotebookNode:
    """What nbgrader grades in place of a notebook that cannot be read or repaired: the release as
    handed out, marked invalid with ``why`` (the hidden checks and the kernel then skip it)."""
    fixed = copy.deepcopy(release)
    fixed.metadata[settings.RESULT_KEY] = {"repair_notes": [], "invalid": why}
    return fixed


def invalid_reason(nb: NotebookNode) -> str | None:
    """Why a sanitized notebook was replaced by :func:`invalid_stand_in` (None: it was not)."""
    meta = nb.get("metadata", {}).get(settings.RESULT_KEY)
    return meta.get("invalid") if isinstance(meta, dict) else None
