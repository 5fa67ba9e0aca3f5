"""Formgrader's Autograde button, ours against stock nbgrader's, on the same submission.

A Jupyter server with nbgrader's formgrader serves a scratch course (tests/fixtures/course.py)
holding one correct submission. The benchmark presses Autograde twice through formgrader's own
API (what the button posts) and meanwhile asks the server for ``/api/status`` every 0.25 s:

* seconds per student, first and second press: the first press in a server also runs the
  environment check (autograder/environment.py), which is remembered for the server's life;
* the slowest ``/api/status`` answer during a press: nbgrader's Autograde handler runs
  ``nbgrader autograde`` synchronously in the server's event loop, so the server answers
  nothing else until it is done, for stock nbgrader's steps as for ours.

The anchor is stock nbgrader: nbgrader's own preprocessors, no jail, no hidden checks.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the autograder is imported from the repository, never installed
    sys.path.insert(0, str(ROOT))

from tests.fixtures import course, servers  # noqa: E402 - after the repository is on sys.path

SAME_AS_JAIL = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
STUDENT = "ada"
PRESSES = 2


def _request(url: str, token: str, method: str = "GET", timeout: float = 1800) -> tuple[float, bytes]:
    """(seconds, body) of one request with the server's token."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                 headers={"Authorization": f"token {token}"})  # fmt: skip
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as response:
        body = response.read()
    return time.perf_counter() - start, body


def _press(base: str, token: str) -> dict[str, float]:
    """Press Autograde once; the seconds it took and how slowly /api/status answered meanwhile."""
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            try:
                seconds, _ = _request(f"{base}/api/status", token, timeout=600)
            except OSError:
                seconds = float("nan")
            latencies.append(seconds)
            done.wait(0.25)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    seconds, body = _request(f"{base}/formgrader/api/submission/{course.ASSIGNMENT}/{STUDENT}/autograde", token,
                             method="POST")  # fmt: skip
    done.set()
    poller.join()
    result = json.loads(json.loads(body)) if body.startswith(b'"') else json.loads(body)
    if not result.get("success"):
        raise RuntimeError(f"autograde failed: {str(result.get('error') or result.get('log'))[-2000:]}")
    return {"seconds": seconds, "status_max": max(latencies), "status_median": statistics.median(latencies),
            "polls": len(latencies)}  # fmt: skip


def _server_presses(root: Path, extra_env: dict[str, str]) -> list[dict[str, float]]:
    port, token = servers.free_port(), os.urandom(16).hex()
    env = course.env(**extra_env)
    env["JUPYTER_CONFIG_DIR"] = str(
        root.parent / "jupyter-config"
    )  # nobody's settings but nbgrader's defaults
    argv = [str(Path(sys.executable).parent / "jupyter"), "server", "--no-browser", f"--port={port}",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = (root.parent / "server.log").open("w")
    proc = subprocess.Popen(
        argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        servers.wait_until_answers(f"{base}/api/status", proc, root.parent / "server.log", what="jupyter server",
                                   timeout=180, headers={"Authorization": f"token {token}"})  # fmt: skip
        return [_press(base, token) for _ in range(PRESSES)]
    finally:
        servers.stop(proc, timeout=30)  # the server and its kernels
        log.close()


def run() -> str:
    with tempfile.TemporaryDirectory(prefix="bench-formgrader-") as tmp:
        submission = {STUDENT: course.CORRECT}
        ours = _server_presses(course.collected(Path(tmp) / "ours", submission), SAME_AS_JAIL)
        stock = _server_presses(
            course.collected(Path(tmp) / "stock", submission, config=course.STOCK_CONFIG),
            {**SAME_AS_JAIL, "MPLBACKEND": "Agg"},
        )
    rows = [
        f"| {name} | press {i + 1} | {r['seconds']:.1f} | {r['status_median']:.2f} | {r['status_max']:.1f} |"
        for name, presses in (
            ("ours (jail, hidden checks, environment check)", ours),
            ("stock nbgrader", stock),
        )
        for i, r in enumerate(presses)
    ]
    ratio = ours[-1]["seconds"] / stock[-1]["seconds"]
    return "\n".join(
        [
            "## Formgrader's Autograde button: ours vs stock nbgrader (one correct submission, one student)",
            "",
            "| grading steps | press | seconds per student | /api/status median (s) | /api/status slowest (s) |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"- Second press: ours takes **{ratio:.2f}x** stock nbgrader's. The first press in a server also runs the "
            f"environment check ({ours[0]['seconds'] - ours[-1]['seconds']:+.1f} s here), once per server.",
            "- While a press runs, the slowest /api/status answer is about as long as the press itself, for stock "
            "nbgrader too: formgrader's Autograde handler runs `nbgrader autograde` in the server's event loop "
            "(nbgrader's design, not ours), so the server answers nothing else meanwhile.",
        ]
    )


if __name__ == "__main__":
    print(run())
