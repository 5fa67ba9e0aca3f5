"""The jail student code runs in: what it can see and do, its limits, and its kernel manager."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from autograder import jail, settings, spec
from tests.fixtures import course, unix_users

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the jail is Linux-only")

PROBE = r"""
import json, os, socket
found = {}
found["cwd"] = os.getcwd()
repo = os.environ["REPO"]
found["repo_visible"] = os.path.exists(repo + "/autograder") or os.path.exists(repo + "/assignments")
found["home"] = os.path.exists("/root/.bashrc")
found["course_utils"] = os.path.exists(os.environ["REPO"] + "/course_utils/config.py")
found["uid"] = os.getuid()
try:
    socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=2)
    found["net"] = "connected"
except OSError as exc:
    found["net"] = type(exc).__name__
try:
    open("/usr/jail-canary", "w")
    found["usr_writable"] = True
except OSError:
    found["usr_writable"] = False
open("mine.txt", "w").write("scratch is writable")
found["scratch_writable"] = open("mine.txt").read()
print(json.dumps(found))
"""


@pytest.fixture
def cell(tmp_path: Path):
    made = jail.Jail(tmp_path / "scratch", limits=settings.Limits(processes=32, memory_bytes=2 * 2**30))
    yield made
    made.close()


def test_student_code_sees_only_its_scratch_and_public_course_files(cell: jail.Jail) -> None:
    import json
    import socket

    with socket.socket() as listener:  # a service on the grader's loopback
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = f"import os; os.environ['REPO'] = {str(ROOT)!r}; os.environ['PORT'] = '{port}'\n" + PROBE
        proc = subprocess.run(
            cell.command([sys.executable, "-c", code]), capture_output=True, text=True, timeout=60
        )
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["cwd"] == str(cell.scratch) and found["scratch_writable"] == "scratch is writable"
    assert not found["repo_visible"] and not found["home"] and found["course_utils"]
    assert found["net"] in ("ConnectionRefusedError", "OSError") and not found["usr_writable"]
    assert found["uid"] != 0  # no root, no capabilities, even when the grader is root
    assert not Path("/usr/jail-canary").exists()


# Starts a daemon named MARKER, then forks until the jail says no; prints how many forks worked and who it is.
FORK_PROBE = """\
import os, subprocess
subprocess.Popen(['sh', '-c', 'exec -a MARKER sleep 300'], start_new_session=True)
forks = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            import time; time.sleep(60); os._exit(0)
        forks += 1
except OSError:
    pass
print(forks, os.getuid(), os.path.exists(GRADER))
"""


def test_processes_are_limited_and_none_outlives_the_jail(cell: jail.Jail) -> None:
    marker = f"jail-daemon-{uuid.uuid4().hex}"
    code = FORK_PROBE.replace("MARKER", marker).replace("GRADER", repr(jail.__file__))
    proc = subprocess.run(
        cell.command([sys.executable, "-c", code]), capture_output=True, text=True, timeout=120
    )
    if "pids" in cell.cgroups.folders:
        assert int(proc.stdout.split()[0]) < 32 and "processes" in cell.limits_hit()
    time.sleep(0.5)
    survivors = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert survivors == [], "a daemon outlived its jail"


def test_memory_runs_out_inside_the_jail_not_on_the_machine(cell: jail.Jail) -> None:
    code = "try:\n    b = bytearray(6 * 2**30)\n    print('allocated')\nexcept MemoryError:\n    print('MemoryError')\n"
    proc = subprocess.run(
        cell.command([sys.executable, "-c", code]), capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "MemoryError"


def test_the_scratch_folder_has_a_size_quota_and_leaves_the_disk_alone(tmp_path: Path) -> None:
    limits = settings.Limits(file_bytes=4 * 2**20, disk_bytes=16 * 2**20)
    cell = jail.Jail(tmp_path / "scratch", limits=limits)
    code = (
        "import errno\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(100):\n"
        "        with open(f'f{i}', 'wb') as fh:\n"
        "            fh.write(bytes(2**20))\n"
        "        written += 2**20\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode[exc.errno], written)\n"
    )
    try:
        proc = subprocess.run(
            cell.command([sys.executable, "-I", "-c", code]), capture_output=True, text=True, timeout=60
        )
        on_disk = sorted(p.name for p in cell.scratch.iterdir())
    finally:
        cell.close()
    error, written = proc.stdout.split()
    assert error == "ENOSPC" and 8 * 2**20 <= int(written) <= 16 * 2**20, proc.stdout + proc.stderr
    assert on_disk == []  # what the jail wrote never reached the grader's disk


def test_no_jail_means_a_clear_error_unless_unconfined(tmp_path: Path) -> None:
    notebook = ROOT / "assignments" / "source" / spec.ASSIGNMENT / "adam.ipynb"
    # The course's environment, but PATH only the venv's bin: no bwrap on it (deliberately unlike course.env's).
    env = course.env(PATH=str(Path(sys.executable).parent))
    proc = subprocess.run([sys.executable, "-m", "autograder", "check", str(notebook)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert (
        "bubblewrap" in proc.stderr
        and "apt-get install bubblewrap" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "check", "--unconfined", str(notebook)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert '"status": "passed"' in proc.stdout


def test_a_kernel_in_the_jail_runs_code_and_leaves_nothing_behind() -> None:
    marker = f"kernel-daemon-{uuid.uuid4().hex}"
    code = (
        f"import os, subprocess; subprocess.Popen(['sh', '-c', 'exec -a {marker} sleep 300'], start_new_session=True)\n"
        f"print(os.getcwd(), os.path.exists({str(ROOT / 'autograder')!r}))\n"
        "import autograder; autograder.check('adam', 'first_step')"
    )

    async def run() -> tuple[dict, str, Path]:
        km = jail.JailedKernelManager(kernel_name="python3")
        await km.start_kernel()
        outputs: list[dict] = []
        try:
            client = km.client()
            client.start_channels()
            await client.wait_for_ready(timeout=120)
            reply = await client.execute_interactive(
                code, timeout=60, output_hook=lambda m: outputs.append(m["content"])
            )
            client.stop_channels()
        finally:
            await km.shutdown_kernel(now=True)
        return reply, "".join(o.get("text", "") for o in outputs), km.jail.scratch

    reply, text, scratch = asyncio.run(run())
    assert reply["content"]["status"] == "ok", text
    assert f"{scratch} False" in text and "judged by the grader outside this notebook" in text
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""
    assert not scratch.exists()


def _host_usage(folder: Path) -> tuple[int, int]:
    """(entries, bytes) under ``folder`` on the grader's side."""
    paths = [p for p in folder.rglob("*")] if folder.exists() else []
    return len(paths), sum(p.lstat().st_size for p in paths)


def test_the_kernel_socket_folder_has_a_quota_and_nothing_reaches_the_grader_disk() -> None:
    # The sockets live on a 1 MiB tmpfs inside the jail; what the grader bound in (the connection
    # file, the stand-in) is read-only. Filling the one and writing the others stops at once.
    code = (
        "import errno, json, os, sys\n"
        "folder = os.path.dirname(json.load(open(sys.argv[sys.argv.index('-f') + 1]))['ip'])\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(10_000):\n"
        "        open(os.path.join(folder, f'f{i}'), 'wb').write(bytes(2**16))\n"
        "        written += 1\n"
        "except OSError as exc:\n"
        "    print('full', errno.errorcode[exc.errno], written)\n"
        "for path in ('autograder.py', sys.argv[sys.argv.index('-f') + 1]):\n"
        "    try:\n"
        "        open(path, 'a').write('x' * 2**20)\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('denied', errno.errorcode[exc.errno])\n"
    )

    async def run() -> tuple[dict, str, tuple[int, int], bool, Path]:
        km = jail.JailedKernelManager(kernel_name="python3")
        await km.start_kernel()
        outputs: list[dict] = []
        try:
            client = km.client()
            client.start_channels()
            await client.wait_for_ready(timeout=120)
            before = _host_usage(km.jail.scratch)
            reply = await client.execute_interactive(
                code, timeout=60, output_hook=lambda m: outputs.append(m["content"])
            )
            after = _host_usage(km.jail.scratch)
            alive = await km.is_alive()
            client.stop_channels()
        finally:
            await km.shutdown_kernel(now=True)
        assert after == before, (before, after)
        return reply, "".join(o.get("text", "") for o in outputs), after, alive, km.jail.scratch

    reply, text, usage, alive, scratch = asyncio.run(run())
    assert reply["content"]["status"] == "ok", text
    full, error, written = text.split("\n")[0].split()
    assert (full, error) == ("full", "ENOSPC") and int(written) <= 16, text  # 1 MiB: 16 files of 64 KiB
    assert text.count("denied EROFS") == 2, text
    assert usage[1] < 64 * 2**10 and alive  # the connection file and the stand-in only; the kernel goes on
    assert not scratch.exists()  # removed with the kernel


NON_ROOT_PROBE = """
import json, os, subprocess, sys, time
from pathlib import Path
from autograder import jail, settings

cell = jail.Jail(Path.home() / "scratch", limits=settings.Limits(processes=16))
code = (Path.home() / "fork_probe.py").read_text().replace("GRADER", repr(jail.__file__))
proc = subprocess.run(cell.command([sys.executable, "-c", code]), capture_output=True, text=True, timeout=120)
cell.close()
time.sleep(0.5)
survivors = subprocess.run(["pgrep", "-f", "MARKER"], capture_output=True, text=True).stdout.split()
forks, uid, sees_grader = proc.stdout.split()
print(json.dumps({"cgroups": sorted(cell.cgroups.folders), "forks": int(forks), "uid": int(uid),
                  "sees_grader": sees_grader == "True", "survivors": survivors, "me": os.getuid()}))
"""


@pytest.mark.skipif(unix_users.MISSING, reason=unix_users.WHY_MISSING)
def test_a_grader_without_root_still_jails_and_limits_processes() -> None:
    """On a hub an instructor grades as an ordinary user: no cgroups, so RLIMIT_NPROC limits the forks."""
    with unix_users.unix_users(["grader"]) as made:
        name, home = made["grader"]
        marker = f"jail-daemon-{uuid.uuid4().hex}"  # in files, so in no command line but the daemon's
        (home / "fork_probe.py").write_text(FORK_PROBE.replace("MARKER", marker))
        probe = home / "probe.py"
        probe.write_text(NON_ROOT_PROBE.replace("MARKER", marker))
        out = unix_users.as_user(name, home, [sys.executable, str(probe)], home, keep=(ROOT,))
    found = json.loads(out.strip().splitlines()[-1])
    assert found["me"] != 0 and found["cgroups"] == []  # an ordinary user gets no cgroups here
    assert found["forks"] <= 16, found  # RLIMIT_NPROC: its tasks now + Limits.processes
    assert found["uid"] != 0 and not found["sees_grader"] and found["survivors"] == [], found


def test_a_kernel_stopped_by_a_limit_says_which() -> None:
    # Files in the scratch tmpfs are memory charged to the jail's cgroup, beyond RLIMIT_DATA's reach.
    from traitlets.config import Config

    config = Config({"Grading": {"memory_bytes": 256 * 2**20, "disk_bytes": 2**30}})
    code = "for i in range(900):\n    open(f'f{i}', 'wb').write(bytes(2**20))\n"

    async def run() -> tuple[bool, str]:
        km = jail.JailedKernelManager(kernel_name="python3", config=config)
        if "memory" not in km.jail.cgroups.folders:
            await km.cleanup_resources()
            pytest.skip("no memory cgroup here: only rlimits, which tmpfs pages escape")
        await km.start_kernel()
        try:
            client = km.client()
            client.start_channels()
            await client.wait_for_ready(timeout=120)
            client.execute(code)
            for _ in range(240):
                if not await km.is_alive():
                    break
                await asyncio.sleep(0.5)
            client.stop_channels()
            return await km.is_alive(), km.why_stopped()
        finally:
            await km.shutdown_kernel(now=True)

    alive, why = asyncio.run(run())
    assert not alive and why == "it went past the memory limit", why


KILLED_GRADER = r"""
import os, signal, subprocess, sys
from autograder import jail
cell = jail.Jail(jail.new_scratch("kernel", sys.argv[1]))
(cell.scratch / "solution.py").write_text("a student's code")
inside = subprocess.Popen(cell.command(["sh", "-c", "echo ready; exec sleep 300"]), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)  # its own pipe: the test's ends with the grader
assert inside.stdout.readline() == b"ready\n"  # running in the jail, past bubblewrap's --die-with-parent
print(cell.scratch, *cell.cgroups.folders.values(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as formgrader's server killed in the middle of a press
"""


def test_what_a_killed_grader_left_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """A grader killed mid-notebook cannot clean up; the next jail made in the same place does, and leaves
    a live grader's jail alone."""
    root = tmp_path / "scratch-root"
    live = jail.Jail(jail.new_scratch("kernel", root))
    try:
        proc = subprocess.run([sys.executable, "-c", KILLED_GRADER, str(root)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env=course.env())  # fmt: skip
        assert proc.returncode == -9, proc.stderr[-2000:]
        left = [Path(p) for p in proc.stdout.split()]
        # Its folder is private to this test; its cgroups may already be swept by a test suite running beside.
        assert left and left[0].exists(), "the killed grader left its folder"
        other = root / "autograder-run-notajail"  # not a jail folder: never touched
        other.mkdir()
        fresh = jail.Jail(jail.new_scratch("checks", root))
        fresh.close()
        assert [p for p in left if p.exists()] == []
        assert live.scratch.exists() and all(p.exists() for p in live.cgroups.folders.values())
        assert other.exists()
    finally:
        live.close()
