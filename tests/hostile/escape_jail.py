"""Tries every way out of the jail from eve's solution cells, in the kernel and in the hidden-check process.

The test appends a call with the paths and addresses to aim at: ``escape_jail({"token": ..., ...})``.
Every attempt either raises (denied) or is a breach: a breach prints what it got, so a leak would also
show in her graded notebook, and the cell raises at the end, so a breach costs marks as well as failing
the test's checks."""


def escape_jail(targets):
    """Try to get out of the jail; raise if anything worked (nothing should)."""
    import ctypes
    import os
    import socket
    import sqlite3
    import subprocess
    import sys

    worked, denied = [], []

    def attempt(label, fn):
        try:
            got = fn()
        except Exception as exc:
            denied.append(f"{label}: {type(exc).__name__}")
            return
        worked.append(label)
        print("BREACH", label, str(got)[:300])

    def read(path):
        with open(path, "rb") as fh:
            return fh.read()

    def libc_open(path, flags):
        fd = ctypes.CDLL(None, use_errno=True).open(path.encode(), flags)
        if fd < 0:
            raise OSError(ctypes.get_errno(), path)
        os.close(fd)
        return fd

    def write(path, data, mode="w"):
        with open(path, mode) as fh:
            fh.write(data)

    def at_dir(folder, name, flags):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.close(os.open(name, flags, dir_fd=fd))
        finally:
            os.close(fd)

    def sql(db, statement):
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
        con.execute(statement)
        con.commit()
        return con.total_changes

    def nbgrader_api(db):
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{db}", "optimizers-course") as gb:
            for student in ("eve", "alice"):
                grade = gb.find_grade("test_adam_first_step", "adam", "optimizers_lab", student)
                grade.manual_score = 5.0 if student == "eve" else 0.0
            gb.db.commit()

    def connect(host):
        socket.create_connection((host, targets["port"]), timeout=2).close()

    def abstract():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect("\0" + targets["abstract"])

    # read_classmate
    alice_submitted, alice_graded = targets["alice_submitted"], targets["alice_graded"]
    for path in (alice_submitted, alice_graded, "/proc/1/root" + alice_submitted):
        attempt(f"read_classmate {path}", lambda path=path: read(path))
    attempt("read_classmate listdir", lambda: os.listdir(targets["submitted"]))
    attempt("read_classmate hardlink", lambda: os.link(alice_submitted, "alice.ipynb"))
    # read_hidden_checks
    for path in targets["hidden"]:
        attempt(f"read_hidden_checks {path}", lambda path=path: read(path))
        attempt(f"read_hidden_checks libc {path}", lambda path=path: libc_open(path, os.O_RDONLY))
    attempt(
        "read_hidden_checks import", lambda: __import__("tests.fixtures.solutions").fixtures.solutions.ADAM
    )
    # edit_gradebook
    attempt("edit_gradebook sqlite3", lambda: sql(targets["gradebook"], "UPDATE grade SET manual_score = 0"))
    attempt("edit_gradebook nbgrader.api", lambda: nbgrader_api(targets["gradebook"]))
    # overwrite_results
    attempt("overwrite_results alice", lambda: write(alice_graded, "{}"))
    attempt("overwrite_results bob", lambda: write(targets["bob_submitted"], "{}"))
    attempt("overwrite_results unlink", lambda: os.unlink(alice_graded))
    # write_outside
    canary, canary_dir = targets["canary"], targets["canary_dir"]
    attempt("write_outside open", lambda: write(canary, "owned"))
    attempt("write_outside create", lambda: write(canary_dir + "/new.txt", "owned", "x"))
    attempt("write_outside dir_fd", lambda: at_dir(canary_dir, "canary.txt", os.O_WRONLY | os.O_TRUNC))
    attempt("write_outside libc", lambda: libc_open(canary, os.O_WRONLY | os.O_TRUNC))
    try:  # the jail's own /tmp (bubblewrap's private root) is fine; the host's is checked from outside
        write("/tmp/" + targets["token"], "owned", "x")
    except OSError:
        pass
    # connect_out
    for host in ("127.0.0.1", targets["host_ip"]):
        attempt(f"connect_out {host}", lambda host=host: connect(host))
    attempt("connect_out abstract unix socket", abstract)
    # rewrite_grader: the real files are only opened (never written); the course copy is written
    for path in targets["grader"]:
        attempt(
            f"rewrite_grader {path}", lambda path=path: os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        )
    attempt(
        "rewrite_grader course config",
        lambda: write(targets["course_config"], "\n# " + targets["token"] + "\n", "a"),
    )
    # daemonise: starting processes inside the jail is allowed; outliving the grading is not
    daemon = [sys.executable, "-c", targets["daemon"]]
    pid = os.fork()
    if pid == 0:  # double fork: the daemon is nobody's child
        try:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, daemon)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    started = subprocess.Popen(
        ["setsid", *daemon],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # __name__ is the cell's: __main__ in the kernel
    print(f"HOSTILE-RAN {__name__}: {len(denied)} denied, daemons started ({started.pid})")
    for line in denied:
        print("denied", line)
    if worked:
        raise RuntimeError(f"BREACH {worked}")
