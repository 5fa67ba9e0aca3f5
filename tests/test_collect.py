"""Collecting uploads (folders, Google Forms, Canvas, Moodle, custom patterns) into nbgrader's layout."""

from __future__ import annotations

import html
import logging
import os
import tracemalloc
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbgrader.utils import parse_utc

from autograder import collect, report, spec
from tests.fixtures import course

ROOT = Path(__file__).resolve().parents[1]


def _notebook_with(source: str) -> str:
    return nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]))


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """The shared test course (the lab's source and its nbgrader_config.py), nothing submitted yet."""
    return course.scratch(tmp_path)


def _uploads(folder: Path) -> None:
    """A folder per student, a Moodle folder, a Canvas name, two Forms uploads of one notebook, a stray file."""
    (folder / "alice").mkdir(parents=True)
    (folder / "alice" / "accumulation.ipynb").write_text(_notebook_with("def train_epoch(): pass"))
    (folder / "alice" / ".ipynb_checkpoints").mkdir()
    (folder / "alice" / ".ipynb_checkpoints" / "adam-checkpoint.ipynb").write_text(
        _notebook_with("class Adam: 1")
    )
    (folder / "Dan Brown_555_assignsubmission_file_").mkdir()
    (folder / "Dan Brown_555_assignsubmission_file_" / "Copy of adam (1).ipynb").write_text(
        _notebook_with("class Adam: pass")
    )
    (folder / "smithjohn_LATE_1234_5678_adam-1.ipynb").write_text(_notebook_with("class Adam: pass"))
    old = folder / "accumulation - Carol Smith.ipynb"
    new = folder / "my work - Carol Smith.ipynb"  # named after nothing: recognised by its content
    old.write_text(_notebook_with("def train_epoch(): return 'old'"))
    new.write_text(_notebook_with("def train_epoch(): return 'new'"))
    os.utime(old, (1_700_000_000, 1_700_000_000))
    os.utime(new, (1_700_000_500, 1_700_000_500))
    (folder / "notes.ipynb").write_text(_notebook_with("print('hi')"))
    (folder / "readme.txt").write_text("not a notebook")


def test_collect_understands_folders_forms_and_lms_exports(tmp_path: Path, lab: Path) -> None:
    uploads = tmp_path / "uploads"
    _uploads(uploads)

    summary = collect.collect(lab, uploads)
    assert summary.students == ["alice", "carol_smith", "dan_brown_555", "smithjohn_1234"]
    assert summary.files == 4
    sub = lab / "submitted"
    carol = sub / "carol_smith" / spec.ASSIGNMENT
    assert "'new'" in (carol / "accumulation.ipynb").read_text()  # latest wins
    assert parse_utc((carol / "timestamp.txt").read_text()).timestamp() == pytest.approx(
        parse_utc("2023-11-14 22:21:40 UTC").timestamp()
    )  # the newest upload's time, as nbgrader reads it
    assert (sub / "dan_brown_555" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "smithjohn_1234" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "alice" / spec.ASSIGNMENT / "timestamp.txt").exists()
    assert not (sub / "alice" / spec.ASSIGNMENT / "adam.ipynb").exists()  # checkpoints are not uploads
    assert len(summary.skipped) == 1 and "notes.ipynb" in summary.skipped[0] and "whose" in summary.skipped[0]


def test_latest_upload_wins_per_notebook_not_per_student(tmp_path: Path, lab: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    files = {  # the adam upload is the newest, the newer accumulation must still win over the older one
        "accumulation - Eve.ipynb": ("def train_epoch(): return 'old'", 1_700_000_000),
        "accumulation (1) - Eve.ipynb": ("def train_epoch(): return 'new'", 1_700_000_100),
        "adam - Eve.ipynb": ("class Adam: pass", 1_700_000_900),
    }
    for name, (source, when) in files.items():
        (uploads / name).write_text(_notebook_with(source))
        os.utime(uploads / name, (when, when))
    (lab / "submitted" / "eve" / spec.ASSIGNMENT).mkdir(parents=True)
    kept = lab / "submitted" / "eve" / spec.ASSIGNMENT / "extra.txt"
    kept.write_text("collected earlier")

    summary = collect.collect(lab, uploads, "forms")
    assert summary.students == ["eve"] and summary.files == 2
    assert "'new'" in (lab / "submitted" / "eve" / spec.ASSIGNMENT / "accumulation.ipynb").read_text()
    assert kept.exists()  # a second collect does not wipe what is there


def test_collect_with_a_custom_pattern_and_clear_errors(tmp_path: Path, lab: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "s123456__adam.ipynb").write_text(_notebook_with("class Adam: pass"))
    (uploads / "S654321__accumulation.ipynb.json").write_text(_notebook_with("def train_epoch(): pass"))
    summary = collect.collect(lab, uploads, r"(?P<student>s\d+)__(?P<notebook>\w+)")
    assert summary.students == ["s123456", "s654321"]
    assert (lab / "submitted" / "s654321" / spec.ASSIGNMENT / "accumulation.ipynb").exists()
    with pytest.raises(collect.CollectError, match="not a folder"):
        collect.collect(lab, tmp_path / "missing")
    with pytest.raises(collect.CollectError, match="no \\(\\?P<student>"):
        collect.collect(lab, uploads, r"(?P<notebook>\w+)")
    with pytest.raises(collect.CollectError, match="neither a preset"):
        collect.collect(lab, uploads, r"(?P<student>s\d+")
    assert collect.slug("  Jane  O'Neil ") == "jane_o_neil" and collect.slug("JD@uni.edu") == "jd_uni_edu"
    assert collect.slug("Jane Doe") == "jane_doe" and collect.slug("Иван Петров") == "иван_петров"
    long = collect.slug("x" * 500)
    assert len(long) <= collect.MAX_ID and long != collect.slug("x" * 499 + "y")  # shortened, still apart


def test_the_plugin_works_in_nbgraders_own_zip_collect(tmp_path: Path, lab: Path) -> None:
    archive = lab / "downloaded" / spec.ASSIGNMENT / "archive"
    _uploads(archive)
    proc = course.nbgrader(lab, "zip_collect", spec.ASSIGNMENT, "--collector=autograder.collect.LabCollector",
                          timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = lab / "submitted"
    assert sorted(p.name for p in sub.iterdir()) == [
        "alice",
        "carol_smith",
        "dan_brown_555",
        "smithjohn_1234",
    ]
    assert (sub / "dan_brown_555" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "carol_smith" / spec.ASSIGNMENT / "accumulation.ipynb").exists()
    assert (sub / "smithjohn_1234" / spec.ASSIGNMENT / "timestamp.txt").exists()


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_notebook_with(source))
    return path


def _source_of(lab: Path, student: str, notebook: str) -> str:
    return (
        nbformat.read(lab / "submitted" / student / spec.ASSIGNMENT / f"{notebook}.ipynb", 4).cells[0].source
    )


def test_distinct_students_keep_distinct_ids(tmp_path: Path, lab: Path) -> None:
    uploads = tmp_path / "uploads"
    for number in (101, 202):  # two Moodle students with one name
        _write(
            uploads / f"Wei Zhang_{number}_assignsubmission_file_" / "adam.ipynb", f"class Adam: n = {number}"
        )
    for address in ("jd@uni.edu", "jd@gmail.com"):  # one local part, two people
        _write(uploads / address / "adam.ipynb", f"class Adam: who = {address!r}")
    _write(uploads / "adam - Mary-Jane Smith.ipynb", "class Adam: who = 'mj'")  # Google Forms, any script
    _write(uploads / "adam - Иван Петров.ipynb", "class Adam: who = 'ip'")
    _write(uploads / "Jane Doe" / "adam.ipynb", "class Adam: who = 'space'")  # two names, one reading
    _write(uploads / "jane.doe" / "adam.ipynb", "class Adam: who = 'dot'")

    summary = collect.collect(lab, uploads)
    apart = sorted(s for s in summary.students if s.startswith("jane_doe_"))
    assert summary.students == sorted(
        [
            "wei_zhang_101",
            "wei_zhang_202",
            "jd_uni_edu",
            "jd_gmail_com",
            "mary_jane_smith",
            "иван_петров",
            *apart,
        ]
    )
    assert len(apart) == 2 and summary.files == 8 and summary.skipped == []
    assert _source_of(lab, "wei_zhang_101", "adam") == "class Adam: n = 101"
    assert _source_of(lab, "wei_zhang_202", "adam") == "class Adam: n = 202"
    assert _source_of(lab, "jd_gmail_com", "adam") == "class Adam: who = 'jd@gmail.com'"
    assert {_source_of(lab, s, "adam") for s in apart} == {
        "class Adam: who = 'space'",
        "class Adam: who = 'dot'",
    }
    (collision,) = summary.notices
    assert "'Jane Doe'" in collision and "'jane.doe'" in collision and all(s in collision for s in apart)
    assert collect.read_notes(lab)["notices"] == summary.notices
    page = report.class_page(lab, {}, tmp_path / "class" / "class.html").read_text()
    assert "Uploads to check" in page and collision in html.unescape(page)  # by name, on the class page

    # A later collect of one of them keeps the id it was given, and a new "jane doe" (same name) is them.
    later = tmp_path / "later"
    _write(later / "JANE  DOE" / "adam.ipynb", "class Adam: who = 'space, again'")
    again = collect.collect(lab, later)
    (same,) = again.students
    assert same in apart and _source_of(lab, same, "adam") == "class Adam: who = 'space, again'"
    assert again.notices == []


def _zip(path: Path, members: dict[str, str | bytes], links: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, content in members.items():
            zipped.writestr(name, content)
        for name in links:  # a symbolic link entry, as `zip --symlinks` stores it
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zipped.writestr(info, "/etc/passwd")
    return path


def test_archives_links_and_unreadable_uploads_are_reported_by_name(
    tmp_path: Path, lab: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(collect, "MAX_MEMBER_BYTES", 50_000)
    uploads = tmp_path / "uploads"
    big = _notebook_with("def train_epoch(): pass") + " " * 60_000
    _zip(uploads / "lab - Ana Lima.zip", {
        "lab/adam.ipynb": _notebook_with("class Adam: who = 'ana'"),
        "../../escaped.ipynb": _notebook_with("class Adam: pass"),
        "/tmp/absolute.ipynb": _notebook_with("class Adam: pass"),
        "__MACOSX/lab/._adam.ipynb": b"\x00\x05",
        "accumulation.ipynb": big,
    }, links=("adam (1).ipynb",))  # fmt: skip
    _zip(uploads / "class download.zip", {  # a class's bulk download: a folder per student inside
        "Li Na_303_assignsubmission_file_/accumulation.ipynb": _notebook_with("def train_epoch(): 'li'"),
    })  # fmt: skip
    (uploads / "adam - Tom Tar.tar.gz").write_bytes(b"\x1f\x8b not unpacked")
    (uploads / "adam - Not Zip.zip").write_bytes(b"PK garbage")
    source = ROOT / "assignments" / "source" / spec.ASSIGNMENT / "adam.ipynb"
    (uploads / "Bob Link").mkdir()
    (uploads / "Bob Link" / "adam.ipynb").symlink_to(source)  # the instructor's notebook, through a link
    (uploads / "linked folder").symlink_to(source.parent, target_is_directory=True)
    os.mkfifo(uploads / "adam - Fifo Person.ipynb")  # not a regular file: must not block collect

    with caplog.at_level(logging.WARNING, logger="autograder.collect"):
        summary = collect.collect(lab, uploads)
    assert summary.students == ["ana_lima", "li_na_303"]
    assert _source_of(lab, "ana_lima", "adam") == "class Adam: who = 'ana'"
    assert _source_of(lab, "li_na_303", "accumulation") == "def train_epoch(): 'li'"
    assert not (lab / "submitted" / "ana_lima" / spec.ASSIGNMENT / "accumulation.ipynb").exists()
    assert not list(tmp_path.rglob("escaped.ipynb")) and not Path("/tmp/absolute.ipynb").exists()
    assert not list((lab / "submitted").rglob("._adam.ipynb"))

    notices = "\n".join(summary.notices)
    ana = next(n for n in summary.notices if "lab - Ana Lima.zip" in n)
    assert (
        "unpacked: lab/adam.ipynb" in ana
        and "'../../escaped.ipynb'" in ana
        and "'/tmp/absolute.ipynb'" in ana
    )
    assert (
        "'adam (1).ipynb' (a link" in ana and "'accumulation.ipynb' (" in ana and "over the size limit" in ana
    )
    assert "class download.zip: an archive, unpacked: Li Na_303" in notices
    assert "adam - Tom Tar.tar.gz: an archive that is not a .zip" in notices
    assert "adam - Not Zip.zip: an archive that could not be read" in notices
    assert "adam - Fifo Person.ipynb: unreadable upload" in notices
    assert len(summary.notices) == 5
    skipped = "\n".join(summary.skipped)
    assert "Bob Link/adam.ipynb: a symbolic link, not followed" in skipped
    assert "linked folder: a symbolic link, not followed" in skipped
    assert not (lab / "submitted" / "bob_link").exists()
    assert [r.getMessage() for r in caplog.records] == [f"collect: {n}" for n in summary.notices]
    assert collect.read_notes(lab)["notices"] == summary.notices


def test_uploads_are_streamed_not_read_whole(tmp_path: Path, lab: Path) -> None:
    uploads = tmp_path / "uploads"
    path = _write(uploads / "adam - Big Upload.ipynb", "class Adam: pass")
    size = 96 * 2**20
    with open(path, "r+b") as file:  # a sparse 96 MiB file: little disk, but reading it whole costs its size
        file.truncate(size)
    tracemalloc.start()
    try:
        summary = collect.collect(lab, uploads)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.students == ["big_upload"]
    assert (lab / "submitted" / "big_upload" / spec.ASSIGNMENT / "adam.ipynb").stat().st_size == size
    assert peak < 16 * 2**20, f"collect held {peak / 2**20:.0f} MiB at once"
