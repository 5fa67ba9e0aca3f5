"""JupyterHub for the course: one instructor grading with formgrader, students fetching and submitting.

Set up as nbgrader's "one class, one grader" JupyterHub example: every user runs their own
single-user server from the course's environment; the instructor's server runs formgrader
on the course folder (the ``assignments/`` folder of the instructor's checkout); students
use the Assignments tab. nbgrader's exchange is a folder every user can write to.
Step by step: assignments/INSTRUCTOR.md, "On JupyterHub". tests/test_jupyterhub.py runs
this file with two students and an instructor.

    sudo /srv/optimizers-course/.venv/bin/jupyterhub -f /srv/optimizers-course/deploy/jupyterhub/jupyterhub_config.py
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 - injected by traitlets

ENV_BIN = Path(sys.executable).parent  # the course's environment (.venv/bin): jupyterhub runs from it
INSTRUCTOR = os.environ.get("COURSE_INSTRUCTOR", "instructor")  # the Unix user who grades
STUDENTS = {s for s in os.environ.get("COURSE_STUDENTS", "").split(",") if s}  # Unix users

# Local Unix users log in with their password (PAM, JupyterHub's default); each server runs as its user.
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = {INSTRUCTOR, *STUDENTS}
c.Authenticator.admin_users = {INSTRUCTOR}
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(ENV_BIN / "jupyterhub-singleuser")]
c.Spawner.default_url = "/tree"  # Notebook 7's file browser, with nbgrader's Assignments tab
c.Spawner.environment = {
    # Every user's kernels (and the instructor's grading) read MNIST from one shared, read-only cache.
    "COURSE_DATA_DIR": os.environ.get("COURSE_DATA_DIR", "/srv/optimizers-course/data"),
    "PATH": f"{ENV_BIN}:/usr/local/bin:/usr/bin:/bin",
}
# Grading a notebook takes a while; the instructor's server answers meanwhile (INSTRUCTOR.md).
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 120
