"""Instructor-side grading for the course's nbgrader lab (never installed, never released).

``python -m autograder --help`` lists the commands. The notebooks' hidden test cells call
:func:`check`. While grading, the jailed kernel never sees this package (it gets a
stand-in, see :mod:`autograder.jail`) and the grader judges on its own; in the
instructor's own Jupyter, :func:`check` runs the hidden checks live, in a jail.
"""

from __future__ import annotations

from autograder import settings, spec


class HiddenTestFailure(AssertionError):
    """A hidden check failed; it renders as its message and hint only (no grader code in the traceback)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return [f"\x1b[0;31mHiddenTestFailure\x1b[0m: {self.args[0]}"]


_CACHE: dict[tuple[str, str | None], dict] = {}


def _solution_from_history(nb: spec.Notebook) -> str | None:
    """The latest executed cell that defines the notebook's function or class (IPython history)."""
    try:
        history = get_ipython().user_ns.get("In", [])  # type: ignore[name-defined]
    except NameError:
        return None
    from autograder.repair import defines

    return next((source for source in reversed(history[:-1]) if defines(source, nb.symbol)), None)


def _course_options() -> settings.Options:
    return settings.Options.from_config(settings.course_config())


def check(notebook: str, part: str) -> None:
    """The hidden test of one graded part, run live: one line on success, else a HiddenTestFailure with a hint."""
    from autograder.checks import run_checks

    nb = spec.notebook(notebook)
    nb.part(part)  # a clear KeyError for a typo in a test cell
    source = _solution_from_history(nb)
    if (notebook, source) not in _CACHE:
        run = _course_options()  # c.Grading in the course's nbgrader_config.py, as when grading
        _CACHE[notebook, source] = run_checks({notebook: source}, device=run.device, limits=run.limits,
                                              confined=not run.unconfined)[notebook]  # fmt: skip
    verdict = _CACHE[notebook, source][part]
    where = f" on {verdict.device}" if verdict.device else ""
    if verdict.passed:
        print(f"hidden check {notebook}/{part} passed{where}: {nb.part(part).title}")
        return
    text = f"hidden check {notebook}/{part} {verdict.status}{where}: {verdict.message}"
    raise HiddenTestFailure(text + (f"\nHint: {verdict.hint}" if verdict.hint else ""))


__all__ = ["check", "HiddenTestFailure"]
