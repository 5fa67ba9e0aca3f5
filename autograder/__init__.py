"""Instructor-side grading for the course's nbgrader lab (never installed, never released).

``python -m autograder --help`` lists the commands (release, collect, grade, feedback,
export, run). The notebooks' hidden test cells call :func:`check`, which is all a student
ever sees of this package: a call and a hint.
"""

from autograder.hidden import check

__all__ = ["check"]
