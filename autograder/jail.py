"""The jail every process that runs student code lives in: bubblewrap, limits, and a kernel manager.

A jail is a fresh set of namespaces (user, PID, network, IPC, UTS, cgroup) made by
bubblewrap (Debian's ``bubblewrap``) around one command:

* the system, Python and the course's environment are mounted read-only; so are
  ``course_utils`` and MNIST, which the notebooks use;
* one private scratch folder is the only writable place, and it holds only this
  submission's work; the grader's source, the gradebook, the exchange, other students'
  files and the instructor's files are simply not there;
* no network (a new network namespace has only a loopback that is down);
* memory, processes, CPU time and file size are limited (a memory cgroup and a pids
  cgroup where the machine lets us make them, rlimits always), and the scratch folder is
  a tmpfs with a size quota; a process that passes a limit is stopped and the grader
  reports which limit it was;
* ``--die-with-parent`` and the PID namespace end every process of the jail, daemons
  included, when the jail's command ends or the grader stops it.

What comes back is data only: messages on a pipe or a ZeroMQ socket, which the grader
parses and validates. :class:`JailedKernelManager` runs a Jupyter kernel this way, for
nbgrader's Execute step.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from autograder import settings
from autograder.limits import Cgroups, owner_tag, sweep_orphans


class JailUnavailable(RuntimeError):
    """No jail can be made on this machine; the message says why and what to do."""


HOW_TO_INSTALL = (
    "Install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; `make setup` does it when run "
    "as root) on Linux with unprivileged user namespaces enabled. Only if you accept running student code "
    "with your own permissions, grade with `python -m autograder grade --unconfined`."
)


@cache
def check_available() -> None:
    """Raise :class:`JailUnavailable` unless a bubblewrap jail can be made here (asked once)."""
    if sys.platform != "linux":
        raise JailUnavailable(
            f"student code can only be confined on Linux, not {sys.platform}. {HOW_TO_INSTALL}"
        )
    if shutil.which("bwrap") is None:
        raise JailUnavailable(f"bubblewrap (`bwrap`) is not installed. {HOW_TO_INSTALL}")
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        raise JailUnavailable(
            f"bubblewrap cannot make a jail here ({probe.stderr.strip()[:200]}); user namespaces may be "
            f"disabled (sysctl kernel.unprivileged_userns_clone=1). {HOW_TO_INSTALL}"
        )


# ----------------------------------------------------------------------------- the jail

# Runs outside the jail, as the grader, just before bubblewrap: rlimits, then into the cgroups.
_LAUNCH = """\
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for name, value in spec["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
for procs in spec["cgroups"]:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
if spec.get("cwd"):
    os.chdir(spec["cwd"])
os.execve(sys.argv[2], sys.argv[2:], spec.get("env") or os.environ)
"""


def _gpu_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("nvidia*")) + (
        ["/dev/dri"] if Path("/dev/dri").exists() and list(Path("/dev").glob("nvidia*")) else []
    )


@dataclass
class Jail:
    """A jail around one submission's scratch folder; :meth:`command` wraps a command in it."""

    scratch: Path
    limits: settings.Limits = field(default_factory=settings.Limits)
    readable: list[Path] = field(default_factory=list)  # extra read-only paths (same place inside)
    overlays: dict[str, Path] = field(default_factory=dict)  # path inside -> a file bound over it (ro)
    confined: bool = True  # False only for grading --unconfined (c.Grading.unconfined)
    sockets: str | None = None  # a folder inside only, on its own small tmpfs (the kernel's sockets)
    cgroups: Cgroups = field(default_factory=Cgroups)

    def __post_init__(self) -> None:
        self.scratch = Path(self.scratch).resolve()
        self.scratch.mkdir(parents=True, exist_ok=True)
        if self.confined:
            check_available()
        self.cgroups = Cgroups.create(self.limits, self.scratch.parent)

    def _mounts(self) -> list[str]:
        import course_utils

        args = ["--ro-bind", "/usr", "/usr"]
        for link in ("bin", "lib", "lib64", "lib32", "sbin"):
            target = Path("/") / link
            if target.is_symlink():
                args += ["--symlink", os.readlink(target), str(target)]
            elif target.is_dir():
                args += ["--ro-bind", str(target), str(target)]
        for path in (
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/fonts",
            "/etc/localtime",
        ):
            if Path(path).exists():
                args += ["--ro-bind", path, path]
        readable = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), settings.data_dir()}
        readable.add(Path(course_utils.__file__).resolve().parent)
        readable.update(Path(p) for p in self.readable)
        for path in sorted({p.resolve() for p in readable if p.exists()}):
            args += ["--ro-bind", str(path), str(path)]
        # Files hidden by others (the checks bind stubs over torch's Adam source: sandbox.torch_adam_stubs).
        for inside, host in sorted(self.overlays.items()):
            args += ["--ro-bind", str(host), inside]
        args += ["--proc", "/proc", "--dev", "/dev"]
        devices = _gpu_devices()
        for device in devices:
            args += ["--dev-bind", device, device]
        if devices:  # the CUDA driver reads the PCI topology
            args += ["--ro-bind", "/sys", "/sys"]
        # The scratch folder is a tmpfs of at most disk_bytes (charged to the memory cgroup too), with
        # what the grader put there before the start (the connection file, the stand-in) bound into it
        # read-only: nothing in the jail writes to the grader's disk.
        args += ["--size", str(self.limits.disk_bytes), "--tmpfs", str(self.scratch)]
        for entry in sorted(self.scratch.iterdir()):
            args += ["--ro-bind", str(entry), str(entry)]
        if self.sockets:  # reached from outside through /proc/PID/root (JailedKernelManager)
            args += ["--size", str(SOCKETS_BYTES), "--perms", "0700", "--tmpfs", self.sockets]
        # Everything else read-only, bubblewrap's own root and /dev included.
        return args + ["--chdir", str(self.scratch), "--remount-ro", "/dev", "--remount-ro", "/"]

    def environment(self) -> dict[str, str]:
        threads = str(self.limits.threads)
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.scratch),
            "TMPDIR": str(self.scratch),
            "USER": "student",
            "LANG": "C.UTF-8",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # plots stay in the graded notebook
            "MPLCONFIGDIR": str(self.scratch / ".matplotlib"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "TQDM_DISABLE": "1",
            "JPY_PARENT_PID": "1",  # the jail's init is our parent: don't poll for it
            "COURSE_DATA_DIR": str(settings.data_dir()),
        }
        for name in ("NBGRADER_EXECUTION", "COURSE_FAST", "CUDA_VISIBLE_DEVICES"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped in the limits and (unless unconfined) in bubblewrap."""
        limits = self.limits
        rlimits = {"RLIMIT_CPU": limits.cpu_seconds, "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_CORE": 0}
        if not ("memory" in self.cgroups.folders and _gpu_devices()):
            rlimits["RLIMIT_DATA"] = limits.memory_bytes  # (with CUDA, the memory cgroup does this)
        if "pids" not in self.cgroups.folders and os.getuid() != 0:  # (root is exempt from RLIMIT_NPROC)
            rlimits["RLIMIT_NPROC"] = _tasks_of(os.getuid()) + limits.processes
        spec = {"rlimits": rlimits, "cgroups": self.cgroups.procs_files()}
        if not self.confined:  # only the limits, the environment and the folder: no isolation at all
            spec.update(env=self.environment(), cwd=str(self.scratch))
            return [sys.executable, "-I", "-c", _LAUNCH, json.dumps(spec), *argv]
        jail = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
                "--uid", "1000", "--gid", "1000", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
                "--hostname", "jail", "--clearenv"]  # fmt: skip
        for name, value in self.environment().items():
            jail += ["--setenv", name, value]
        return [sys.executable, "-I", "-c", _LAUNCH, json.dumps(spec), *jail, *self._mounts(), "--", *argv]

    def limits_hit(self) -> list[str]:
        return self.cgroups.hit()

    def close(self) -> None:
        """Stop every process left in the jail and remove its cgroups and scratch folder."""
        self.cgroups.kill_and_remove()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:  # gone meanwhile
        return 0


def _tasks_of(uid: int) -> int:
    """Processes and threads the user runs now: RLIMIT_NPROC counts them all, per user."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                count += len(list((entry / "task").iterdir()))
        except OSError:
            pass
    return count


def new_scratch(prefix: str, root: Path | None = None) -> Path:
    """A fresh private folder for one jailed process, under ``root`` (default :func:`settings.scratch_root`)."""
    root = Path(root) if root is not None else settings.scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    sweep_orphans(root)  # what a killed grader left here
    return Path(tempfile.mkdtemp(prefix=f"autograder-{prefix}-{owner_tag()}-", dir=root))


def describe_exit(code: int | None, hits: list[str]) -> str:
    """How a jailed process ended, for a status message (bubblewrap ends with 128 + the signal)."""
    if code is not None and code > 128:
        code = 128 - code
    if hits:
        return f"it went past the {' and '.join(hits)} limit"
    if code is None:
        return "it did not end"
    if code < 0:
        sig = -code
        name = {signal.SIGXCPU: "the CPU-time limit", signal.SIGXFSZ: "the file-size limit"}.get(sig)
        if name:
            return f"it went past {name}"
        try:
            return f"it was killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"it was killed by signal {sig}"
    return f"it exited with code {code}"


# ----------------------------------------------------------------------------- the kernel


KERNEL_STUB = """\
def check(notebook, part):
    print(f"hidden check {notebook}/{part}: judged by the grader outside this notebook, see the feedback")
"""


SOCKETS = "/kernel"  # the kernel's socket folder, inside its jail only
SOCKETS_BYTES = 2**20  # its tmpfs: room for the sockets, none for anything else


class JailedKernelManager(AsyncKernelManager):
    """A Jupyter kernel inside a :class:`Jail`, spoken to over Unix sockets in a folder of its own.

    TCP cannot reach into a network namespace; ZeroMQ's ``ipc`` transport goes through the
    file system instead. The sockets live in :data:`SOCKETS`, a 1 MiB tmpfs that exists inside
    the jail only (charged to its memory cgroup), and the grader reaches them through
    ``/proc/PID/root`` of a process in the jail: no folder of the grader's disk is writable
    from inside. The connection file and the stand-in are bound in read-only. Interrupts are
    messages (the jail does not forward signals)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        options = settings.Options.from_config(self.config)  # nbclient passes the grading configuration
        self.jail = Jail(
            new_scratch("kernel", settings.scratch_root(options)),
            limits=options.limits,
            confined=not options.unconfined,
        )
        self._finalizer = weakref.finalize(self, self.jail.close)  # even if the kernel never starts
        kernel_dir = self.jail.scratch / ".kernel"
        kernel_dir.mkdir()
        # The notebooks' hidden test cells `import autograder`; the grader itself never enters the
        # jail, so they find this stand-in, which only says where the verdict will be.
        (self.jail.scratch / "autograder.py").write_text(KERNEL_STUB)
        self.transport = "ipc"
        if self.jail.confined:
            self.jail.sockets = SOCKETS
            self.ip = f"{SOCKETS}/ipc"  # as the kernel sees it; the grader's side is set at launch
        else:
            self.ip = str(kernel_dir / "ipc")
        self.connection_file = str(kernel_dir / "connection.json")

    @property
    def kernel_spec(self):
        spec = super().kernel_spec
        if spec is not None:
            spec.interrupt_mode = "message"
        return spec

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return self.jail.command(super().format_kernel_cmd(extra_arguments))

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        kw.pop("cwd", None)  # the jail chooses its own working directory
        kw["env"] = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
        await super()._async_launch_kernel(kernel_cmd, **kw)
        if self.jail.confined:
            inside = await self._process_inside()
            self.ip = f"/proc/{inside}/root{SOCKETS}/ipc"  # the client's way in (ZeroMQ retries until bound)

    async def _process_inside(self) -> int:
        """A process in the jail's mount namespace: bubblewrap's first child."""
        process = getattr(self.provisioner, "process", None)
        for _ in range(600):
            if process is None or process.poll() is not None:
                break
            children = _children(process.pid)
            if children:
                return children[0]
            await asyncio.sleep(0.05)
        raise RuntimeError("the kernel's jail did not start (bubblewrap made no process within 30 s)")

    def why_stopped(self) -> str:
        """Which limit stopped the kernel, or how it ended (for the notebook's status)."""
        process = getattr(self.provisioner, "process", None)
        code = process.poll() if process is not None else None
        return describe_exit(code, self.jail.limits_hit())

    def _kill_now(self) -> None:
        process = getattr(self.provisioner, "process", None)
        if process is not None:
            try:
                process.kill()
            except OSError:
                pass

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            self._finalizer()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
