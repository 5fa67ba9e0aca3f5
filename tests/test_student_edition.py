"""The student edition: everything students need, nothing of the solutions or hidden tests."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from autograder import leaks
from autograder.repair import grade_id
from tests.fixtures import course
from tools import notebooks as nbtools
from tools import student_edition as publish

ROOT = Path(__file__).resolve().parents[1]
EDITION_REPO = "https://github.com/example-org/optimizers-student"
INSTRUCTOR_REPO = nbtools.load_setting().repository
SOURCE = ROOT / "assignments" / "source" / "optimizers_lab"


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    return publish.build(tmp_path_factory.mktemp("pub") / "student-edition", EDITION_REPO)


def _texts(folder):
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix != ".zip":
            yield path, path.read_text(errors="replace")


def _solution_cells():
    """Source solution cells as students would have to write them (the markers removed)."""
    for path in sorted(SOURCE.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
                yield path.name, cell


def _solution_body(source):
    return "\n".join(line for line in source.splitlines() if "SOLUTION" not in line)


@pytest.mark.slow
def test_edition_has_the_lectures_the_package_and_the_released_lab(edition):
    assert sorted(p.name for p in (edition / "notebooks").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb")
    )
    assert (edition / "course_utils" / "training.py").exists()
    assert sorted(p.name for p in (edition / "lab").glob("*.ipynb")) == ["accumulation.ipynb", "adam.ipynb"]
    for name in ("pyproject.toml", "environment.yml", "README.md", "Makefile"):
        assert (edition / name).exists(), name
    with zipfile.ZipFile(str(edition) + ".zip") as zf:
        names = zf.namelist()
    assert (
        "student-edition/lab/adam.ipynb" in names and "student-edition/course_utils/data/__init__.py" in names
    )


@pytest.mark.slow
def test_edition_holds_no_solution_no_hidden_test_no_instructor_data(edition):
    assert not (edition / "autograder").exists()
    assert not list(edition.rglob("*.db")) and not list(edition.rglob("gradebook*"))
    assert not any(
        part in {"submitted", "autograded", "feedback", "source"}
        for p in edition.rglob("*")
        for part in p.parts[len(edition.parts) :]
    )
    solution_bodies = [_solution_body(cell.source) for _, cell in _solution_cells()]
    assert solution_bodies and all(len(body) > 50 for body in solution_bodies)
    for path, text in _texts(edition):
        for needle in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "HIDDEN TESTS", "autograder."):
            assert needle not in text, f"{path} contains {needle!r}"
        if path.suffix == ".ipynb":
            sources = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
            for body in solution_bodies:
                assert body not in sources, f"{path} contains a solution cell verbatim"


@pytest.mark.slow
def test_colab_badges_and_setup_cells_point_at_the_edition(edition):
    notebooks = sorted(edition.glob("notebooks/*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        badge, setup = nb.cells[0].source, nb.cells[1].source
        assert f"github/example-org/optimizers-student/blob/main/notebooks/{path.name}" in badge
        assert f"git+{EDITION_REPO}.git@main" in setup and "course_utils" in setup
    for path, text in _texts(edition):
        assert INSTRUCTOR_REPO not in text, f"{path} still points at the instructor's repository"
    readme = (edition / "README.md").read_text()
    for path in notebooks + sorted(edition.glob("lab/*.ipynb")):
        rel = path.relative_to(edition).as_posix()
        assert f"colab.research.google.com/github/example-org/optimizers-student/blob/main/{rel}" in readme
    for path in sorted(edition.glob("lab/*.ipynb")):  # the lab too: badge, submission note, setup cell
        nb = nbformat.read(path, as_version=4)
        rel = path.relative_to(edition).as_posix()
        assert nbtools.problems(nb, nbtools.Setting(EDITION_REPO), rel) == []
        assert f"github/example-org/optimizers-student/blob/main/{rel}" in nb.cells[0].source
        assert "Download .ipynb" in nb.cells[0].source and f"`{path.name}`" in nb.cells[0].source
        (setup,) = [c for c in nb.cells if nbtools.SETUP_TAG in c.metadata.get("tags", [])]
        assert setup.metadata["nbgrader"]["locked"] and f"git+{EDITION_REPO}.git@main" in setup.source
    assert 'prints "Test N passed"' in readme and "silently" not in readme


def _wheel_contents(project, tmp_path):
    out = tmp_path / project.name
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(project),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel).namelist()


@pytest.mark.slow
def test_pip_install_ships_course_utils_only(edition, tmp_path):
    for project in (ROOT, edition):
        names = _wheel_contents(project, tmp_path)
        top = {name.split("/")[0] for name in names}
        assert top == {"course_utils", "optimizers_course-0.1.0.dist-info"}, (project, top)
        assert "course_utils/data/__main__.py" in names


def _execute(nb, cwd, edition, allow_errors=False):
    """Run ``nb`` in a kernel that sees only the edition's course_utils, in fast mode."""
    env = course.env(COURSE_FAST="1", PYTHONPATH=str(edition), MPLBACKEND="Agg")  # the kernel's, not ours
    client = NotebookClient(nb, timeout=course.scaled(600), kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd)}})  # fmt: skip
    client.execute(env=env)
    return nb


def _from_edition_check(edition):
    return nbformat.v4.new_code_cell(
        "import pathlib, course_utils\n"
        "assert pathlib.Path(course_utils.__file__).resolve()"
        f".is_relative_to(pathlib.Path({str(edition)!r})), course_utils.__file__"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_every_lecture_runs_from_the_edition_alone(edition, name):
    path = edition / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(2, _from_edition_check(edition))  # after the badge and setup cells
    _execute(nb, path.parent, edition)


def _graded_test_cells(nb):
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["accumulation.ipynb", "adam.ipynb"])
def test_released_visible_tests_fail_on_the_stub_and_pass_with_the_solution(edition, name):
    released = nbformat.read(edition / "lab" / name, as_version=4)
    stub_run = _execute(nbformat.from_dict(released), edition / "lab", edition, allow_errors=True)
    graded = _graded_test_cells(stub_run)
    assert graded, "the released notebook has visible test cells"
    for i in graded:
        errors = [o for o in stub_run.cells[i].outputs if o.output_type == "error"]
        assert errors, f"visible test cell {i} passed on the untouched stub"

    solutions = {
        cell.metadata["nbgrader"]["grade_id"]: _solution_body(cell.source)
        for n, cell in _solution_cells()
        if n == name
    }
    solved = nbformat.from_dict(released)
    for cell in solved.cells:
        if grade_id(cell) in solutions:
            cell.source = solutions.pop(grade_id(cell))
    assert not solutions, f"solution cells not found in the release: {solutions}"
    try:
        _execute(solved, edition / "lab", edition)
    except CellExecutionError as exc:
        pytest.fail(f"the reference solution fails a visible test in {name}:\n{exc}")


@pytest.mark.slow
def test_solutions_flag_adds_the_worked_solutions(tmp_path):
    out = publish.build(tmp_path / "with-solutions", EDITION_REPO, solutions=True, make_zip=False)
    solved = sorted(p.name for p in (out / "solutions").glob("*.ipynb"))
    assert solved == ["accumulation.ipynb", "adam.ipynb"]
    text = (out / "solutions" / "adam.ipynb").read_text()
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    adam_body = next(_solution_body(c.source) for n, c in _solution_cells() if n == "adam.ipynb")
    assert re.sub(r"\s+", " ", adam_body.split("\n")[0]) in re.sub(
        r"\s+",
        " ",
        "\n".join(c.source for c in nbformat.read(out / "solutions" / "adam.ipynb", as_version=4).cells),
    )
    assert not list((out / "lab").glob("*solution*"))


def test_rebuilding_never_deletes_a_folder_that_is_not_an_edition(tmp_path):
    precious = tmp_path / "my-work"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(publish.PublishError, match="not a student edition"):
        publish.build(precious, EDITION_REPO)
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_lab_sources_carry_the_badge_and_setup_cell_with_nbgrader_metadata_kept():
    setting = nbtools.load_setting()
    for path in sorted(SOURCE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert nbtools.problems(nb, setting, nbtools.path_in_repo(path)) == [], path.name
        (setup,) = [c for c in nb.cells if nbtools.SETUP_TAG in c.metadata.get("tags", [])]
        assert setup.metadata["nbgrader"] == {
            "grade": False, "grade_id": f"{path.stem}_setup", "locked": True, "schema_version": 3, "solution": False,
        }  # fmt: skip
        assert "Save a copy in Drive" in nb.cells[0].source


def _git_repo(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "empty"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True)
    return folder


def test_a_local_git_repository_is_accepted_as_a_path_or_file_url(tmp_path):
    repo = _git_repo(tmp_path / "student repo")
    for given in (str(repo), repo.as_uri(), f"file://{repo}"):
        setting = nbtools.Setting(given)
        assert setting.is_local and setting.repository == repo.as_uri()
        assert setting.requirement == f"git+{repo.as_uri()}@main"
        assert "Local edition" in nbtools.badge_source(setting, "notebooks/02_sgd.ipynb")
    with pytest.raises(ValueError, match="not a git repository"):
        nbtools.Setting(str(tmp_path))
    with pytest.raises(ValueError, match="Invalid repository URL"):
        nbtools.Setting("gitlab.com/x/y")


def test_requirements_are_read_without_tomllib(monkeypatch):
    expected = publish._requirements()
    monkeypatch.setattr(publish, "tomllib", None)
    assert publish._requirements() == expected and "ipywidgets>=7.7,<9" in expected[0]


def test_one_leak_check_finds_solution_lines_markers_and_instructor_files(tmp_path):
    course = ROOT / "assignments"
    adam = nbformat.read(SOURCE / "adam.ipynb", as_version=4)
    regions = leaks.secret_snippets(adam.cells)
    assert regions and leaks.secret_lines(adam.cells)
    clean = tmp_path / "clean"
    (clean / "notebooks").mkdir(parents=True)
    (clean / "notebooks" / "a.md").write_text("nothing secret\n")
    assert leaks.edition_leaks(clean, course) == []
    leaky = tmp_path / "leaky"
    shutil.copytree(clean, leaky)
    (leaky / "notebooks" / "copied.py").write_text(regions[0] + "\n")
    (leaky / "gradebook.db").write_text("")
    (leaky / "notes.md").write_text("### BEGIN HIDDEN TESTS\n")
    found = "\n".join(leaks.edition_leaks(leaky, course))
    assert "copied.py: contains solution code" in found
    assert "gradebook.db: instructor-only" in found and "BEGIN HIDDEN TESTS" in found
    (leaky / "solutions").mkdir()
    (leaky / "solutions" / "adam.py").write_text(regions[0] + "\n")
    assert "solutions/adam.py" not in "\n".join(leaks.edition_leaks(leaky, course, allow_solutions=True))
    assert "solutions/adam.py" in "\n".join(leaks.edition_leaks(leaky, course))
    # The release check: a release carrying one secret line of the source is refused.
    scratch = tmp_path / "course"
    shutil.copytree(course / "source", scratch / "source")
    release = scratch / "release" / "optimizers_lab"
    release.mkdir(parents=True)
    assert "accumulation.ipynb is missing" in "\n".join(leaks.release_problems(scratch))
    for name in ("accumulation", "adam"):
        nb = nbformat.read(SOURCE / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("solution"):
                cell.source = "raise NotImplementedError()"
            cell.source = re.sub(
                r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", cell.source, flags=re.S
            )
        nbformat.write(nb, release / f"{name}.ipynb")
    assert leaks.release_problems(scratch) == []
    nb = nbformat.read(release / "adam.ipynb", as_version=4)
    nb.cells[-1].source += "\n" + leaks.secret_lines(adam.cells)[0]
    nbformat.write(nb, release / "adam.ipynb")
    assert "adam.ipynb contains a solution or hidden-test line" in "\n".join(leaks.release_problems(scratch))


@pytest.mark.slow
def test_edition_keeps_the_lecture_exercises_and_the_lab_has_none(edition):
    """Every exercise cell (statement, self-check, folded solution, hidden check) reaches students unchanged;
    lecture solutions never enter the graded lab."""

    def exercises(nb):
        return [
            nb.cells[i : i + 4]
            for i, c in enumerate(nb.cells)
            if c.cell_type == "markdown" and "**Exercise " in c.source
        ]

    kept = 0
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        mine = exercises(nbformat.read(source, as_version=4))
        theirs = exercises(nbformat.read(edition / "notebooks" / source.name, as_version=4))
        assert [[c.source for c in ex] for ex in theirs] == [[c.source for c in ex] for ex in mine], (
            source.name
        )
        kept += len(theirs)
    assert kept >= 16, f"only {kept} exercises in the edition"
    for lab in sorted((edition / "lab").glob("*.ipynb")):
        text = "\n".join(c.source for c in nbformat.read(lab, as_version=4).cells)
        assert "<details><summary><b>Solution" not in text and "**Exercise " not in text, lab.name
