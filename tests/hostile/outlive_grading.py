"""The daemon escape_jail.py starts twice (``python -c SOURCE``): twice a second for five minutes it
tries to rewrite scores and results, long after the grading that started it should have ended.

The test appends ``outlive_grading({...})``; the targets hold the test's token, so the daemon's
command line does too, and the test finds any that survives."""

import sqlite3
import time


def outlive_grading(targets):
    for _ in range(600):
        for path, text in (
            (targets["canary_dir"] + "/daemon.txt", "daemon"),
            (targets["alice_graded"], "{}"),
        ):
            try:
                with open(path, "w") as fh:
                    fh.write(text)
            except OSError:
                pass
        try:
            con = sqlite3.connect(f"file:{targets['gradebook']}?mode=rw", uri=True)
            con.execute("UPDATE grade SET manual_score = 10")
            con.commit()
        except Exception:
            pass
        time.sleep(0.5)
