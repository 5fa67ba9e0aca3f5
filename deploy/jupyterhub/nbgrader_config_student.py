"""Every student's nbgrader settings: copy to /etc/jupyter/nbgrader_config.py (all users)
or to ~/.jupyter/nbgrader_config.py of each student.

Without the exchange root a student's Assignments tab says "Unwritable directory ...
/usr/local/share/nbgrader/exchange"; without the course id it lists nothing.
"""

c = get_config()  # noqa: F821 - injected by traitlets

c.CourseDirectory.course_id = "optimizers-course"
c.Exchange.root = "/srv/nbgrader/exchange"
