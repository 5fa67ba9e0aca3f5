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

import re
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
from autograder.repair import invalid_reason, solution_source
from autograder.results import NotebookResult, PartResult, Verdict


def _course_root(info: dict) -> Path:
    """The course folder nbgrader is grading, from its gradebook's URL."""
    return Path(info["db_url"].removeprefix("sqlite:///")).parent


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
        state = resources.setdefault("autograder", {})
        why = invalid_reason(nb)
        if why:  # RepairMetadata could not read or repair it: no code of the student's runs
            state.update(status=("invalid notebook", why), started=time.monotonic())
            state["verdicts"] = _Verdicts(None, notebook, Verdict("", "invalid notebook", why))
            return nb, resources
        source = solution_source(nb, notebook)
        pool = ThreadPoolExecutor(max_workers=1)
        info = resources["nbgrader"]  # one seed per student, the same at every regrade
        base = options.seed if options.seed is not None else settings.course_seed(_course_root(info))
        seed = settings.student_seed(base, info["student"])
        future = pool.submit(checks.run_checks, {notebook.name: source}, device=options.device, seed=seed,
                             limits=options.limits, confined=not options.unconfined,
                             scratch=settings.scratch_root(options))  # fmt: skip
        pool.shutdown(wait=False)
        state.update(verdicts=_Verdicts(future, notebook), started=time.monotonic())
        return nb, resources


class _Verdicts:
    """The hidden checks' verdicts as Reconcile waits for them (``result()``): if the checks failed
    (the grader's own error) or never ran (an invalid notebook), every part says so, and the
    notebook still gets its row."""

    def __init__(self, future, notebook: spec.Notebook, instead: Verdict | None = None) -> None:
        self.future, self.notebook, self.instead = future, notebook, instead

    def result(self) -> dict[str, dict[str, Verdict]]:
        instead = self.instead
        if self.future is not None:
            try:
                return self.future.result()
            except Exception as exc:
                instead = Verdict("", "grader error", f"grader error: {type(exc).__name__}: {str(exc)[:300]}")
        parts = {p.name: Verdict(p.name, instead.status, instead.message) for p in self.notebook.parts}
        return {self.notebook.name: parts}


class JailedExecute(Execute):
    """nbgrader's Execute with the kernel in a jail, outputs capped in bytes, and a notebook time limit.

    A kernel that dies (memory, ``os._exit``) or a notebook that runs out of time does not
    fail the whole submission: the notebook keeps what it ran, and Reconcile gives it 0."""

    def __init__(self, **kwargs) -> None:
        kwargs["kernel_manager_class"] = jail.JailedKernelManager
        super().__init__(**kwargs)
        self.limits = settings.Options.from_config(self.config).limits
        self.timeout = self.limits.cell_timeout  # nbgrader's cell timeout follows c.Grading.cell_timeout
        self.startup_timeout = max(
            self.startup_timeout, self.limits.start_timeout
        )  # a busy grader starts slowly
        # After a cell's reply, what it printed may still be in flight (a flooding cell on a busy machine):
        # wait up to the cell's own limit for it rather than nbgrader's 4 s, which counted as a dead kernel.
        self.iopub_timeout = max(self.iopub_timeout, self.limits.cell_timeout)
        self._bytes: dict[int, int] = {}

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict, km=None) -> tuple:
        state = resources.setdefault("autograder", {})
        if "status" in state:  # an invalid notebook (HiddenChecks said so): nothing to run
            return nb, resources
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
                why = self.km.why_stopped() if getattr(self, "km", None) else ""
                state["status"] = ("notebook crashed", f"the kernel died ({why or type(exc).__name__})")
        finally:
            timer.cancel()
        _warnings_are_not_failures(nb)
        return nb, resources

    def _out_of_time(self, state: dict) -> None:
        limit = self.limits.notebook_timeout
        state["status"] = ("notebook timed out", f"the notebook did not finish within {limit} s")
        km = getattr(self, "km", None)
        if km is not None:
            km._kill_now()

    def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int):
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


def _warnings_are_not_failures(nb: nbformat.NotebookNode) -> None:
    """nbgrader fails a graded cell that wrote to stderr; a warning is not a failure. What graded cells
    wrote to stderr is kept, as stdout, so only an error output (an exception) fails them."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    out["name"] = "stdout"


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
        options = settings.Options.from_config(self.config)
        result = NotebookResult(
            notebook.name,
            status,
            0.0,
            notebook.max_score,
            {},
            list(repair_notes) + ([note] if note else []),
            confined=not options.unconfined,
        )
        cells = {_grade_id(c): c for c in nb.cells if _grade_id(c)}
        with Gradebook(info["db_url"], settings.course_id(_course_root(info))) as gb:
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
                    part, verdict, points, status, cells.get(part.grade_id), notebook.name
                )
                grade.auto_score = points
                grade.needs_manual_grade = False
            gb.db.commit()
        result.score = sum(p.points for p in result.parts.values())
        result.seconds = round(time.monotonic() - state.get("started", time.monotonic()), 2)
        nb.metadata[settings.RESULT_KEY] = result.to_dict()
        _hide_grader_paths(nb, settings.scratch_root(options))
        return nb, resources


def _hide_grader_paths(nb: nbformat.NotebookNode, scratch: Path) -> None:
    """Tracebacks as students may see them (formgrader, nbgrader's feedback): the grader's checkout, its
    Python and its scratch folders become short placeholders; the student's own cells are untouched."""
    import sys

    places = sorted(
        {(str(settings.REPO_ROOT), "<course>"), (sys.prefix, "<python>"), (str(scratch), "<scratch>")},
        key=lambda pair: -len(pair[0]),
    )  # fmt: skip

    def hide(text: str) -> str:
        for place, label in places:
            text = text.replace(place, label)
        return text

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [hide(line) for line in out.get("traceback", [])]
                out["evalue"] = hide(str(out.get("evalue", "")))
            elif out.get("output_type") == "stream":
                out["text"] = hide(out.get("text", ""))


def _part_result(
    part: spec.Part, verdict: Verdict, points: float, status: str, cell, notebook: str
) -> PartResult:
    """The part's result; its test cell shows the hidden check's verdict where the kernel's stand-in
    printed its placeholder: what was checked when it passed, the mistake and a hint when it did not."""
    message, part_status = verdict.message, verdict.status
    if verdict.passed and points < part.points:
        part_status = "visible test failed" if status == "graded" else status
        message = _first_error(cell) or "the test cell did not pass"
    if cell is not None:
        _show_verdict(cell, part, verdict, notebook)
    hint = (verdict.hint if not verdict.passed else part.hint) if points < part.points else ""
    mistake = None if verdict.passed else verdict.mistake
    return PartResult(
        part.name, part.title, points, part.points, part_status, message, hint, verdict.device, mistake
    )


def _show_verdict(cell, part: spec.Part, verdict: Verdict, notebook: str) -> None:
    """Put the verdict in the test cell's output, in place of the kernel stand-in's placeholder line
    (``hidden check <notebook>/<part>: judged by the grader ...``), or after the outputs if it never ran."""

    def line(name: str) -> str:
        if verdict.passed:
            return f"hidden check {name} passed: {part.title}\n"
        hint = f"Hint: {verdict.hint}\n" if verdict.hint else ""
        return f"hidden check {name} {verdict.status}: {verdict.message}\n{hint}"

    placeholder = re.compile(rf"^hidden check (\w+/{re.escape(part.name)}): .*\n?", re.MULTILINE)
    for out in cell.outputs:
        if out.get("output_type") == "stream" and placeholder.search(out.get("text", "")):
            out["text"] = placeholder.sub(lambda found: line(found[1]), out["text"], count=1)
            return
    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=line(f"{notebook}/{part.name}")))


def _first_error(cell) -> str | None:
    for out in (cell or {}).get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {str(out.get('evalue'))[:400]}"
    return None
