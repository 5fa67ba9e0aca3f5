"""Collect downloaded uploads into nbgrader's ``submitted/<student>/<assignment>/`` layout.

Parsing an upload's path is nbgrader's job shape: :class:`LabCollector` is a
``FileNameCollectorPlugin`` (nbgrader.plugins.zipcollect) that turns one file into
``{student_id, file_id, timestamp}``. It knows the names Google Forms, Canvas and Moodle
give uploads, a folder per student, ``--pattern`` regexes, "Copy of adam (1).ipynb" and
notebooks recognised by their content. It also works inside nbgrader's own app::

    nbgrader zip_collect optimizers_lab --collector=autograder.collect.LabCollector

:func:`collect` uses the plugin directly on a folder of uploads rather than through
``ZipCollectApp``, because that app does not fit four things the grader must keep:
it compares upload times per student, not per notebook, so an old copy of one notebook
loses to nothing newer than the student's other notebook; its extractor copies files
with ``shutil.copy``, which resets the file times latest-upload-wins needs; re-running
it fails on a collected student unless ``--force``, which deletes their other notebooks;
and it names ``adam.ipynb.json`` uploads ``adam.json``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.plugins.zipcollect import FileNameCollectorPlugin
from traitlets import Unicode

from autograder import spec

# Name patterns of flat uploads: each a regex with named groups `student` and `notebook`.
PATTERNS = {
    # Google Forms file-upload questions store "<original file name> - <respondent name>.ipynb".
    "forms": r"^(?P<notebook>.+?) - (?P<student>[^-]+?)$",
    # Canvas "Download submissions": "<sortable name>[_LATE]_<user id>_<submission id>_<file name>".
    "canvas": r"^(?P<student>[a-z]+)(?:_LATE)?_\d+_\d+_(?P<notebook>.+)$",
    # Moodle: a folder per submission, "<Full Name>_<id>_assignsubmission_file_" (matched on folder names).
    "moodle": r"^(?P<student>.+?)_\d+_assignsubmission_file_?$",
}
NOTEBOOK_SUFFIXES = (".ipynb", ".ipynb.json")  # some form tools append .json
MAX_READ = 2_000_000  # characters of a file read to recognise it


class CollectError(RuntimeError):
    """Collecting cannot go on; the message says what to do."""


def slug(name: str) -> str:
    """A student id nbgrader and file systems accept: 'Jane Doe' -> 'jane_doe', 'jd@uni.edu' -> 'jd'."""
    name = name.strip().split("@")[0] if "@" in name else name.strip()
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def notebook_name(stem: str, text: str) -> str | None:
    """Which lab notebook an upload is: from its name ("Copy of adam (1)"), else from its content."""
    from autograder.repair import identify

    clean = re.sub(r"^(copy of |kopie von |copie de )", "", stem.lower().strip())
    clean = re.sub(r"(\s*\(\d+\)|[-_ ]\d+)$", "", clean)
    hits = [name for name in spec.NOTEBOOKS if name in clean]
    if len(hits) == 1:
        return hits[0]
    return identify(text)


def compile_pattern(pattern: str | None) -> re.Pattern | None:
    """``--pattern``: a preset name or a regex with a ``(?P<student>...)`` group (clear errors otherwise)."""
    if not pattern:
        return None
    try:
        regex = re.compile(PATTERNS.get(pattern, pattern), re.IGNORECASE)
    except re.error as exc:
        raise CollectError(
            f"--pattern {pattern!r} is neither a preset ({', '.join(PATTERNS)}) nor a valid regex: {exc}"
        ) from None
    if "student" not in regex.groupindex and "student_id" not in regex.groupindex:
        raise CollectError(
            f"--pattern {pattern!r} has no (?P<student>...) group, so it cannot say whose a file is"
        )
    return regex


def _stem(name: str) -> str | None:
    """The file name without its notebook suffix; None for a file that is not a notebook."""
    for suffix in NOTEBOOK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


class LabCollector(FileNameCollectorPlugin):
    """nbgrader collector plugin for the lab's uploads: one file path in, whose and which notebook out.

    A file in a sub-folder of :attr:`root` belongs to the student the folder names (a Moodle
    folder name is understood); a file directly in it is matched by :attr:`named_regexp`, or
    by every preset in :data:`PATTERNS` when that is empty. Why a file was skipped is kept
    in :attr:`skipped`.
    """

    named_regexp = Unicode(
        "",
        help="A regex with (?P<student>...) and (?P<notebook>...) groups, or a preset name: "
        + ", ".join(PATTERNS),
    ).tag(config=True)
    root = Unicode("", help="The folder of uploads (default: nbgrader zip_collect's extracted folder)").tag(
        config=True
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.skipped: list[str] = []

    def _root(self, path: Path) -> Path:
        if self.root:
            return Path(self.root)
        app = self.parent
        if app is not None and hasattr(app, "extracted_directory"):  # inside nbgrader zip_collect
            return Path(app._format_collect_path(app.extracted_directory))
        return path.parent

    def _owner(self, path: Path, stem: str) -> tuple[str, str] | None:
        """(student as written, notebook hint) from the folder or the file name; None if it says nobody."""
        parts = path.relative_to(self._root(path)).parts
        if len(parts) > 1:  # a folder per student
            folder = parts[0]
            keys = ([self.named_regexp] if self.named_regexp in PATTERNS else []) + ["moodle"]
            for key in keys:
                found = re.match(PATTERNS[key], folder, re.IGNORECASE)
                if found:
                    return found.group("student"), stem
            return folder, stem
        regex = compile_pattern(self.named_regexp)
        candidates = [regex] if regex else [re.compile(p, re.IGNORECASE) for p in PATTERNS.values()]
        for candidate in candidates:
            found = candidate.match(stem)
            groups = found.groupdict() if found else {}
            student = groups.get("student") or groups.get("student_id")
            if student:
                return student, groups.get("notebook") or groups.get("file_id") or stem
        return None

    def collect(self, submitted_file: str) -> dict | None:
        """``{student_id, file_id, timestamp}`` for one upload, or None (the reason goes to :attr:`skipped`)."""
        path = Path(submitted_file)
        stem = _stem(path.name)
        if stem is None or any(p.startswith(".") for p in path.relative_to(self._root(path)).parts):
            return None  # not a notebook, or hidden (.ipynb_checkpoints, macOS's ._ files)
        owner = self._owner(path, stem)
        if owner is None:
            self.skipped.append(f"{path.name}: the file name does not say whose it is (use a folder per student, "
                                "or --pattern with (?P<student>...) and (?P<notebook>...) groups)")  # fmt: skip
            return None
        try:
            text = path.read_text(errors="replace")[:MAX_READ]
        except OSError as exc:
            self.skipped.append(f"{path}: unreadable ({exc})")
            return None
        name = notebook_name(owner[1], text)
        if name is None:
            self.skipped.append(f"{path}: not recognisably one of {sorted(spec.NOTEBOOKS)}")
            return None
        student = slug(owner[0])
        if not student:
            self.skipped.append(f"{path}: empty student id")
            return None
        mtime = path.stat().st_mtime
        stamp = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).replace(tzinfo=None)  # nbgrader: naive UTC
        return {
            "student_id": student,
            "file_id": f"{name}.ipynb",
            "timestamp": stamp,
            "path": path,
            "mtime": mtime,
        }


@dataclass
class CollectSummary:
    """What :func:`collect` did: the students it collected, how many notebooks, what it skipped and why."""

    students: list[str] = field(default_factory=list)
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def uploads(folder: Path) -> list[Path]:
    """Every file under ``folder``, in a stable order (the collector decides which are notebooks)."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / f for f in sorted(files)]
    return found


def collect(course_root: Path, folder: Path, pattern: str | None = None) -> CollectSummary:
    """Copy the latest upload per student and notebook into ``course_root/submitted/`` (nbgrader's layout).

    Latest means the newest file time; each student's ``timestamp.txt`` is their newest upload's,
    which nbgrader's late penalties read. Notebooks collected earlier are kept unless replaced."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CollectError(f"{folder} is not a folder of submissions")
    compile_pattern(pattern)  # a bad pattern is an error before anything is copied
    collector = LabCollector(named_regexp=pattern or "", root=str(folder))
    latest: dict[tuple[str, str], dict] = {}
    for path in uploads(folder):
        info = collector.collect(str(path))
        if info is None:
            continue
        key = (info["student_id"], info["file_id"])
        if key not in latest or info["mtime"] >= latest[key]["mtime"]:
            latest[key] = info
    newest: dict[str, float] = {}
    submitted = Path(course_root) / "submitted"
    for (student, file_id), info in sorted(latest.items()):
        dest = submitted / student / spec.ASSIGNMENT
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(info["path"], dest / file_id)
        newest[student] = max(newest.get(student, 0.0), info["mtime"])
    for student, mtime in newest.items():
        stamp = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f %Z")
        (submitted / student / spec.ASSIGNMENT / "timestamp.txt").write_text(stamp)
    return CollectSummary(sorted(newest), len(latest), collector.skipped)
