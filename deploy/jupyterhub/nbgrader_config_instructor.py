"""The instructor's nbgrader settings: copy to ~/.jupyter/nbgrader_config.py of the instructor.

formgrader then opens the course folder below; its own nbgrader_config.py (the grading
steps) is read from there. The exchange and the course id are the students' too.
"""

c = get_config()  # noqa: F821 - injected by traitlets

c.CourseDirectory.root = "/srv/optimizers-course/assignments"  # the checkout's course folder
c.CourseDirectory.course_id = "optimizers-course"  # as in assignments/nbgrader_config.py
c.Exchange.root = "/srv/nbgrader/exchange"  # made by deploy/jupyterhub/permissions.sh
