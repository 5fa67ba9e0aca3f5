"""Notebook tooling for the lectures: Colab badge + setup cell stamping, checks, output stripping, execution.

The repository URL lives in one place, ``tools/course.toml``. Every lecture and both lab notebooks open with
two cells generated from it, recognised by their cell tags:

* ``colab-badge``: a Markdown cell with an "Open in Colab" badge pointing at the notebook on GitHub (the lab's
  also says how to save, download and submit from Colab);
* ``course-setup``: a code cell that installs the course package when ``course_utils`` is not importable
  (on Colab) and does nothing otherwise. It fails in itself, naming the repository, when the install fails;
  it changes none of the runtime's packages (``pyproject.toml`` holds ranges Colab satisfies), and asks for a
  restart only if pip did replace a package the runtime had already imported.

The lab notebooks' setup cells are locked nbgrader cells: stamping replaces their source and keeps their metadata.
In the student edition the lab lives in ``lab/``, so that is the path their badges point at.
The repository may also be a local git repository (a path or ``file://`` URL), to try an edition without GitHub;
its notebooks then carry no Colab link.

Usage (from the repository root)::

    python -m tools.notebooks stamp                      # (re)write badge + setup cell in notebooks/ and the lab
    python -m tools.notebooks stamp --repo https://github.com/ORG/student-edition --root build/student \\
        build/student/notebooks/*.ipynb                  # another edition: other URL, other folder
    python -m tools.notebooks check                      # badge/setup cell match the setting, no outputs
    python -m tools.notebooks strip notebooks/*.ipynb    # remove outputs before committing
    python -m tools.notebooks execute --full --html build/lectures   # run all lectures at full size -> HTML

Notebooks are executed in memory; the source files are never modified by ``execute``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: no tomllib; course.toml only holds `key = "value"` lines
    tomllib = None

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = Path(__file__).resolve().parent / "course.toml"
LECTURE_GLOB = "notebooks/0[1-7]*.ipynb"
LAB_DIR = "assignments/source/optimizers_lab"  # the instructor's lab notebooks; students get them in lab/
STAMP_GLOBS = ("notebooks/*.ipynb", f"{LAB_DIR}/*.ipynb")  # what stamp and check cover by default
BADGE_TAG = "colab-badge"
SETUP_TAG = "course-setup"
NB_VERSION = 4

_GITHUB_URL = re.compile(
    r"^https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)(?:\.git)?/?$"
)


def local_repository(repository: str) -> str | None:
    """``file://`` URL of a local git repository given as a path or ``file://`` URL, else None."""
    path = url2pathname(urlparse(repository).path) if repository.startswith("file://") else repository
    if repository.startswith("file://") or (
        path and not re.match(r"^[a-z]+://", path) and Path(path).is_dir()
    ):
        folder = Path(path).expanduser().resolve()
        if (folder / ".git").exists() or (folder / "HEAD").is_file():  # a work tree or a bare repository
            return folder.as_uri()
        raise ValueError(
            f"Invalid repository: {folder} is not a git repository (run `git init` there first)."
        )
    return None


@dataclass(frozen=True)
class Setting:
    """Where the course lives: a GitHub repository URL (or a local git repository), the branch, the distribution.

    A local repository (a path or ``file://`` URL, e.g. for trying a student edition without GitHub) is
    stored as its absolute ``file://`` URL; notebooks from it get no Colab link.
    """

    repository: str
    branch: str = "main"
    distribution: str = "optimizers-course"

    def __post_init__(self) -> None:
        local = None if _GITHUB_URL.match(self.repository) else local_repository(self.repository)
        if local:
            object.__setattr__(self, "repository", local)
        elif not _GITHUB_URL.match(self.repository):
            raise ValueError(
                f"Invalid repository URL: {self.repository!r}. Colab opens notebooks from GitHub, so use the form "
                "https://github.com/OWNER/NAME (set it in tools/course.toml or pass --repo), or a local git "
                "repository (a path or file:// URL) to try an edition without GitHub."
            )
        if not self.branch or any(c.isspace() for c in self.branch):
            raise ValueError(f"Invalid branch name: {self.branch!r}. Pass e.g. --branch main.")

    @property
    def is_local(self) -> bool:
        """True for a local git repository (``file://``)."""
        return self.repository.startswith("file://")

    @property
    def owner_and_name(self) -> str:
        """``OWNER/NAME`` part of a GitHub URL."""
        match = _GITHUB_URL.match(self.repository)
        if match is None:
            raise ValueError(f"{self.repository} is not on GitHub; it has no OWNER/NAME")
        return f"{match['owner']}/{match['name']}"

    @property
    def requirement(self) -> str:
        """What the setup cell passes to pip: ``git+URL@BRANCH``.

        A plain URL, not ``NAME @ git+URL``: the pip Colab ships (23.x) rejects ``NAME @ git+file:///...``.
        """
        url = (
            self.repository
            if self.is_local
            else self.repository.removesuffix("/").removesuffix(".git") + ".git"
        )
        return f"git+{url}@{self.branch}"

    def colab_url(self, path_in_repo: str) -> str | None:
        """Colab's link to the notebook at ``path_in_repo`` (None for a local repository)."""
        if self.is_local:
            return None
        return f"https://colab.research.google.com/github/{self.owner_and_name}/blob/{self.branch}/{path_in_repo}"


def load_setting(path: Path = SETTINGS_FILE, repo: str | None = None, branch: str | None = None) -> Setting:
    """Read ``tools/course.toml``; ``repo``/``branch`` override the file's values (e.g. for a student edition)."""
    if tomllib is not None:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    else:
        pairs = re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', Path(path).read_text(), flags=re.M)
        data = dict(pairs)
    return Setting(
        repository=repo or data["repository"],
        branch=branch or data.get("branch", "main"),
        distribution=data.get("distribution", "optimizers-course"),
    )


LAB_SUBMISSION = """

**Working in Colab?** First *File > Save a copy in Drive*, so that your work is kept. Run the cells in order: the
setup cell below installs `course_utils` (it changes none of Colab's own packages). To hand in, *File > Download >
Download .ipynb*, name the file `{name}` (not "Copy of {name}") and upload it as your instructor asks. On
JupyterHub, use the *Assignments* tab's *Submit* instead."""


def is_lab(path_in_repo: str) -> bool:
    """True for a lab notebook (``lab/NAME.ipynb`` in an edition)."""
    return path_in_repo.startswith("lab/")


def badge_source(setting: Setting, path_in_repo: str) -> str:
    """Markdown of the "Open in Colab" badge for the notebook at ``path_in_repo`` (POSIX path from the repo root).

    Lab notebooks (``lab/...``) also say how to keep, download and submit the work from Colab.
    """
    url = setting.colab_url(path_in_repo)
    if url is None:
        badge = (
            f"*Local edition ({setting.repository}): open this notebook in Jupyter; Colab links need GitHub.*"
        )
    else:
        image = "https://colab.research.google.com/assets/colab-badge.svg"
        badge = f'<a href="{url}" target="_parent"><img src="{image}" alt="Open In Colab"/></a>'
    if is_lab(path_in_repo):
        badge += LAB_SUBMISSION.format(name=path_in_repo.rsplit("/", 1)[-1])
    return badge


def setup_source(setting: Setting) -> str:
    """Source of the setup cell: install the course package only when ``course_utils`` cannot be imported.

    It fails in itself: when pip fails, or ``course_utils`` still cannot be imported, it raises with the
    repository's URL and what to check. pip runs without ``--quiet``'s blind spot: its "Successfully installed"
    line says what changed, and a restart is asked for only if that touched a module already imported.
    """
    return f"""# Setup: on Colab (or wherever the course package is missing) install it; elsewhere this does nothing.
try:
    import course_utils
except ImportError:
    import importlib
    import importlib.metadata
    import re
    import subprocess
    import sys

    SOURCE = "{setting.requirement}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", SOURCE], capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(
            f"Could not install the course from {{SOURCE}}. Check that the repository exists and is public, that "
            f"its branch is pushed, and that this runtime is online. pip said:\\n{{(pip.stdout + pip.stderr)[-2000:]}}"
        ) from None
    importlib.invalidate_caches()
    try:
        import course_utils
    except ImportError as err:
        raise RuntimeError(
            f"{{SOURCE}} installed, but course_utils cannot be imported ({{err}}). Check that the repository "
            "holds the course_utils package; then restart the runtime and run this cell again."
        ) from None
    # Only a package that was already imported and has now been replaced needs a restart.
    done = re.findall(r"Successfully installed (.*)", pip.stdout)
    changed = {{re.sub(r"[-_.]+", "-", n).lower() for n in re.findall(r"(\\S+)-\\d\\S*", " ".join(done))}}
    changed.discard("{setting.distribution}")  # the course itself was never imported before
    stale = sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if module in sys.modules and changed & {{re.sub(r"[-_.]+", "-", d).lower() for d in dists}}
    )
    if stale:
        raise RuntimeError(
            f"pip replaced {{stale}}, already imported: restart the runtime and run all cells again"
        ) from None"""


def path_in_repo(notebook: Path, root: Path = REPO_ROOT) -> str:
    """POSIX path of ``notebook`` relative to the repository root ``root`` (used in the badge link).

    The instructor's lab notebooks (``assignments/source/optimizers_lab/``) are students' ``lab/``.
    """
    try:
        rel = notebook.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"{notebook} is not inside the repository root {root}; pass --root DIR") from None
    return f"lab/{notebook.name}" if rel.startswith(LAB_DIR + "/") else rel


def _tagged(nb: nbformat.NotebookNode, tag: str) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def stamp(nb: nbformat.NotebookNode, setting: Setting, nb_path_in_repo: str) -> bool:
    """Write the badge cell (first) and the setup cell; returns True if ``nb`` changed.

    An existing setup cell is rewritten where it stands, keeping its id and metadata (a lab's nbgrader
    metadata included); without one, it is inserted second. Stamping twice changes nothing.
    """
    before = nbformat.writes(nb)
    badges, setups = _tagged(nb, BADGE_TAG), _tagged(nb, SETUP_TAG)
    if setups:
        setup = nb.cells[setups[0]]
        setup.source = setup_source(setting)
    else:
        setup = nbformat.v4.new_code_cell(setup_source(setting), metadata={"tags": [SETUP_TAG]})
        setup["id"] = SETUP_TAG
    if badges:
        badge = nb.cells[badges[0]]
        badge.source = badge_source(setting, nb_path_in_repo)
    else:
        badge = nbformat.v4.new_markdown_cell(
            badge_source(setting, nb_path_in_repo), metadata={"tags": [BADGE_TAG]}
        )
        badge["id"] = BADGE_TAG
    rest = [cell for i, cell in enumerate(nb.cells) if i not in set(badges + setups)]
    if setups:
        rest.insert(setups[0] - sum(i < setups[0] for i in badges), setup)  # where it stood
        nb.cells = [badge] + rest
    else:
        nb.cells = [badge, setup] + rest
    return nbformat.writes(nb) != before


def strip_outputs(nb: nbformat.NotebookNode) -> bool:
    """Remove outputs and execution counts from every code cell. Returns True if ``nb`` changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):  # transient metadata Jupyter adds while running
            if key in cell.get("metadata", {}):
                del cell.metadata[key]
                changed = True
    return changed


def problems(nb: nbformat.NotebookNode, setting: Setting, nb_path_in_repo: str) -> list[str]:
    """Everything wrong with a lecture notebook's badge, setup cell and committed outputs (empty list = fine)."""
    found = []
    badges, setups = _tagged(nb, BADGE_TAG), _tagged(nb, SETUP_TAG)
    if badges != [0]:
        found.append(f"the first cell must be the only cell tagged {BADGE_TAG!r} (found at {badges})")
    elif nb.cells[0].source != badge_source(setting, nb_path_in_repo):
        found.append(f"badge does not point at {setting.repository} ({setting.branch}) /{nb_path_in_repo}")
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)
    if len(setups) != 1 or setups[0] != first_code:
        found.append(f"the first code cell must be the only cell tagged {SETUP_TAG!r} (found at {setups})")
    elif nb.cells[setups[0]].source != setup_source(setting):
        found.append(f"setup cell does not install from {setting.repository}@{setting.branch}")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            found.append(f"cell {i} has committed outputs; run `python -m tools.notebooks strip`")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        found.append("kernelspec must be python3")
    return found


@dataclass
class Executed:
    """Result of executing one notebook."""

    path: Path
    seconds: float
    error: str | None
    html: Path | None
    nb: nbformat.NotebookNode | None = None  # the executed notebook, outputs included


def kernel_env(fast: bool, threads: int | None = None) -> dict[str, str]:
    """Environment for the kernel: fast/full mode switch and the repository on PYTHONPATH.

    ``threads`` caps the kernel's torch (OpenMP/MKL) threads, for kernels that share the machine's cores.
    """
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if fast:
        env["COURSE_FAST"] = "1"
    else:
        env.pop("COURSE_FAST", None)
        env.pop("NBGRADER_EXECUTION", None)  # nbgrader's variable also switches fast mode on
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silences a harmless debugger warning per kernel
    return env


def execute(path: Path, fast: bool = True, timeout: int = 900, html_dir: Path | None = None,
            before_html: Callable[[nbformat.NotebookNode], object] | None = None,
            threads: int | None = None) -> Executed:  # fmt: skip
    """Execute a notebook top to bottom in its own folder (in memory; the file is not modified).

    ``timeout`` is per cell, in seconds. With ``html_dir`` the executed notebook (plots included) is written
    there as ``NAME.html``, also when a cell failed, so the error can be read in context; ``before_html``
    may change the executed notebook first. ``threads`` caps the kernel's torch threads (see :func:`kernel_env`).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=NB_VERSION)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    start, error = time.perf_counter(), None
    try:
        client.execute(env=kernel_env(fast, threads))
    except CellExecutionError as exc:
        error = str(exc)
    seconds = time.perf_counter() - start
    html = None
    if html_dir is not None:
        from nbconvert import HTMLExporter

        html_dir.mkdir(parents=True, exist_ok=True)
        if before_html is not None:
            before_html(nb)
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
        html = html_dir / f"{path.stem}.html"
        html.write_text(body, encoding="utf-8")
    return Executed(path, seconds, error, html, nb)


def _execute_quietly(path: Path, **kwargs) -> Executed:
    """:func:`execute` as :func:`execute_many` runs it: the result without the executed notebook (HTML is written).

    A kernel that dies (killed for memory, say) or fails to start is this notebook's failure, not the whole run's.
    """
    start = time.perf_counter()
    try:
        result = execute(path, **kwargs)
    except Exception as exc:  # reported as the notebook's error; the other notebooks go on
        return Executed(path, time.perf_counter() - start, f"{type(exc).__name__}: {exc}", None)
    return Executed(result.path, result.seconds, result.error, result.html)


def execute_many(paths: list[Path], jobs: int = 1, **kwargs) -> Iterator[Executed]:
    """Execute notebooks ``jobs`` at a time, yielding each result as it finishes (``kwargs`` as :func:`execute`).

    With more than one job the machine's cores are shared out: each kernel gets ``cores // jobs`` torch threads
    (at least one), so two kernels do not fight over the same cores. One kernel's start, plots and Python overlap
    the other's arithmetic, and the course's small MLP loses little with one thread (a step of 128 images: 2.9 ms on
    one thread, 2.2 ms on two, on a quiet 2-core machine). The longest notebooks (by ``timings``, a JSON file of
    the last run's seconds, updated here) start first, so the last one to finish is a short one.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    timings_file = kwargs.pop("timings", None)

    def results() -> Iterator[Executed]:
        if jobs <= 1:
            yield from (_execute_quietly(path, **kwargs) for path in paths)
            return
        threads = threads_per_job(jobs)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            ordered = longest_first(paths, timings_file)
            futures = [pool.submit(_execute_quietly, path, threads=threads, **kwargs) for path in ordered]
            yield from (future.result() for future in as_completed(futures))

    seconds = {}
    for result in results():
        seconds[result.path.name] = result.seconds
        yield result
    if timings_file is not None:
        record_seconds(timings_file, seconds)


def record_seconds(timings_file: Path, seconds: dict[str, float]) -> None:
    """Add notebooks' seconds (by file name) to ``timings_file``, for :func:`longest_first` next time."""
    timings = {**_timings(timings_file), **{name: round(s, 1) for name, s in seconds.items()}}
    Path(timings_file).parent.mkdir(parents=True, exist_ok=True)
    Path(timings_file).write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")


def _timings(timings_file: Path | None) -> dict[str, float]:
    if timings_file is None or not Path(timings_file).is_file():
        return {}
    try:
        return {name: float(s) for name, s in json.loads(Path(timings_file).read_text()).items()}
    except (ValueError, AttributeError, TypeError):  # a damaged file only loses the ordering
        return {}


def longest_first(paths: list[Path], timings_file: Path | None) -> list[Path]:
    """Longest first by the last run's seconds; notebooks not timed yet keep their order, first."""
    timings = _timings(timings_file)
    return sorted(paths, key=lambda p: -timings.get(p.name, float("inf")))


def threads_per_job(jobs: int) -> int | None:
    """Torch threads for each of ``jobs`` kernels sharing the cores; ``None`` (torch's own choice) for one."""
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None


def default_jobs(n_notebooks: int) -> int:
    """Notebooks to run at once: one per core (a 2-core machine runs two), never more than there are."""
    return max(1, min(n_notebooks, os.cpu_count() or 1))


def _targets(paths: list[str], root: Path, globs: tuple[str, ...] = (LECTURE_GLOB,)) -> list[Path]:
    if not paths:
        return sorted(path for pattern in globs for path in root.glob(pattern))
    out = []
    for p in map(Path, paths):
        out.extend(sorted(p.glob("*.ipynb")) if p.is_dir() else [p])
    missing = [str(p) for p in out if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such notebook: {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tools.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("stamp", "write the Colab badge and setup cell into notebooks"),
        ("check", "verify badge, setup cell, no outputs; exit 1 on problems"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--repo", help="GitHub URL overriding tools/course.toml (e.g. a student edition)")
        p.add_argument("--branch", help="branch overriding tools/course.toml")
        p.add_argument(
            "--root", type=Path, default=REPO_ROOT, help="repository root the badge paths are relative to"
        )
        p.add_argument(
            "notebooks", nargs="*", help=f"notebooks or folders (default: {', '.join(STAMP_GLOBS)})"
        )
    p = sub.add_parser("strip", help="remove outputs and execution counts")
    p.add_argument("notebooks", nargs="*", help=f"notebooks or folders (default: {LECTURE_GLOB})")
    p = sub.add_parser("execute", help="run notebooks top to bottom (in memory), optionally export HTML")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="full size (unset COURSE_FAST)")
    mode.add_argument("--fast", action="store_true", help="fast mode (COURSE_FAST=1, the default)")
    p.add_argument("--html", type=Path, help="folder for NAME.html exports")
    p.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds (default 900)")
    p.add_argument(
        "--jobs", type=int, help="notebooks run at once, sharing the cores (default: one per core)"
    )
    p.add_argument("notebooks", nargs="*", help=f"notebooks or folders (default: {LECTURE_GLOB})")
    args = parser.parse_args(argv)

    root = getattr(args, "root", REPO_ROOT)
    targets = _targets(
        args.notebooks, root, STAMP_GLOBS if args.command in ("stamp", "check") else (LECTURE_GLOB,)
    )
    if args.command in ("stamp", "check"):
        try:
            setting = load_setting(repo=args.repo, branch=args.branch)
            rel = {path: path_in_repo(path, root) for path in targets}
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        bad = 0
        for path in targets:
            nb = nbformat.read(path, as_version=NB_VERSION)
            if args.command == "stamp":
                if stamp(nb, setting, rel[path]):
                    nbformat.write(nb, path)
                    print(f"stamped {path}")
            else:
                for problem in problems(nb, setting, rel[path]):
                    print(f"{path}: {problem}")
                    bad += 1
        return 1 if bad else 0
    if args.command == "strip":
        for path in targets:
            nb = nbformat.read(path, as_version=NB_VERSION)
            if strip_outputs(nb):
                nbformat.write(nb, path)
                print(f"stripped {path}")
        return 0
    # execute
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    jobs = min(args.jobs, len(targets)) if args.jobs else default_jobs(len(targets))
    mode_name = "full size" if args.full else "fast mode"
    timings = (args.html or REPO_ROOT / "build") / f".seconds-{'full' if args.full else 'fast'}.json"
    print(f"running {len(targets)} notebook{'s' * (len(targets) != 1)}, {jobs} at a time", flush=True)
    results, total = [], time.perf_counter()
    for result in execute_many(
        targets, jobs, fast=not args.full, timeout=args.timeout, html_dir=args.html, timings=timings
    ):
        status = "ok" if result.error is None else "FAILED"
        print(
            f"[{len(results) + 1}/{len(targets)}] {status:6} {result.seconds:7.1f} s  {result.path}"
            + (f" -> {result.html}" if result.html else ""),
            flush=True,
        )
        if result.error:
            print(result.error, file=sys.stderr)
        results.append(result)
    print(f"{len(results)} notebooks ({mode_name}) in {time.perf_counter() - total:.1f} s")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
