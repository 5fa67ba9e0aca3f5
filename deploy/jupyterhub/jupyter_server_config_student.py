"""Students' single-user servers without formgrader: copy to ~/.jupyter/jupyter_server_config.py
of each student (or /etc/jupyter, then enable formgrader in the instructor's own config).

nbgrader enables formgrader for every user of the environment; a student opening it would
only see an error, but nbgrader's docs turn it off for students.
"""

c = get_config()  # noqa: F821 - injected by traitlets

c.ServerApp.jpserver_extensions = {"nbgrader.server_extensions.formgrader": False}
