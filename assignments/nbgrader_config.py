"""nbgrader settings for the course's graded lab (this folder is the nbgrader course root).

Run nbgrader from this folder, or use ``python -m autograder`` from the repository root,
which also restores stripped metadata, runs the hidden checks and writes the reports.
"""

from pathlib import Path

c = get_config()  # noqa: F821 - injected by nbgrader/traitlets

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.course_id = "optimizers-course"  # the exchange (JupyterHub) files releases under it

# What students see where a solution was.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grading: a cell gets at most this many seconds (an endless loop ends as an error in that
# cell, the rest of the notebook still runs) and at most 1000 lines of output.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
c.LimitOutput.max_lines = 1000
c.LimitOutput.max_traceback = 100

# Files nbgrader should never copy around.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]
