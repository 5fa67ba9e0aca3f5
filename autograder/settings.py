"""Every grading setting, defined once: paths, time and memory limits, the course id.

Limits can be changed for one run through the environment (``AUTOGRADER_CELL_TIMEOUT=120``),
which is how ``python -m autograder grade --cell-timeout 120`` hands them to nbgrader and to
Dask workers; nbgrader_config.py reads the same values, so formgrader's Autograde button and
the command line grade under the same limits.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COURSE_ROOT = REPO_ROOT / "assignments"  # the nbgrader course directory
ASSIGNMENT = "optimizers_lab"
RESULT_KEY = "autograder"  # the notebook and cell metadata key our preprocessors write


@dataclass(frozen=True)
class Limits:
    """What one submission may use while it is graded (seconds, bytes, counts)."""

    cell_timeout: int = 60  # one notebook cell; the cell is interrupted, the notebook goes on
    notebook_timeout: int = 300  # one whole notebook; past it the notebook scores 0
    part_timeout: float = 30.0  # one hidden check
    start_timeout: float = 120.0  # a jailed process importing torch before its first part
    memory_bytes: int = 4 * 2**30  # per jail (kernel or hidden-check process)
    processes: int = 64  # per jail
    cpu_seconds: int = 900  # CPU time per process in a jail
    file_bytes: int = 256 * 2**20  # largest file a jail may write
    disk_bytes: int = 2**30  # everything a jail writes (its scratch folder is a tmpfs this size)
    output_bytes: int = 256 * 2**10  # output one notebook cell may keep
    threads: int = 1  # torch/OpenMP threads per jailed process (tiny tensors: more only contend)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """The defaults, with any ``AUTOGRADER_<NAME>`` variable applied."""
        environ = os.environ if environ is None else environ
        changes = {}
        for f in fields(cls):
            value = environ.get(f"AUTOGRADER_{f.name.upper()}")
            if value:
                kind = float if f.type == "float" else int
                try:
                    changes[f.name] = kind(value)
                except ValueError:
                    raise ValueError(
                        f"AUTOGRADER_{f.name.upper()}={value!r} is not a number; unset it or give e.g. "
                        f"{getattr(cls, f.name)}"
                    ) from None
        return replace(cls(), **changes)

    def as_env(self) -> dict[str, str]:
        """The environment variables that carry these limits to another process."""
        return {f"AUTOGRADER_{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}


def limits() -> Limits:
    return Limits.from_env()


def unconfined() -> bool:
    """True only when the instructor asked for grading without the jail (``--unconfined``)."""
    return os.environ.get("AUTOGRADER_UNCONFINED", "") == "1"


def device() -> str | None:
    """The hidden checks' device when the instructor chose one (``--device``); None: the GPU if any."""
    return os.environ.get("AUTOGRADER_DEVICE") or None


def scratch_root() -> Path:
    """Where private per-submission folders are made (``$AUTOGRADER_SCRATCH`` or the temp dir)."""
    return Path(os.environ.get("AUTOGRADER_SCRATCH") or tempfile.gettempdir())


@cache
def _process_seed() -> int:
    return secrets.randbelow(2**31)


def seed() -> int:
    """The seed the hidden checks draw their inputs from: one per grading run, unknown in advance.

    ``python -m autograder grade`` picks it and hands it to its workers
    (``AUTOGRADER_SEED``), so references are computed once per run and cached."""
    value = os.environ.get("AUTOGRADER_SEED")
    return int(value) if value else _process_seed()


def data_dir() -> Path:
    """MNIST, which jailed notebooks may read."""
    from course_utils.config import data_dir as course_data_dir

    return course_data_dir()


@cache
def course_id(root: Path = COURSE_ROOT) -> str:
    """``c.CourseDirectory.course_id`` as nbgrader itself reads it from ``root/nbgrader_config.py``."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    return str(config.CourseDirectory.get("course_id", "default_course"))
