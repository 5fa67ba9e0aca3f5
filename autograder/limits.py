"""What a jail may use, enforced from outside it: cgroups for memory and processes.

A cgroup counts resident memory (so it works with CUDA, whose huge virtual reservations
defeat an address-space rlimit) and every task a jail starts. Where the machine does not
let the grader make cgroups (v1 or v2), the jail falls back to rlimits alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from autograder import settings


def _cgroup_parents() -> dict[str, Path]:
    """Writable cgroup folders for the memory and pids controllers (cgroup v2 or v1), where any."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    base = Path("/sys/fs/cgroup")
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (base / "cgroup.controllers").exists():  # v2, unified at the root
            folder = base / path.lstrip("/")
            enabled = (folder / "cgroup.subtree_control").read_text().split() if folder.exists() else []
            for name in ("memory", "pids"):
                if name in enabled:
                    found.setdefault(name, folder)
        for name in ("memory", "pids"):
            if name in controllers.split(","):
                found.setdefault(name, base / name / path.lstrip("/"))
    return {name: folder for name, folder in found.items() if os.access(folder, os.W_OK)}


@dataclass
class Cgroups:
    """One jail's memory and pids cgroups (those the machine lets us create)."""

    folders: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, limits: settings.Limits, scratch: Path) -> Cgroups:
        """Cgroups for a jail whose folder is under ``scratch`` (:func:`sweep_cgroups` finds them by it)."""
        made = cls()
        name = f"{_prefix(scratch)}{owner_tag()}-{uuid.uuid4().hex[:12]}"
        for controller, parent in _cgroup_parents().items():
            folder = parent / name
            try:
                folder.mkdir()
                v2 = (folder / "cgroup.controllers").exists()
                if controller == "memory":
                    target = "memory.max" if v2 else "memory.limit_in_bytes"
                    (folder / target).write_text(str(limits.memory_bytes + 256 * 2**20))  # rlimit first
                else:
                    (folder / "pids.max").write_text(str(limits.processes))
                made.folders[controller] = folder
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
        return made

    def procs_files(self) -> list[str]:
        return [str(folder / "cgroup.procs") for folder in self.folders.values()]

    def hit(self) -> list[str]:
        """Which limits were reached (``memory``, ``processes``)."""
        hits = []
        for controller, folder in self.folders.items():
            for events in ("memory.events", "pids.events"):
                text = _read(folder / events)
                if any(
                    line.split()[0] in ("oom_kill", "max") and line.split()[1] != "0"
                    for line in text.splitlines()
                ):
                    hits.append("memory" if controller == "memory" else "processes")
            if controller == "memory" and _read(folder / "memory.failcnt").strip() not in ("", "0"):
                hits.append("memory")
        return sorted(set(hits))

    def kill_and_remove(self) -> None:
        for folder in self.folders.values():
            _kill_and_remove(folder)


def _prefix(scratch: Path) -> str:
    """The name prefix of the cgroups made for jails whose scratch folders are under ``scratch``."""
    return f"autograder-{hashlib.sha1(str(Path(scratch).resolve()).encode()).hexdigest()[:8]}-"


def sweep_cgroups(scratch: Path) -> list[str]:
    """Stop and remove every cgroup left by jails whose scratch folders were under ``scratch`` (a worker
    killed mid-notebook leaves them); the names removed."""
    removed = []
    for parent in _cgroup_parents().values():
        for folder in parent.glob(f"{_prefix(scratch)}*"):
            _kill_and_remove(folder)
            removed.append(folder.name)
    return removed


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def owner_tag() -> str:
    """``<host>-<pid>`` of this process, in the names of the jail folders and cgroups it makes, so that a later
    grader can tell those of a grader that was killed (formgrader stopped mid-press, say) from live ones."""
    return f"{_host_tag()}-{os.getpid()}"


_OWNED = re.compile(r"autograder-\w+-([0-9a-f]{6})-(\d+)-")  # a jail folder's or cgroup's owner tag


def sweep_orphans(scratch: Path) -> list[str]:
    """Remove the jail folders under ``scratch`` and their cgroups whose grader process on this machine has
    ended without closing them (a killed ``nbgrader autograde``); the names removed. Live graders', other
    machines' and other folders under ``scratch`` are left alone."""
    host = _host_tag()
    removed = []
    places = [(Path(scratch), shutil.rmtree)] + [(p, _kill_and_remove) for p in _cgroup_parents().values()]
    for parent, remove in places:
        try:
            entries = list(parent.glob("autograder-*"))
        except OSError:
            continue
        for entry in entries:
            owner = _OWNED.match(entry.name)
            if owner and owner[1] == host and not _alive(int(owner[2])) and entry.is_dir():
                try:
                    remove(entry)
                except OSError:  # another user's, say: theirs to sweep
                    continue
                removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _kill_and_remove(folder: Path) -> None:
    for _ in range(50):
        pids = [int(p) for p in _read(folder / "cgroup.procs").split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    try:
        folder.rmdir()
    except OSError:
        pass


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
