"""Tries to write in /tmp, /, /usr and the working folder, and prints where it could (run by ``python -I -c``
in a jail: only the scratch folder, its working folder, should take it)."""

import os

wrote = []
for path in ("/tmp/x", "/x", "/usr/x", os.path.join(os.getcwd(), "x")):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write("x")
        wrote.append(path)
    except OSError:
        pass
print(wrote)
