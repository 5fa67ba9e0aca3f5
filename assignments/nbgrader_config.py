"""nbgrader settings for the course's graded lab (this folder is the nbgrader course root).

Every way of autograding goes through the steps configured here: formgrader's Autograde
button, ``nbgrader autograde`` run from this folder, and ``python -m autograder grade``.
They restore stripped metadata, run the hidden checks in a jail and judge them outside it,
run the notebook in a jailed kernel, and reconcile the marks (see autograder/preprocessors.py).
The limits and grading options are defined in autograder/settings.py and set here, for every
run, as ``c.Grading.<name>`` (e.g. ``c.Grading.cell_timeout = 120``); ``python -m autograder
grade --cell-timeout 120`` changes one for one run. The preprocessors and the jailed kernel read
them from this configuration, never from the environment.
"""

import sys
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the grader lives beside the course
from autograder.environment import CheckEnvironment, CheckSetupCells
from autograder.preprocessors import HiddenChecks, JailedExecute, Reconcile
from autograder.repair import RepairMetadata
from autograder.sanitize import SanitizeStudentHTML

c = get_config()  # noqa: F821 - injected by nbgrader/traitlets

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.course_id = "optimizers-course"  # the exchange (JupyterHub) files releases under it

# What students see where a solution was.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grading, in nbgrader's own autograde.
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    RepairMetadata,
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]
c.Autograde.autograde_preprocessors = [
    CheckEnvironment,  # no grading (and no score) where notebooks cannot import the course
    HiddenChecks,
    JailedExecute,
    CheckSetupCells,  # a course setup cell that failed is the grader's error, not a 0
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    Reconcile,
    AssignLatePenalties,
    CheckCellMetadata,
    SanitizeStudentHTML,  # last, after the grades are saved: what formgrader and the feedback render is inert
]
# A cell gets at most c.Grading.cell_timeout seconds (JailedExecute sets nbgrader's Execute.timeout
# from it; an endless loop ends as an error in that cell, the rest of the notebook still runs), and
# at most 1000 lines of output (bytes are capped by JailedExecute at c.Grading.output_bytes).
c.Execute.interrupt_on_timeout = True
c.LimitOutput.max_lines = 1000
c.LimitOutput.max_traceback = 100

# Student HTML is shown inert (tests/test_sanitize.py). The autograded notebook, which formgrader and
# generate_feedback render, keeps markdown and outputs only as bleach allows them: no <script>, no on*
# attributes, no javascript: links, no JavaScript, SVG or widget outputs (what is not allowed is shown
# escaped, as text; autograder/sanitize.py). HTMLExporter cleans the rendered markdown and HTML again
# wherever it reads this file.
c.SanitizeStudentHTML.enabled = True  # nbconvert's preprocessors do nothing unless enabled
c.HTMLExporter.sanitize_html = True

# Files nbgrader should never copy around.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]
