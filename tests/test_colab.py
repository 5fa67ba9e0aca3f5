"""Google Colab, simulated: the student edition installs into a Colab-like runtime and changes nothing in it.

The runtime is a separate virtual environment with Colab's widget stack from PyPI (ipywidgets 7.7.1,
IPython 7.34, ipykernel 6.17, numpy 2.0.2, matplotlib, tqdm and Pillow at Colab's versions) and, instead of
Colab's older torch (GBs to download), the project's own torch and torchvision, seen through a ``.pth`` file
that exposes only them and their dependencies. Its kernel imports ipywidgets before the first cell, as
Colab's does. It is cached under ``build/colab-env/<hash of its requirements>/``, so only the first run
downloads and installs (about a minute); later runs reuse it.

The student edition is built with a *local* git repository as its URL and committed there; each notebook's
setup cell then installs the course from ``git+file://...``, as it would from GitHub on Colab.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fixtures.timing import scaled
from tools import notebooks as nbtools
from tools import student_edition

ROOT = Path(__file__).resolve().parents[1]
# Colab's runtime as of late 2025 (torch 2.8 / torchvision 0.23 there; the project's own here).
COLAB_PACKAGES = [
    "ipywidgets==7.7.1",
    "ipython==7.34.0",
    "ipykernel==6.17.1",
    "numpy==2.0.2",
    "matplotlib==3.10.0",
    "tqdm==4.67.1",
    "pillow==11.1.0",
    "setuptools>=77.0.3",  # what the linked torch needs: without it the setup cell would upgrade it and restart
]
LINKED = ["torch", "torchvision"]  # taken from the project's .venv, with their dependencies
PREINSTALLED = ["torch", "torchvision", "numpy", "ipywidgets", "matplotlib", "tqdm", "ipykernel", "ipython"]
KERNEL = "colab-sim"
RECIPE = 3  # bump when the way the environment is built changes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(scaled(1500))]


# ----------------------------------------------------------------------------- the runtime


def _closure(names: list[str], skip: set[str]) -> dict[str, metadata.Distribution]:
    """``names`` and everything they require, extras included (markers evaluated here), minus ``skip``."""
    found, extras, todo = {}, {}, [(name, frozenset()) for name in names]
    while todo:
        raw, wanted = todo.pop()
        name = canonicalize_name(raw)
        if name in skip or (name in found and wanted <= extras[name]):
            continue
        found[name] = metadata.distribution(name)
        extras[name] = extras.get(name, frozenset()) | wanted
        for line in found[name].requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras[name]}):
                todo.append((req.name, frozenset(req.extras)))
    return found


def _link_project_packages(target: Path) -> None:
    """Symlink the top-level files of torch, torchvision and their dependencies into ``target``."""
    target.mkdir(parents=True)
    skip = {canonicalize_name(Requirement(r).name) for r in COLAB_PACKAGES}
    for dist in _closure(LINKED, skip).values():
        tops = {Path(f).parts[0] for f in dist.files or [] if Path(f).parts[0] not in ("..", "__pycache__")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)


def _versions() -> str:
    return ",".join(f"{name}=={metadata.version(name)}" for name in LINKED)


@pytest.fixture(scope="session")
def colab_env() -> Path:
    """The cached Colab-like environment (built on first use)."""
    recipe = json.dumps([RECIPE, sys.version, COLAB_PACKAGES, _versions(), KERNEL])
    env = ROOT / "build" / "colab-env" / hashlib.sha256(recipe.encode()).hexdigest()[:12]
    if not (env / "ready").exists():
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        python = env / "bin" / "python"
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *COLAB_PACKAGES],
            capture_output=True,
            text=True,
        )
        assert pip.returncode == 0, f"could not install Colab's packages from PyPI:\n{pip.stderr[-3000:]}"
        _link_project_packages(env / "project-packages")
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(site) / "project-packages.pth").write_text(str(env / "project-packages") + "\n")
        # Colab's kernel has imported ipywidgets before the first cell runs.
        startup = env / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-colab.py").write_text("import ipywidgets  # as on Colab\n")
        spec = env / "kernels" / KERNEL
        spec.mkdir(parents=True)
        argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": "Colab (simulated)", "language": "python"})
        )
        (env / "recipe.json").write_text(recipe)
        (env / "ready").write_text("")
    return env


def _kernel_env(env: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    out.update(
        PATH=f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        IPYTHONDIR=str(env / "ipython"),
        COURSE_FAST="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return out


def _pip(env: Path, *args: str) -> str:
    run = subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=_kernel_env(env),
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _freeze(env: Path) -> dict[str, str]:
    """``pip freeze``, by canonical name."""
    lines = [line for line in _pip(env, "freeze", "--all").splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(re.split(r"==| @ ", line)[0]): line for line in lines}


def _run(
    env: Path, nb: nbformat.NotebookNode, cwd: Path, allow_errors: bool = False
) -> nbformat.NotebookNode:
    """Execute ``nb`` in the Colab-like kernel, in ``cwd`` (where no course_utils lies about)."""
    km = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(env / "kernels")])
    )
    client = NotebookClient(
        nb, km=km, timeout=scaled(600), allow_errors=allow_errors, resources={"metadata": {"path": str(cwd)}}
    )
    try:
        client.execute(env=_kernel_env(env))
    finally:  # nbclient shuts down only the kernels it made itself, and this one is ~1 GB
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "error"
    ]


@pytest.fixture(scope="module")
def edition_repo(tmp_path_factory) -> Path:
    """The student edition, committed to a local git repository it names as its own URL."""
    repo = tmp_path_factory.mktemp("colab") / "student-repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=Course", "-c", "user.email=course@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    out = student_edition.build(repo / "edition", str(repo), make_zip=False)
    for item in out.iterdir():  # the edition is the repository's content
        shutil.move(str(item), repo / item.name)
    out.rmdir()
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "student edition"], cwd=repo, check=True)
    return repo


@pytest.fixture
def clean_runtime(colab_env):
    """The Colab-like runtime without the course (as a fresh Colab runtime is)."""
    _pip(colab_env, "uninstall", "--yes", "optimizers-course")
    yield colab_env
    _pip(colab_env, "uninstall", "--yes", "optimizers-course")


# ----------------------------------------------------------------------------- tests


def test_the_runtime_is_colab_like(colab_env, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import sys, IPython, ipykernel, torch\n"
            "assert 'ipywidgets' in sys.modules  # imported before the first cell, as on Colab\n"
            "import ipywidgets\n"
            "print(ipywidgets.__version__, IPython.__version__, ipykernel.__version__, torch.__version__)\n"
            "try:\n    import course_utils\nexcept ImportError:\n    print('no course_utils')"
        )
    ]
    out = _run(colab_env, nb, tmp_path).cells[0].outputs[0]["text"]
    assert out.startswith(f"7.7.1 7.34.0 6.17.1 {metadata.version('torch')}") and "no course_utils" in out


def test_a_bad_repository_fails_in_the_setup_cell_with_a_clear_message(clean_runtime, tmp_path):
    bad = "file:///nonexistent/optimizers-student"
    setting = nbtools.load_setting()
    source = nbtools.setup_source(setting).replace(f"git+{setting.repository}.git", f"git+{bad}")
    assert bad in source
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("print('after setup')")]
    with pytest.raises(CellExecutionError) as err:
        _run(clean_runtime, nb, tmp_path)
    message = str(err.value)
    assert "RuntimeError" in message and f"Could not install the course from git+{bad}" in message
    assert "Check that the repository exists and is public" in message
    assert not nb.cells[1].outputs, "the notebook stops at the setup cell"


def test_playground_and_a_lecture_run_and_no_preinstalled_package_changes(
    clean_runtime, edition_repo, tmp_path
):
    before = _freeze(clean_runtime)
    assert "optimizers-course" not in before
    for name in PREINSTALLED:
        assert canonicalize_name(name) in before, f"{name} is not in the simulated runtime"

    for notebook in ("02_sgd.ipynb", "08_playground.ipynb"):  # the first one's setup cell installs the course
        path = edition_repo / "notebooks" / notebook
        nb = nbformat.read(path, as_version=4)
        assert f"git+{edition_repo.as_uri()}@main" in nb.cells[1].source
        nb.cells.insert(
            2,
            nbformat.v4.new_code_cell(
                "import pathlib, course_utils\n"
                "assert 'site-packages' in course_utils.__file__, course_utils.__file__  # installed, not a copy"
            ),
        )
        work = tmp_path / notebook  # as on Colab: the notebook alone, away from the repository
        work.mkdir()
        try:
            nb = _run(clean_runtime, nb, work)
        except CellExecutionError as exc:
            pytest.fail(f"{notebook} failed on the simulated Colab runtime:\n{str(exc)[-3000:]}")
        assert _errors(nb) == []
        widgets = [
            o
            for cell in nb.cells
            if cell.cell_type == "code"
            for o in cell.outputs
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        if (
            notebook == "08_playground.ipynb"
        ):  # Playground, your-optimizer Playground and Quiz: widget and picture
            pictures = [o for o in widgets if "image/png" in o["data"]]
            assert len(pictures) == 3
            assert all(o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for o in pictures)
        else:  # tqdm's progress bars are ipywidgets 7 widgets here
            assert widgets, "no tqdm progress bar widget in the lecture's output"

    after = _freeze(clean_runtime)
    added = {name: after[name] for name in after.keys() - before.keys()}
    assert list(added) == ["optimizers-course"] and edition_repo.as_uri() in added["optimizers-course"]
    changed = {name: (before[name], after[name]) for name in before if after.get(name) != before[name]}
    assert changed == {}, f"installing the course changed preinstalled packages: {changed}"
