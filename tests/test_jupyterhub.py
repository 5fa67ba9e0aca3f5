"""A real JupyterHub: two students fetch and submit from the Assignments tab, the instructor grades in
formgrader, and the students fetch their feedback; all in headless Chromium.

The hub runs the shipped deploy/jupyterhub/jupyterhub_config.py (paths and ports overridden for
a test), JupyterHub's configurable-http-proxy from npm, and one single-user server per local Unix
user, created by the test: an instructor and two students, each with the shipped nbgrader
configuration (deploy/jupyterhub/). Students see of the grader's machine what
deploy/jupyterhub/permissions.sh lets them: the environment, course_utils and MNIST; the
instructor also sees the repository (the grader). Where those live in folders other users cannot
enter (a pyenv under /root, a checkout in a private folder), each user's server runs in a private
mount namespace in which only those paths are bound back, as tests/fixtures/unix_users.as_user does.

Then formgrader's scores, ``nbgrader export`` and ``python -m autograder export`` must agree, and
each student's feedback shows every part's mark and the hidden check's message. Screenshots of
formgrader and of a student's feedback go to the test's folder (printed).

Needs root, useradd and runuser, configurable-http-proxy (``make test`` installs it with npm when
run as root), Debian's Chromium and the playwright package.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import psutil
import pytest

from autograder import settings, spec
from tests.fixtures import course, servers, solutions, unix_users

ROOT = course.ROOT
DEPLOY = ROOT / "deploy" / "jupyterhub"
VENV_BIN = unix_users.VENV_BIN
ASSIGNMENT = spec.ASSIGNMENT
CHROMIUM = "/usr/bin/chromium"
MISTAKES = {  # one correct student, one with known mistakes, each failing the parts the fixture names
    "good": {},
    "wrong": {
        "accumulation": solutions.ACCUMULATION_MISTAKES["loss_not_scaled"],
        "adam": solutions.ADAM_MISTAKES["decoupled_weight_decay"],
    },
}
CORRECT = course.CORRECT
ANSWERS = {role: {n: wrong.get(n, (CORRECT[n],))[0] for n in CORRECT} for role, wrong in MISTAKES.items()}
EXPECTED = {  # {role: {notebook: marks}}: every part's points but those of the parts its mistake fails
    role: {n: sum(p.points for p in spec.notebook(n).parts if p.name not in wrong.get(n, ("", "", set()))[2])
           for n in CORRECT}
    for role, wrong in MISTAKES.items()
}  # fmt: skip


def _missing() -> str:
    if unix_users.MISSING:
        return unix_users.WHY_MISSING
    if shutil.which("configurable-http-proxy") is None:
        return (
            "configurable-http-proxy not found: `make test` installs it as root (npm install -g "
            "configurable-http-proxy); without root or npm, install it by hand to run this test"
        )
    if not Path(CHROMIUM).exists():
        return "Debian's Chromium not found (apt-get install chromium; `make test` does it as root)"
    for module in ("jupyterhub", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"needs the {module} package (pip install -c constraints.txt -e '.[dev]')"
    return ""


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(bool(_missing()), reason=_missing() or "-"),
]


def _server_wrapper(folder: Path, user: str, keep: list[Path]) -> Path:
    """A script (run by the hub as root) that starts ``"$@"`` as ``user``, seeing of the folders other
    users cannot enter only ``keep`` (bound back into an otherwise empty tmpfs)."""
    paths = sorted({p.resolve() for p in keep if p.exists()})
    hidden = {h for h in (unix_users._hidden_from(p) for p in paths) if h is not None}
    hidden = sorted(h for h in hidden if not any(o != h and o in h.parents for o in hidden))
    saved = [folder / f"mnt-{user}" / str(i) for i in range(len(paths))]
    steps = [f'mkdir -p "{s}" && mount --bind "{k}" "{s}"' for k, s in zip(paths, saved)]
    steps += [f'mount -t tmpfs -o mode=755 tmpfs "{h}"' for h in hidden]
    steps += [f'mkdir -p "{k}" && mount --bind "{s}" "{k}"' for k, s in zip(paths, saved)]
    run_as = f'exec {shutil.which("runuser")} -u {user} -- "$@"'
    body = (
        f"exec {shutil.which('unshare')} --mount --propagation private "
        f"sh -c '{' && '.join(steps)} && {run_as}' sh \"$@\""
        if hidden
        else run_as
    )
    script = folder / f"start-{user}.sh"
    script.write_text(f"#!/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH\n{body}\n")
    script.chmod(0o755)
    return script


HUB_CONFIG = """\
import json
import os
from jupyterhub.spawner import LocalProcessSpawner

load_subconfig({deployed!r})  # the shipped configuration; below only what a test must change
settings = json.loads({settings!r})


class WrappedSpawner(LocalProcessSpawner):
    \"\"\"The shipped local-process spawner, started through a wrapper that drops to the user.\"\"\"

    def make_preexec_fn(self, name):
        home = self.user_env({{}})["HOME"]
        return lambda: os.chdir(home)  # still root: the wrapper mounts, then runuser drops privileges

    async def start(self):
        self.cmd = [settings["wrappers"][self.user.name], *settings["cmd"]]
        self.environment = {{**self.environment, **settings["environment"].get(self.user.name, {{}})}}
        return await super().start()


c.JupyterHub.spawner_class = WrappedSpawner
c.JupyterHub.authenticator_class = "dummy"  # the test's users have no passwords
c.Authenticator.allowed_users = set(settings["users"])
c.Authenticator.admin_users = {{settings["instructor"]}}
c.JupyterHub.bind_url = settings["url"]
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.api_url = settings["proxy_api"]
c.JupyterHub.db_url = settings["db"]
c.JupyterHub.cookie_secret_file = settings["cookie"]
c.Spawner.environment = {{**c.Spawner.environment, "COURSE_DATA_DIR": settings["data"]}}
"""


def _nbgrader_config(shipped: str, home: Path, user: str, **override: str) -> None:
    """The shipped nbgrader_config.py in ``home``/.jupyter, with this test's paths."""
    folder = home / ".jupyter"
    folder.mkdir(exist_ok=True)
    text = (DEPLOY / shipped).read_text()
    text += "".join(f"\nc.{k.replace('__', '.')} = {v!r}" for k, v in override.items()) + "\n"
    (folder / "nbgrader_config.py").write_text(text)
    if shipped == "nbgrader_config_student.py":
        shutil.copy(DEPLOY / "jupyter_server_config_student.py", folder / "jupyter_server_config.py")
    subprocess.run(["chown", "-R", f"{user}:{user}", str(folder)], check=True)


@pytest.fixture(scope="module")
def hub():
    """A JupyterHub with an instructor (formgrader, a released lab) and two students."""
    with running_hub() as running:
        yield running


@contextmanager
def running_hub():
    """A JupyterHub with an instructor (formgrader, a released lab) and two students."""
    with unix_users.unix_users(["instructor", *ANSWERS]) as users:
        work = Path(tempfile.mkdtemp(prefix="hub-"))  # root's; the wrappers and the hub's state
        exchange = Path(tempfile.mkdtemp(prefix="exchange-"))
        exchange.chmod(0o777)  # as permissions.sh makes /srv/nbgrader/exchange
        instructor, home = users["instructor"]
        root = course.scratch(home)  # home/assignments, the instructor's
        subprocess.run(["chown", "-R", f"{instructor}:{instructor}", str(root)], check=True)
        for step in (
            "generate_assignment",
            "release_assignment",
        ):  # the instructor owns the course's exchange
            argv = [str(VENV_BIN / "nbgrader"), step, ASSIGNMENT, "--force", f"--Exchange.root={exchange}"]
            unix_users.as_user(instructor, home, argv, root, keep=(ROOT,))
        _nbgrader_config("nbgrader_config_instructor.py", home, instructor,
                         CourseDirectory__root=str(root), Exchange__root=str(exchange))  # fmt: skip
        for role in ANSWERS:
            user, student_home = users[role]
            _nbgrader_config("nbgrader_config_student.py", student_home, user, Exchange__root=str(exchange))
        data = settings.data_dir().resolve()
        shared = [Path(sys.base_prefix), Path(sys.prefix), ROOT / "course_utils", data]
        wrappers = {
            user: str(_server_wrapper(work, user, shared + ([ROOT] if role == "instructor" else [])))
            for role, (user, _) in users.items()
        }
        port = servers.free_port()
        hub_settings = {
            "users": [u for u, _ in users.values()],
            "instructor": instructor,
            "wrappers": wrappers,
            "cmd": [str(VENV_BIN / "jupyterhub-singleuser")],
            "environment": {
                instructor: {"PYTHONPATH": str(ROOT)}
            },  # the course copy's config imports the grader
            "url": f"http://127.0.0.1:{port}",
            "hub_port": servers.free_port(),
            "proxy_api": f"http://127.0.0.1:{servers.free_port()}",
            "db": f"sqlite:///{work / 'jupyterhub.sqlite'}",
            "cookie": str(work / "cookie_secret"),
            "data": str(data),
        }
        config = work / "jupyterhub_config.py"
        config.write_text(
            HUB_CONFIG.format(
                deployed=str(DEPLOY / "jupyterhub_config.py"), settings=json.dumps(hub_settings)
            )
        )
        log = work / "hub.log"
        env = course.env(CONFIGPROXY_AUTH_TOKEN="test-" + os.urandom(8).hex())
        env["PATH"] = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
        with log.open("w") as fh:
            proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(config)], cwd=work, env=env,
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            servers.wait_until_answers(f"{hub_settings['url']}/hub/health", proc, log, what="jupyterhub")
            yield {"url": hub_settings["url"], "users": users, "course": root, "exchange": exchange,
                   "log": log, "instructor": instructor}  # fmt: skip
        finally:
            servers.stop(proc, timeout=60)  # the hub stops every user's server, then the proxy
            print(f"\n--- the hub's log, last lines ---\n{log.read_text()[-6000:]}")
            _kill_users({pwd.getpwnam(u).pw_uid for u, _ in users.values()})
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(exchange, ignore_errors=True)


@contextmanager
def _evidence(page, folder: Path, name: str):
    """On any failure, the page as it was: a screenshot and its HTML in ``folder``."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(folder / f"{name}-failure.png"), full_page=True)
        (folder / f"{name}-failure.html").write_text(page.content())
        raise


def _until(condition, what: str, page, folder: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            page.screenshot(path=str(folder / "failure.png"), full_page=True)
            (folder / "failure.html").write_text(page.content())
            raise AssertionError(f"{what} (see {folder / 'failure.png'})")
        time.sleep(0.5)


def _kill_users(uids: set[int]) -> None:
    """Whatever the test's users still run (their servers' kernels), by process id."""
    left = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids]
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=10)


def _login(browser, url: str, user: str):
    page = browser.new_page()
    page.goto(f"{url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "anything")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(re.compile(rf".*/user/{user}/.*"), timeout=120_000)
    return page


def _formgrader_scores(page, url: str, instructor: str) -> dict[str, float]:
    response = page.request.get(f"{url}/user/{instructor}/formgrader/api/submissions/{ASSIGNMENT}")
    assert response.ok, response.text()
    return {s["student"]: float(s["score"]) for s in json.loads(response.text()) if s["autograded"]}


def _browser(p, folder: Path):
    return p.chromium.launch_persistent_context(
        str(folder), executable_path=CHROMIUM, headless=True, viewport={"width": 1400, "height": 1000},
        args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    )  # fmt: skip


def _assignment_list(page) -> None:
    """Nbgrader > Assignment List: the Assignments tab of the file browser."""
    page.get_by_text("Nbgrader", exact=True).click()
    page.get_by_text("Assignment List").click()
    page.get_by_text("Released assignments").wait_for()


def _modal(page, button, timeout_s: float = 900) -> str:
    """Click ``button`` (formgrader), wait for its Success/Error dialog, close it; the dialog's text."""
    button.click()
    dialog = page.locator(".modal-dialog").last
    dialog.wait_for(timeout=timeout_s * 1000)
    text = dialog.inner_text()
    dialog.get_by_role("button", name="Close").first.click()
    dialog.wait_for(state="hidden")
    return text


def _autograder_export(root: Path, out: Path) -> dict[str, dict[str, float]]:
    """{student: {notebook: marks}} from ``python -m autograder export --csv``."""
    rows = course.autograder_export(root, out)
    return {student: {n: row[n] for n in spec.NOTEBOOKS} for student, row in rows.items()}


def test_students_submit_instructor_grades_students_read_feedback(hub: dict, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from autograder.results import load_student

    url, users, instructor = hub["url"], hub["users"], hub["instructor"]
    print(f"\nscreenshots and exports: {tmp_path}")
    students = {role: users[role][0] for role in ANSWERS}
    inbound = hub["exchange"] / "optimizers-course" / "inbound"
    with sync_playwright() as p:
        # Two students fetch the lab from the Assignments tab, answer it and submit it.
        for role, answers in ANSWERS.items():
            user, home = users[role]
            browser = _browser(p, tmp_path / f"profile-{role}")
            page = _login(browser, url, user)
            with _evidence(page, tmp_path, f"submit-{role}"):
                _assignment_list(page)
                page.get_by_role("button", name="Fetch").click()
                folder = home / ASSIGNMENT
                _until(
                    lambda f=folder: (f / "adam.ipynb").exists(), f"{user} fetched nothing", page, tmp_path
                )
                assert folder.stat().st_uid == pwd.getpwnam(user).pw_uid  # fetched as the student
                course.solve_fetched(folder, answers)
                page.get_by_role("button", name="Submit").click()
                page.get_by_role("button", name="Fetch Feedback").wait_for(timeout=120_000)
            browser.close()
        owners = {p.stat().st_uid for p in inbound.iterdir()}
        assert owners == {pwd.getpwnam(u).pw_uid for u in students.values()}

        # The instructor collects, presses Autograde for each student, then Generate and Release Feedback.
        browser = _browser(p, tmp_path / "profile-instructor")
        page = _login(browser, url, instructor)
        formgrader = f"{url}/user/{instructor}/formgrader"
        with _evidence(page, tmp_path, "formgrader"):
            page.goto(f"{formgrader}/manage_assignments")
            row = page.locator("tr", has_text=ASSIGNMENT)
            assert "Success" in _modal(page, row.locator("td.collect a"), 120)
            page.goto(f"{formgrader}/manage_submissions/{ASSIGNMENT}")
            for user in students.values():
                text = _modal(page, page.locator("tr", has_text=user).locator("td.autograde a"))
                assert "Successfully autograded" in text, text[-3000:]
            page.reload()
            page.locator("td.score").first.wait_for()
            page.screenshot(path=str(tmp_path / "formgrader-submissions.png"), full_page=True)
            page.goto(f"{formgrader}/manage_assignments")
            for column in ("generate-feedback", "release-feedback"):
                text = _modal(page, page.locator("tr", has_text=ASSIGNMENT).locator(f"td.{column} a"), 300)
                assert "Success" in text, text[-3000:]
            page.screenshot(path=str(tmp_path / "formgrader-assignments.png"), full_page=True)
            scores = _formgrader_scores(page, url, instructor)
        browser.close()

        # Formgrader, nbgrader's export and ours agree, and are the marks these answers earn.
        expected = {students[role]: marks for role, marks in EXPECTED.items()}
        assert scores == {s: sum(m.values()) for s, m in expected.items()}
        assert course.nbgrader_export(hub["course"], tmp_path / "nbgrader.csv") == scores
        assert _autograder_export(hub["course"], tmp_path / "autograder.csv") == expected

        # The training cells' plots stay in the graded notebooks (and so in the feedback).
        for user in students.values():
            graded = nbformat.read(hub["course"] / "autograded" / user / ASSIGNMENT / "accumulation.ipynb", 4)
            assert any(
                "image/png" in o.get("data", {}) for c in graded.cells for o in c.get("outputs", [])
            ), user

        # Each student fetches the feedback and sees, per part, the mark and what the grader found.
        for role, user in students.items():
            home = users[role][1]
            browser = _browser(p, tmp_path / f"profile-{role}-feedback")
            page = _login(browser, url, user)
            with _evidence(page, tmp_path, f"feedback-{role}"):
                _assignment_list(page)
                page.get_by_role("button", name="Fetch Feedback").click()
                feedback = home / ASSIGNMENT / "feedback"
                _until(lambda f=feedback: len(list(f.glob("*/*.html"))) == len(spec.NOTEBOOKS),
                       f"{user} got no feedback", page, tmp_path)  # fmt: skip
                result = load_student(hub["course"], user)
                for name in spec.NOTEBOOKS:
                    (html,) = feedback.glob(f"*/{name}.html")
                    page.goto(f"{url}/user/{user}/files/{html.relative_to(home)}")
                    text = page.locator("body").inner_text()
                    graded = result.notebooks[name]
                    assert f"Score: {graded.score:.1f} / {graded.max_score:.1f}" in text
                    for part in spec.notebook(name).parts:
                        verdict = graded.parts[part.name]
                        assert f"Score: {verdict.points:.1f} / {verdict.max_points:.1f}" in text, part.name
                        if verdict.points < verdict.max_points:  # what went wrong, in the grader's words
                            assert verdict.message.splitlines()[0][:60] in text, (part.name, verdict.message)
                    if role == "wrong":
                        page.screenshot(path=str(tmp_path / f"feedback-{name}.png"), full_page=True)
            browser.close()


def test_permissions_script_lets_students_use_the_environment_and_nothing_else() -> None:
    """deploy/jupyterhub/permissions.sh on a checkout-shaped folder, checked as a real student."""
    with unix_users.unix_users(["instructor", "student"]) as users:
        base = Path(tempfile.mkdtemp(prefix="permissions-"))
        try:
            base.chmod(0o755)
            checkout, exchange = base / "optimizers-course", base / "exchange"
            open_to_students = [
                ".venv/bin/python",
                "course_utils/__init__.py",
                "data/MNIST/raw/t10k-labels-idx1-ubyte",
            ]
            private = ["assignments/source/optimizers_lab/adam.ipynb", "assignments/gradebook.db",
                       "autograder/judge.py", "tests/fixtures/solutions.py", ".git/config"]  # fmt: skip
            for rel in open_to_students + private:
                (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
                (checkout / rel).write_text("x")
                (checkout / rel).chmod(0o644)
            instructor, student = users["instructor"][0], users["student"][0]
            subprocess.run(["sh", str(DEPLOY / "permissions.sh"), instructor, str(checkout), str(exchange)],
                           check=True, capture_output=True)  # fmt: skip

            def as_student(*argv: str) -> int:
                return subprocess.run(["runuser", "-u", student, "--", *argv], capture_output=True).returncode

            assert all(as_student("cat", str(checkout / rel)) == 0 for rel in open_to_students)
            assert all(as_student("cat", str(checkout / rel)) != 0 for rel in private)
            assert as_student("ls", str(checkout)) != 0  # they may pass through the checkout, not list it
            assert checkout.stat().st_uid == pwd.getpwnam(instructor).pw_uid
            assert exchange.stat().st_mode & 0o777 == 0o777
        finally:
            shutil.rmtree(base, ignore_errors=True)
