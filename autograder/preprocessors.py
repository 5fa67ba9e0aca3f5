"""The grader's steps inside nbgrader's own ``autograde``, configured in nbgrader_config.py.

``nbgrader autograde`` (the command, formgrader's Autograde button, or ``python -m
autograder grade``) runs, per notebook:

1. sanitize: ClearOutput, :class:`~autograder.repair.RepairMetadata`, then nbgrader's own
   DeduplicateIds, OverwriteKernelspec, OverwriteCells (locked and test cells back from the
   gradebook, hidden tests included) and CheckCellMetadata;
2. autograde: :class:`HiddenChecks` (the solution cell is checked in a jail and judged
   here), :class:`JailedExecute` (the notebook runs in a jailed kernel), nbgrader's
   LimitOutput and SaveAutoGrades, then :class:`Reconcile`, which writes the final marks to
   the gradebook: a part earns its mark only if its test cell passed *and* the hidden check
   did.

The kernel never imports the grader: in the jail, ``autograder`` is a stand-in whose
``check`` only prints where the verdict will be. Whatever the kernel does to that call,
its outputs or its own state, the grader decides from its own verdicts.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import Execute, NbGraderPreprocessor

from autograder import checks, jail, settings, spec
from autograder.repair import grade_id as _grade_id
from autograder.repair import solution_source
from autograder.results import NotebookResult, PartResult, Verdict


def _known(resources: dict) -> spec.Notebook | None:
    return spec.NOTEBOOKS.get(resources.get("nbgrader", {}).get("notebook"))


class HiddenChecks(NbGraderPreprocessor):
    """Start the notebook's hidden checks (jailed, judged here) beside the kernel; Reconcile waits for them."""

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict) -> tuple:
        notebook = _known(resources)
        if notebook is None:
            return nb, resources
        options = settings.Options.from_config(self.config)  # c.Grading: nbgrader_config.py, the command line
        if not options.unconfined:
            jail.check_available()  # no jail, no grading: a clear error, and no score is written
        source = solution_source(nb, notebook)
        pool = ThreadPoolExecutor(max_workers=1)
        future = pool.submit(checks.run_checks, {notebook.name: source}, device=options.device, seed=options.seed,
                             limits=options.limits, confined=not options.unconfined)  # fmt: skip
        pool.shutdown(wait=False)
        resources["autograder"] = {"verdicts": future, "started": time.monotonic()}
        return nb, resources


class JailedExecute(Execute):
    """nbgrader's Execute with the kernel in a jail, outputs capped in bytes, and a notebook time limit.

    A kernel that dies (memory, ``os._exit``) or a notebook that runs out of time does not
    fail the whole submission: the notebook keeps what it ran, and Reconcile gives it 0."""

    def __init__(self, **kwargs) -> None:  # noqa: ANN003 - traitlets keyword arguments
        kwargs["kernel_manager_class"] = jail.JailedKernelManager
        super().__init__(**kwargs)
        self.limits = settings.Options.from_config(self.config).limits
        self.timeout = self.limits.cell_timeout  # nbgrader's cell timeout follows c.Grading.cell_timeout
        self.startup_timeout = max(self.startup_timeout, self.limits.start_timeout)  # a busy grader starts slowly
        self._bytes: dict[int, int] = {}

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict, km=None) -> tuple:  # noqa: ANN001
        state = resources.setdefault("autograder", {})
        limit = self.limits.notebook_timeout
        timer = threading.Timer(limit, self._out_of_time, args=(state,))
        timer.start()
        try:
            nb, resources = super().preprocess(nb, resources, km=km)
        except (DeadKernelError, CellTimeoutError, RuntimeError) as exc:
            nb = self.nb
            if "status" not in state and not any(c.get("execution_count") for c in nb.cells):
                raise  # the kernel never ran a cell: the grader's problem, so no mark is written
            if "status" not in state:
                hits = self.km.jail.limits_hit() if getattr(self, "km", None) else []
                why = f" ({' and '.join(hits)} limit)" if hits else ""
                state["status"] = ("notebook crashed", f"the kernel died{why}: {type(exc).__name__}")
        finally:
            timer.cancel()
        return nb, resources

    def _out_of_time(self, state: dict) -> None:
        limit = self.limits.notebook_timeout
        state["status"] = ("notebook timed out", f"the notebook did not finish within {limit} s")
        km = getattr(self, "km", None)
        if km is not None:
            km._kill_now()

    def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int):  # noqa: ANN201
        size = len(str(msg.get("content", "")))
        used = self._bytes.get(cell_index, 0)
        limit = self.limits.output_bytes
        self._bytes[cell_index] = used + size
        if used > limit:
            return None
        if used + size > limit:
            note = f"... output truncated: this cell printed more than {limit // 1024} KiB ...\n"
            outs.append(nbformat.v4.new_output("stream", name="stdout", text=note))
            return None
        return super().output(outs, msg, display_id, cell_index)


class Reconcile(NbGraderPreprocessor):
    """After SaveAutoGrades: the final marks from the test cells and the hidden verdicts, into the gradebook."""

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict) -> tuple:
        notebook = _known(resources)
        if notebook is None:
            return nb, resources
        state = resources.get("autograder", {})
        pending = state.get("verdicts")
        verdicts: dict[str, Verdict] = pending.result()[notebook.name] if pending else {}
        status, note = state.get("status", ("graded", ""))
        repair_notes = nb.metadata.get(settings.RESULT_KEY, {}).get("repair_notes", [])
        info = resources["nbgrader"]
        result = NotebookResult(notebook.name, status, 0.0, notebook.max_score, {}, list(repair_notes) + ([note] if note else []),
                                confined=not settings.Options.from_config(self.config).unconfined)  # fmt: skip
        cells = {_grade_id(c): c for c in nb.cells if _grade_id(c)}
        course_root = Path(info["db_url"].removeprefix("sqlite:///")).parent
        with Gradebook(info["db_url"], settings.course_id(course_root)) as gb:
            for part in notebook.parts:
                verdict = verdicts.get(part.name) or Verdict(
                    part.name, "error", "the hidden check did not run"
                )
                try:
                    grade = gb.find_grade(part.grade_id, notebook.name, info["assignment"], info["student"])
                except MissingEntry:
                    continue
                cell_points = float(grade.auto_score or 0.0) if status == "graded" else 0.0
                points = min(cell_points, part.points) if verdict.passed else 0.0
                result.parts[part.name] = _part_result(
                    part, verdict, points, status, cells.get(part.grade_id)
                )
                grade.auto_score = points
                grade.needs_manual_grade = False
            gb.db.commit()
        result.score = sum(p.points for p in result.parts.values())
        result.seconds = round(time.monotonic() - state.get("started", time.monotonic()), 2)
        nb.metadata[settings.RESULT_KEY] = result.to_dict()
        return nb, resources


def _part_result(part: spec.Part, verdict: Verdict, points: float, status: str, cell) -> PartResult:  # noqa: ANN001
    """The part's result; its test cell shows the hidden check's message when it failed."""
    message, part_status = verdict.message, verdict.status
    if verdict.passed and points < part.points:
        part_status = "visible test failed" if status == "graded" else status
        message = _first_error(cell) or "the test cell did not pass"
    if cell is not None and not verdict.passed:
        text = f"hidden check {verdict.status}: {verdict.message}" + (
            f"\nHint: {verdict.hint}" if verdict.hint else ""
        )
        cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text + "\n"))
    hint = part.hint if points < part.points else ""
    return PartResult(part.name, part.title, points, part.points, part_status, message, hint, verdict.device)


def _first_error(cell) -> str | None:  # noqa: ANN001
    for out in (cell or {}).get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {str(out.get('evalue'))[:400]}"
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            return (
                "the cell wrote to stderr, which nbgrader counts as a failure: " + out.get("text", "")[:200]
            )
    return None
