"""Every grading setting, defined once: paths, time and memory limits, the grading options.

(The lab's name, ``ASSIGNMENT``, belongs to what is graded: :mod:`autograder.spec`.)

Settings travel one way, as traitlets configuration, the way nbgrader configures its own
apps (``c.LimitOutput.max_lines = 1000``). The section is ``Grading``:

* ``assignments/nbgrader_config.py`` may set any of them for every run
  (``c.Grading.cell_timeout = 120``), so formgrader's Autograde button and ``nbgrader
  autograde`` grade under them;
* ``python -m autograder grade --cell-timeout 120`` builds an :class:`Options` and merges
  :meth:`Options.to_config` over that file for one run; Dask workers receive the same
  object with their task;
* the preprocessors and the jailed kernel manager, which nbgrader and nbclient create
  with that configuration, read it back with :meth:`Options.from_config`.

Nothing is passed through ``os.environ``. The only variables read here are where private
scratch folders go (``$AUTOGRADER_SCRATCH``, like ``$TMPDIR``) and, through
:mod:`course_utils.config`, where MNIST lives.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path

from traitlets.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
COURSE_ROOT = REPO_ROOT / "assignments"  # the nbgrader course directory
RESULT_KEY = "autograder"  # the notebook and cell metadata key our preprocessors write
SECTION = "Grading"  # the traitlets section: c.Grading.<limit or option>

__all__ = ["COURSE_ROOT", "REPO_ROOT", "RESULT_KEY", "SECTION", "Limits", "Options"]


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


_LIMITS = {f.name: float if f.type == "float" else int for f in fields(Limits)}
_OPTIONS = {"device": str, "unconfined": bool, "seed": int, "scratch": str}


@dataclass(frozen=True)
class Options:
    """How one grading run grades: the limits, the hidden checks' device, the jail, the seed, the scratch."""

    limits: Limits = field(default_factory=Limits)
    device: str | None = None  # "cpu" or "cuda"; None: the GPU if there is one
    unconfined: bool = False  # True only when the instructor asked for grading without the jail
    seed: int | None = None  # the hidden checks' inputs; None: one per process, unknown in advance
    scratch: str | None = None  # where jails and course copies go; None: $AUTOGRADER_SCRATCH or the temp dir

    @classmethod
    def from_config(cls, config: Config | None) -> Options:
        """The options set in ``config.Grading`` (nbgrader_config.py, the command line), defaults elsewhere."""
        section = (config or Config()).get(SECTION) or {}
        unknown = sorted(set(section) - set(_LIMITS) - set(_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown setting c.{SECTION}.{unknown[0]}; the settings are: {', '.join([*_LIMITS, *_OPTIONS])}"
            )
        values = {}
        for name, kind in {**_LIMITS, **_OPTIONS}.items():
            value = section.get(name)
            if value is None:
                continue
            try:
                values[name] = kind(value) if kind is not bool else _flag(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"c.{SECTION}.{name} = {value!r}: expected a {kind.__name__} value"
                ) from None
        limits = replace(Limits(), **{k: v for k, v in values.items() if k in _LIMITS})
        return cls(limits, **{k: v for k, v in values.items() if k in _OPTIONS})

    def to_config(self) -> Config:
        """These options as ``c.Grading.*``, to merge over a course's nbgrader_config.py."""
        section = {**asdict(self.limits), "unconfined": self.unconfined}
        section.update(
            {k: getattr(self, k) for k in ("device", "seed", "scratch") if getattr(self, k) is not None}
        )
        return Config({SECTION: section})

    def with_seed(self) -> Options:
        """The same options with the seed fixed (one per grading run, shared by its workers)."""
        return self if self.seed is not None else replace(self, seed=process_seed())


def _flag(value: object) -> bool:
    if isinstance(value, str):
        if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no", ""):
            raise ValueError(value)
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def course_config(root: Path = COURSE_ROOT, options: Options | None = None) -> Config:
    """The course's nbgrader_config.py as nbgrader loads it, rooted at ``root``, with ``options`` over it."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    if options is not None:
        config.merge(options.to_config())
    return config


def scratch_root(options: Options | None = None) -> Path:
    """Where private per-submission folders are made: ``options.scratch`` (a grading run's own folder), else
    ``$AUTOGRADER_SCRATCH`` (like ``$TMPDIR``: where this machine keeps them), else the temp dir."""
    if options is not None and options.scratch:
        return Path(options.scratch)
    return Path(os.environ.get("AUTOGRADER_SCRATCH") or tempfile.gettempdir())


@cache
def process_seed() -> int:
    """This process's seed for the hidden checks when no run fixed one (drawn once, then kept)."""
    return secrets.randbelow(2**31)


def course_seed(root: Path) -> int:
    """The course's secret base seed for the hidden checks, drawn once and kept in ``root/.autograder_seed``
    (owner-only; the jail never shows it), so a regrade draws the same inputs as the first grading."""
    path = Path(root) / ".autograder_seed"
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        seed = secrets.randbelow(2**31)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another grader process drew it first: theirs counts
            return int(path.read_text().strip())
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{seed}\n")
        return seed


def student_seed(base: int, student: str) -> int:
    """One student's hidden-check seed: fixed per student and course, so feedback a student already has
    stays true after a regrade, and different for each student."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{int(base)}:{student}".encode()).digest()[:4], "big") % 2**31


def data_dir() -> Path:
    """MNIST, which jailed notebooks may read."""
    from course_utils.config import data_dir as course_data_dir

    return course_data_dir()


@cache
def course_id(root: Path = COURSE_ROOT) -> str:
    """``c.CourseDirectory.course_id`` as nbgrader itself reads it from ``root/nbgrader_config.py``."""
    return str(course_config(Path(root)).CourseDirectory.get("course_id", "default_course"))
