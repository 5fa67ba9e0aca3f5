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

Nothing honest is merged or dropped. An id keeps all of what names a student (Moodle's
numeric id, a whole email address, any script: "Иван Петров" is ``иван_петров``), made
readable but never shortened; two different names that still read the same get an id
each, and a notice. Uploads are streamed, never read whole; symbolic links are not
followed; a ``.zip`` upload is unpacked member by member, bounded in size, without ever
writing a member's own path. Every collision, unreadable upload and archive is reported
by name: in :attr:`CollectSummary.notices`, as warnings of the ``autograder.collect``
logger, and in ``collect_notes.json`` beside the gradebook for the class page
(:func:`read_notes`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from nbgrader.plugins.zipcollect import FileNameCollectorPlugin
from traitlets import Unicode

from autograder import spec

log = logging.getLogger("autograder.collect")

# Name patterns of flat uploads: each a regex with named groups `student` and `notebook` (and
# `id`, a number the platform gives each student, which becomes part of the student's id).
PATTERNS = {
    # Google Forms file-upload questions store "<original file name> - <respondent name>.ipynb".
    "forms": r"^(?P<notebook>.+) - (?P<student>.+?)$",
    # Canvas "Download submissions": "<sortable name>[_LATE]_<user id>_<submission id>_<file name>".
    "canvas": r"^(?P<student>[^_]*?)(?:_LATE)?_(?P<id>\d+)_\d+_(?P<notebook>.+)$",
    # Moodle: a folder per submission, "<Full Name>_<id>_assignsubmission_file_" (matched on folder names).
    "moodle": r"^(?P<student>.+?)_(?P<id>\d+)_assignsubmission_(?:file|onlinetext)_?$",
}
NOTEBOOK_SUFFIXES = (".ipynb", ".ipynb.json")  # some form tools append .json
OTHER_ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".gz", ".7z", ".rar")
MAX_READ = 2_000_000  # bytes of an upload read to recognise it
MAX_MEMBER_BYTES = 64 * 2**20  # one notebook unpacked from a .zip upload
MAX_ARCHIVE_BYTES = 256 * 2**20  # everything unpacked from one .zip upload
MAX_MEMBERS = 1000  # entries of one .zip upload looked at
MAX_ID = 64  # characters of a readable id before it is shortened with a hash
NOTES = "collect_notes.json"  # beside the gradebook: what the last collect reported


class CollectError(RuntimeError):
    """Collecting cannot go on; the message says what to do."""


def slug(name: str) -> str:
    """A readable student id that keeps everything that tells students apart.

    'Jane Doe' -> 'jane_doe', 'jd@uni.edu' -> 'jd_uni_edu', 'Иван Петров' -> 'иван_петров'.
    Letters and digits of every script are kept; anything else becomes one '_'. A name longer
    than :data:`MAX_ID` keeps its start and a hash of the whole."""
    text = unicodedata.normalize("NFKC", name).casefold().strip()
    readable = re.sub(r"[\W_]+", "_", text).strip("_")
    if len(readable) > MAX_ID:
        readable = readable[: MAX_ID - 9].rstrip("_") + "_" + _digest(text)
    return readable


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _identity(name: str) -> str:
    """What counts as the same name: case, Unicode forms and spacing aside."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


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


def _named(found: re.Match) -> str | None:
    """The student a pattern's match names, with the platform's numeric id when it gives one."""
    groups = found.groupdict()
    student = (groups.get("student") or groups.get("student_id") or "").strip()
    number = groups.get("id") or ""
    return " ".join(part for part in (student, number) if part) or None


def _open_upload(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file, never through a symbolic link (OSError else)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file ({stat.filemode(os.fstat(fd).st_mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _head(path: Path) -> str:
    """The first :data:`MAX_READ` bytes of an upload, as text (the whole file is never read here)."""
    with _open_upload(path) as file:
        return file.read(MAX_READ).decode("utf-8", errors="replace")


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

    def owner(self, path: Path, stem: str) -> tuple[str, str] | None:
        """(student as written, notebook hint) from the folder or the file name; None if it says nobody."""
        parts = path.relative_to(self._root(path)).parts
        if len(parts) > 1:  # a folder per student
            return self.folder_owner(parts[0]), stem
        regex = compile_pattern(self.named_regexp)
        candidates = [regex] if regex else [re.compile(p, re.IGNORECASE) for p in PATTERNS.values()]
        for candidate in candidates:
            found = candidate.match(stem)
            student = _named(found) if found else None
            if student:
                groups = found.groupdict()
                return student, groups.get("notebook") or groups.get("file_id") or stem
        return None

    def folder_owner(self, folder: str) -> str:
        """The student a folder of uploads belongs to, as written (a Moodle folder name is understood)."""
        keys = ([self.named_regexp] if self.named_regexp in PATTERNS else []) + ["moodle"]
        for key in keys:
            found = re.match(PATTERNS[key], folder, re.IGNORECASE)
            if found and _named(found):
                return _named(found)
        return folder

    def hidden(self, path: Path) -> bool:
        """A checkpoint or a hidden file (.ipynb_checkpoints, macOS's ._ files): never an upload."""
        return any(p.startswith(".") for p in path.relative_to(self._root(path)).parts)

    def recognise(self, where: Path, stem: str, text: str, owner: tuple[str, str] | None) -> dict | None:
        """``{student, name, notebook}`` for an upload found at ``where`` (None: skipped, and why)."""
        if owner is None:
            self.skipped.append(f"{where}: the file name does not say whose it is (use a folder per student, "
                                "or --pattern with (?P<student>...) and (?P<notebook>...) groups)")  # fmt: skip
            return None
        name = notebook_name(owner[1], text)
        if name is None:
            self.skipped.append(f"{where}: not recognisably one of {sorted(spec.NOTEBOOKS)}")
            return None
        if not slug(owner[0]):
            self.skipped.append(f"{where}: the name {owner[0]!r} has no letter or digit to make an id of")
            return None
        return {"student": owner[0], "notebook": name}

    def collect(self, submitted_file: str) -> dict | None:
        """``{student_id, file_id, timestamp}`` for one upload, or None (the reason goes to :attr:`skipped`)."""
        path = Path(submitted_file)
        stem = _stem(path.name)
        if stem is None or self.hidden(path):
            return None
        try:
            text = _head(path)
            mtime = path.lstat().st_mtime
        except OSError as exc:
            self.skipped.append(f"{path}: unreadable ({exc})")
            return None
        found = self.recognise(path, stem, text, self.owner(path, stem))
        if found is None:
            return None
        stamp = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).replace(tzinfo=None)  # nbgrader: naive UTC
        return {
            "student_id": slug(found["student"]),
            "file_id": f"{found['notebook']}.ipynb",
            "timestamp": stamp,
            "path": path,
            "mtime": mtime,
        }


@dataclass
class CollectSummary:
    """What :func:`collect` did: the students it collected, how many notebooks, what it skipped and why,
    and what the instructor should know (collisions, unreadable uploads, archives), each naming the upload."""

    students: list[str] = field(default_factory=list)
    files: int = 0
    skipped: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


@dataclass
class _Upload:
    """One notebook found among the uploads: whose, which, when, and how to read it."""

    where: str  # as reports name it: the file, or "archive.zip: member"
    student: str  # as written
    notebook: str
    mtime: float
    path: Path  # the file, or the archive
    member: str | None = None  # a .zip member


def uploads(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """Every regular file under ``folder``, in a stable order; symbolic links are not followed (they go
    to ``skipped``, named)."""
    found = []
    for top, dirs, files in os.walk(folder):  # os.walk never descends into a linked folder
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(top, d))):
            path = Path(top) / name
            if path.is_symlink():
                if skipped is not None and not name.startswith("."):
                    skipped.append(f"{path}: a symbolic link, not followed")
                continue
            found.append(path)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
    return found


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith((".zip", *OTHER_ARCHIVES))


def _members(collector: LabCollector, archive: Path, notices: list[str]) -> Iterator[_Upload]:
    """The lab notebooks inside one ``.zip`` upload, whose the archive's place or name says they are.

    Only names are read here; nothing is extracted, and no member's path is ever used as one."""
    lowered = archive.name.lower()
    if not lowered.endswith(".zip"):
        notices.append(f"{archive}: an archive that is not a .zip, not unpacked (unpack it into the folder)")
        return
    owner_stem = archive.name[: -len(".zip")]
    try:
        mtime = archive.lstat().st_mtime
        with _open_upload(archive) as file, zipfile.ZipFile(file) as zipped:
            entries = zipped.infolist()
            used, total, taken, refused = [], 0, [], []
            for info in entries[:MAX_MEMBERS]:
                name = info.filename
                parts = [p for p in re.split(r"[\\/]", name) if p]
                mode = info.external_attr >> 16
                stem = _stem(parts[-1]) if parts and not info.is_dir() else None
                hidden = any(p.startswith(".") and p != ".." or p == "__MACOSX" for p in parts)
                if stem is None or hidden:
                    continue
                if (
                    name.startswith(("/", "\\"))
                    or ".." in parts
                    or re.match(r"^[A-Za-z]:", name)
                    or (stat.S_ISLNK(mode))
                ):  # never written by its name anyway: reported, as a sign of a crafted archive
                    refused.append(f"{name!r} (a link or a path outside the archive)")
                    continue
                if info.file_size > MAX_MEMBER_BYTES or total + info.file_size > MAX_ARCHIVE_BYTES:
                    refused.append(f"{name!r} ({info.file_size} bytes: over the size limit)")
                    continue
                total += info.file_size
                with zipped.open(info) as member:
                    text = member.read(MAX_READ).decode("utf-8", errors="replace")
                where = Path(f"{archive}: {name}")
                owner = collector.owner(archive, owner_stem)
                if owner is None and len(parts) > 1:  # a class's bulk download: a folder per student inside
                    owner = (collector.folder_owner(parts[0]), stem)
                owner = (owner[0], stem) if owner else None
                found = collector.recognise(where, stem, text, owner)
                if found is not None:
                    taken.append(name)
                    used.append(
                        _Upload(str(where), found["student"], found["notebook"], mtime, archive, name)
                    )
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:  # RuntimeError: encrypted
        notices.append(f"{archive}: an archive that could not be read ({type(exc).__name__}: {exc})")
        return
    more = f"; {len(entries) - MAX_MEMBERS} entries past the first {MAX_MEMBERS} not looked at" if (
        len(entries) > MAX_MEMBERS
    ) else ""  # fmt: skip
    notices.append(
        f"{archive}: an archive, unpacked: {', '.join(taken) or 'no lab notebook'}"
        + (f"; refused {', '.join(refused)}" if refused else "")
        + more
    )
    yield from used


def _copy(upload: _Upload, dest: Path) -> None:
    """Stream one upload into ``dest`` (a .zip member bounded by the size it may have)."""
    tmp = dest.with_name(f".{dest.name}.part")
    with open(tmp, "wb") as out:
        if upload.member is None:
            with _open_upload(upload.path) as source:
                shutil.copyfileobj(source, out, 2**20)
        else:
            with _open_upload(upload.path) as file, zipfile.ZipFile(file) as zipped:
                with zipped.open(upload.member) as source:  # the declared size may lie: count what comes
                    left = MAX_MEMBER_BYTES
                    while chunk := source.read(min(2**20, left + 1)):
                        left -= len(chunk)
                        if left < 0:
                            raise OSError(f"more than {MAX_MEMBER_BYTES} bytes unpacked")
                        out.write(chunk)
    os.replace(tmp, dest)


def read_notes(course_root: Path) -> dict:
    """What the last collect reported (``notices``, ``skipped``, and ``owners``: id -> name as written)."""
    try:
        notes = json.loads((Path(course_root) / NOTES).read_text())
    except (OSError, ValueError):
        return {"notices": [], "skipped": [], "owners": {}}
    return notes if isinstance(notes, dict) else {"notices": [], "skipped": [], "owners": {}}


def _assign_ids(found: list[_Upload], earlier: dict[str, str], notices: list[str]) -> dict[str, str]:
    """An id per student as written: their readable slug unless another name reads the same (now or in
    an earlier collect), in which case each such name gets the slug and a hash of the name."""
    names: dict[str, str] = {}  # identity -> name as first written
    for upload in found:
        names.setdefault(_identity(upload.student), upload.student)
    by_slug: dict[str, list[str]] = {}
    for identity in names:
        by_slug.setdefault(slug(identity), []).append(identity)
    ids: dict[str, str] = {}
    for readable, identities in sorted(by_slug.items()):
        before = earlier.get(readable)
        clash = len(identities) > 1 or (before is not None and _identity(before) not in identities)
        for identity in identities:
            apart = f"{readable}_{_digest(identity)}"  # kept apart in an earlier collect: stays so
            ids[identity] = apart if clash or apart in earlier else readable
        if clash:
            written = [names[i] for i in identities] + (
                [before] if before and _identity(before) not in identities else []
            )
            notices.append(
                f"id collision: {', '.join(repr(w) for w in written)} all read as {readable!r}; "
                f"collected as {', '.join(ids[i] for i in identities)} (kept apart, never merged)"
            )
    return ids


def collect(course_root: Path, folder: Path, pattern: str | None = None) -> CollectSummary:
    """Copy the latest upload per student and notebook into ``course_root/submitted/`` (nbgrader's layout).

    Latest means the newest file time; each student's ``timestamp.txt`` is their newest upload's,
    which nbgrader's late penalties read. Notebooks collected earlier are kept unless replaced."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CollectError(f"{folder} is not a folder of submissions")
    compile_pattern(pattern)  # a bad pattern is an error before anything is copied
    collector = LabCollector(named_regexp=pattern or "", root=str(folder))
    notices: list[str] = []
    found: list[_Upload] = []
    for path in uploads(folder, collector.skipped):
        if collector.hidden(path):
            continue
        if _is_archive(path):
            found.extend(_members(collector, path, notices))
            continue
        stem = _stem(path.name)
        if stem is None:
            continue
        try:
            text = _head(path)
            mtime = path.lstat().st_mtime
        except OSError as exc:
            notices.append(f"{path}: unreadable upload ({exc}), not collected")
            continue
        hit = collector.recognise(path, stem, text, collector.owner(path, stem))
        if hit is not None:
            found.append(_Upload(str(path), hit["student"], hit["notebook"], mtime, path))
    course_root = Path(course_root)
    owners = read_notes(course_root).get("owners") or {}
    ids = _assign_ids(found, owners, notices)
    latest: dict[tuple[str, str], _Upload] = {}
    for upload in found:
        key = (ids[_identity(upload.student)], upload.notebook)
        if key not in latest or upload.mtime >= latest[key].mtime:
            latest[key] = upload
    newest: dict[str, float] = {}
    submitted = course_root / "submitted"
    for (student, notebook), upload in sorted(latest.items()):
        dest = submitted / student / spec.ASSIGNMENT
        dest.mkdir(parents=True, exist_ok=True)
        try:
            _copy(upload, dest / f"{notebook}.ipynb")
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
            notices.append(f"{upload.where}: unreadable upload ({exc}), not collected")
            continue
        newest[student] = max(newest.get(student, 0.0), upload.mtime)
        owners[student] = upload.student
    for student, mtime in newest.items():
        stamp = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f %Z")
        (submitted / student / spec.ASSIGNMENT / "timestamp.txt").write_text(stamp)
    for line in notices:
        log.warning("collect: %s", line)
    notes = {"notices": notices, "skipped": collector.skipped, "owners": owners}
    (course_root / NOTES).write_text(json.dumps(notes, ensure_ascii=False, indent=1))
    files = sum(1 for key in latest if key[0] in newest)
    return CollectSummary(sorted(newest), files, collector.skipped, notices)
