"""Collecting uploads (folders, Google Forms, Canvas, Moodle, custom patterns) into nbgrader's layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.utils import parse_utc

from autograder import collect, spec

ROOT = Path(__file__).resolve().parents[1]


def _notebook_with(source: str) -> str:
    return nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]))


@pytest.fixture
def course(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text((ROOT / "assignments" / "nbgrader_config.py").read_text())
    return root


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


def test_collect_understands_folders_forms_and_lms_exports(tmp_path: Path, course: Path) -> None:
    uploads = tmp_path / "uploads"
    _uploads(uploads)

    summary = collect.collect(course, uploads)
    assert summary.students == ["alice", "carol_smith", "dan_brown", "smithjohn"]
    assert summary.files == 4
    sub = course / "submitted"
    carol = sub / "carol_smith" / spec.ASSIGNMENT
    assert "'new'" in (carol / "accumulation.ipynb").read_text()  # latest wins
    assert parse_utc((carol / "timestamp.txt").read_text()).timestamp() == pytest.approx(
        parse_utc("2023-11-14 22:21:40 UTC").timestamp()
    )  # the newest upload's time, as nbgrader reads it
    assert (sub / "dan_brown" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "smithjohn" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "alice" / spec.ASSIGNMENT / "timestamp.txt").exists()
    assert not (sub / "alice" / spec.ASSIGNMENT / "adam.ipynb").exists()  # checkpoints are not uploads
    assert len(summary.skipped) == 1 and "notes.ipynb" in summary.skipped[0] and "whose" in summary.skipped[0]


def test_latest_upload_wins_per_notebook_not_per_student(tmp_path: Path, course: Path) -> None:
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
    (course / "submitted" / "eve" / spec.ASSIGNMENT).mkdir(parents=True)
    kept = course / "submitted" / "eve" / spec.ASSIGNMENT / "extra.txt"
    kept.write_text("collected earlier")

    summary = collect.collect(course, uploads, "forms")
    assert summary.students == ["eve"] and summary.files == 2
    assert "'new'" in (course / "submitted" / "eve" / spec.ASSIGNMENT / "accumulation.ipynb").read_text()
    assert kept.exists()  # a second collect does not wipe what is there


def test_collect_with_a_custom_pattern_and_clear_errors(tmp_path: Path, course: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "s123456__adam.ipynb").write_text(_notebook_with("class Adam: pass"))
    (uploads / "S654321__accumulation.ipynb.json").write_text(_notebook_with("def train_epoch(): pass"))
    summary = collect.collect(course, uploads, r"(?P<student>s\d+)__(?P<notebook>\w+)")
    assert summary.students == ["s123456", "s654321"]
    assert (course / "submitted" / "s654321" / spec.ASSIGNMENT / "accumulation.ipynb").exists()
    with pytest.raises(collect.CollectError, match="not a folder"):
        collect.collect(course, tmp_path / "missing")
    with pytest.raises(collect.CollectError, match="no \\(\\?P<student>"):
        collect.collect(course, uploads, r"(?P<notebook>\w+)")
    with pytest.raises(collect.CollectError, match="neither a preset"):
        collect.collect(course, uploads, r"(?P<student>s\d+")
    assert collect.slug("  Jane  O'Neil ") == "jane_o_neil" and collect.slug("JD@uni.edu") == "jd"
    assert collect.slug("Jane Doe") == "jane_doe"


def test_the_plugin_works_in_nbgraders_own_zip_collect(tmp_path: Path, course: Path) -> None:
    archive = course / "downloaded" / spec.ASSIGNMENT / "archive"
    _uploads(archive)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", "zip_collect", spec.ASSIGNMENT,
         "--collector=autograder.collect.LabCollector"],
        cwd=course, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = course / "submitted"
    assert sorted(p.name for p in sub.iterdir()) == ["alice", "carol_smith", "dan_brown", "smithjohn"]
    assert (sub / "dan_brown" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "carol_smith" / spec.ASSIGNMENT / "accumulation.ipynb").exists()
    assert (sub / "smithjohn" / spec.ASSIGNMENT / "timestamp.txt").exists()
