"""The lecture notebooks: they run top to bottom in fast mode, open with the badge and setup cell that
tools/course.toml prescribes, keep no outputs in git, and follow the course's rules (course_utils instead of
copies of it, a from-scratch optimizer proved against torch.optim, no Adam implementation)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from tests.fixtures.timing import scaled
from tools import notebooks as nbtools

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted(ROOT.glob(nbtools.LECTURE_GLOB))
COMMITTED = sorted(
    path
    for folder in ("notebooks", "assignments/source")
    for path in (ROOT / folder).rglob("*.ipynb")
    if ".ipynb_checkpoints" not in path.parts
)
# lecture number -> the torch.optim class its from-scratch optimizer is checked against
OPTIMIZER_LECTURES = {"02": "SGD", "03": "SGD", "04": "Adagrad", "05": "RMSprop", "06": "Adadelta"}


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbtools.NB_VERSION)


def _code(path: Path) -> str:
    return "\n".join(cell.source for cell in _read(path).cells if cell.cell_type == "code")


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_lectures_are_there_in_order() -> None:
    """06b (Adam, derived) sorts after 06 and before 07, so every tool that globs notebooks/0[1-7]* picks it up.
    RMSprop (05) comes before Adadelta (06): Hinton's RMSprop came first and is the simpler half of Adadelta."""
    numbers = [path.name.split("_")[0] for path in LECTURES]
    assert {"01", "02", "03", "04", "05", "06", "06b", "07"} <= set(numbers), numbers
    names = [path.name for path in LECTURES]
    assert names.index("05_rmsprop.ipynb") < names.index("06_adadelta.ipynb") < names.index("06b_adam.ipynb")


# One symbol per quantity, as lecture 1's notation table fixes it: these spellings belong to the old notations.
NOTATION_DRIFT = {
    r"\theta_{t+1}": "updates are written theta_t = theta_{t-1} - ...",
    r"\gamma": "the momentum coefficient is mu",
    r"\Delta x": "Adadelta's update is Delta theta",
    r"\alpha": "a moving average's decay is beta (RMSprop's `alpha`, Adadelta's `rho`)",
    r"\rho": "a moving average's decay is beta (RMSprop's `alpha`, Adadelta's `rho`)",
    r"E[\Delta": "Adadelta's average of squared updates is u_t",
}
NOTATION_CHECKED = [
    *(ROOT / "notebooks" / name for name in ("01_gradient_descent.ipynb", "02_sgd.ipynb", "03_momentum_nesterov.ipynb",
      "04_adagrad.ipynb", "05_rmsprop.ipynb", "06_adadelta.ipynb", "06b_adam.ipynb", "07_comparing_optimizers.ipynb",
      "08_playground.ipynb")),
    *sorted((ROOT / "assignments" / "source").rglob("*.ipynb")),
]  # fmt: skip


@pytest.mark.parametrize("path", NOTATION_CHECKED, ids=_id)
def test_one_notation_across_lectures_and_lab(path: Path) -> None:
    markdown = "\n".join(cell.source for cell in _read(path).cells if cell.cell_type == "markdown")
    drift = {old: why for old, why in NOTATION_DRIFT.items() if old in markdown}
    assert not drift, f"{_id(path)} uses {drift}"


@pytest.mark.parametrize("path", LECTURES, ids=_id)
def test_lecture_states_outcomes_and_references(path: Path) -> None:
    markdown = "\n".join(cell.source for cell in _read(path).cells if cell.cell_type == "markdown")
    assert "**Learning outcomes.**" in markdown, f"{_id(path)} states no learning outcomes"
    assert "## References" in markdown, f"{_id(path)} has no references section"
    assert re.search(r"\]\(https://", markdown), f"{_id(path)}: references should link to their sources"


@pytest.mark.parametrize("path", COMMITTED, ids=_id)
def test_no_outputs_committed(path: Path) -> None:
    nb = _read(path)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{_id(path)}: cells {dirty} have outputs; run `python -m tools.notebooks strip {_id(path)}`"
    )


@pytest.mark.parametrize("path", LECTURES, ids=_id)
def test_badge_and_setup_cell_match_the_setting(path: Path) -> None:
    setting = nbtools.load_setting()
    assert nbtools.problems(_read(path), setting, _id(path)) == []
    badge, setup = _read(path).cells[:2]
    owner_and_name = setting.repository.removeprefix("https://github.com/")
    assert (
        f"colab.research.google.com/github/{owner_and_name}/blob/{setting.branch}/{_id(path)}" in badge.source
    )
    assert f"git+{setting.repository}.git@{setting.branch}" in setup.source
    assert setup.source.startswith("# Setup") and "import course_utils" in setup.source


def test_stamp_with_another_repository_into_another_folder(tmp_path: Path) -> None:
    """A student edition: other URL and branch, notebooks copied elsewhere; stamping twice changes nothing."""
    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / LECTURES[0].name
    shutil.copy(LECTURES[0], copy)
    url, branch = "https://github.com/someone/student-edition", "release"
    argv = ["stamp", "--repo", url, "--branch", branch, "--root", str(tmp_path), str(copy)]
    assert nbtools.main(argv) == 0
    stamped = copy.read_bytes()
    nb = nbformat.reads(stamped.decode(), as_version=nbtools.NB_VERSION)
    student = nbtools.Setting(url, branch)
    assert nbtools.problems(nb, student, f"notebooks/{copy.name}") == []
    assert f"github/someone/student-edition/blob/release/notebooks/{copy.name}" in nb.cells[0].source
    assert "git+https://github.com/someone/student-edition.git@release" in nb.cells[1].source
    assert [c.source for c in nb.cells[2:]] == [c.source for c in _read(LECTURES[0]).cells[2:]], (
        "content untouched"
    )
    assert nbtools.main(argv) == 0
    assert copy.read_bytes() == stamped, "stamping is idempotent"
    # The course's own setting no longer matches, and `check` says so.
    assert nbtools.main(["check", "--root", str(tmp_path), str(copy)]) == 1


def test_bad_repository_url_is_rejected_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert nbtools.main(["stamp", "--repo", "gitlab.com/x/y", str(LECTURES[0])]) == 2
    assert "https://github.com/OWNER/NAME" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Invalid repository URL"):
        nbtools.Setting("https://example.org/a/b")


def test_check_and_strip_handle_outputs(tmp_path: Path) -> None:
    (tmp_path / "notebooks").mkdir()
    path = tmp_path / "notebooks" / LECTURES[1].name
    nb = _read(LECTURES[1])
    code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and i > 1)
    nb.cells[code].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nb.cells[code].execution_count = 3
    nbformat.write(nb, path)
    setting = nbtools.load_setting()
    assert any(
        "committed outputs" in p for p in nbtools.problems(_read(path), setting, f"notebooks/{path.name}")
    )
    assert nbtools.main(["strip", str(path)]) == 0
    assert nbtools.problems(_read(path), setting, f"notebooks/{path.name}") == []


@pytest.mark.parametrize("path", LECTURES, ids=_id)
def test_lecture_uses_course_utils_instead_of_copies(path: Path) -> None:
    code = _code(path)
    copies = re.findall(
        r"^\s*(def (?:train|train_epoch|evaluate|plot_loss|plot_losses|moving_average|get_dataloaders)\(|class MLP\b)",
        code,
        flags=re.M,
    )
    assert not copies, f"{_id(path)} redefines {copies}; import them from course_utils"
    assert "datasets.MNIST" not in code and "transforms.Compose" not in code
    assert "from course_utils" in code and "set_seed(SEED)" in code


ADAM_LECTURE = "06b"


@pytest.mark.parametrize("path", LECTURES, ids=_id)
def test_no_adam_implementation_in_lectures(path: Path) -> None:
    """Adam is the graded lab's exercise: lectures may use torch.optim.Adam but never implement it."""
    code = _code(path)
    assert not re.search(r"class\s+\w*adam\w*", code, flags=re.I), f"{_id(path)} implements Adam"
    if path.name.startswith(ADAM_LECTURE + "_"):
        # The Adam lecture derives the bias correction and computes 1 - beta^t, but it never updates a parameter or
        # an optimizer state itself: every step is torch.optim.Adam's.
        for pattern in (
            r"\.(add_|sub_|mul_|addcdiv_|addcmul_|lerp_|copy_)\(",
            r"torch\.optim\._functional|_foreach_|fused",
            r"class\s+\w+\(\s*(torch\.optim\.)?Optimizer\b",
            r"exp_avg\w*\"?\]\s*=",
        ):
            assert not re.search(pattern, code), f"{_id(path)} updates state itself ({pattern})"
        assert "torch.optim.Adam(" in code and 'state["exp_avg"]' in code
    else:
        assert not re.search(r"1\s*-\s*(self\.)?beta_?[12]?\s*\*\*", code), (
            f"{_id(path)} contains bias correction"
        )


@pytest.mark.parametrize("number", sorted(OPTIMIZER_LECTURES))
def test_optimizer_lectures_prove_their_class_against_torch(number: str) -> None:
    (path,) = [p for p in LECTURES if p.name.startswith(number + "_")]
    code = _code(path)
    torch_cls = OPTIMIZER_LECTURES[number]
    assert re.search(rf"check_against_torch\(\w+, torch\.optim\.{torch_cls}\b", code), (
        f"{_id(path)}: no parity check"
    )
    for method in ("def __init__(", "def zero_grad(", "def step(", "@torch.no_grad()"):
        assert method in code, f"{_id(path)}: the optimizer class lacks {method}"
    assert "torch.testing" in code or "assert" in code


def test_execute_writes_html_with_plots(tmp_path: Path) -> None:
    """`python -m tools.notebooks execute --html` runs a notebook in its folder and embeds the figures."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os\nfrom course_utils import config\n"
            "assert config.fast_mode() == (os.environ.get('COURSE_FAST') == '1')\n"
            "print('fast' if config.fast_mode() else 'full')"
        ),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"),
    ]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    result = nbtools.execute(path, fast=True, timeout=120, html_dir=tmp_path / "html")
    assert result.error is None, result.error
    html = (tmp_path / "html" / "tiny.html").read_text()
    assert "data:image/png;base64" in html and "fast" in html
    assert nbformat.read(path, as_version=4).cells[0].outputs == [], (
        "execution does not modify the source file"
    )

    nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('boom')"))
    nbformat.write(nb, path)
    result = nbtools.execute(path, fast=False, timeout=120, html_dir=tmp_path / "html")
    assert result.error is not None and "boom" in result.error
    assert "full" in (tmp_path / "html" / "tiny.html").read_text(), "HTML is written even when a cell fails"


def test_execute_runs_notebooks_side_by_side_sharing_the_cores(tmp_path: Path, capsys) -> None:
    """`execute --jobs 2` runs two kernels at once, each with half the cores' threads, longest first next time."""

    def notebook(name: str, source: str) -> Path:
        nb = nbformat.v4.new_notebook(
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
        )
        nb.cells = [nbformat.v4.new_code_cell(source)]
        path = tmp_path / f"{name}.ipynb"
        nbformat.write(nb, path)
        return path

    report = tmp_path / "threads"
    threads = "import torch\nopen({!r}, 'a').write(f'{{torch.get_num_threads()}}\\n')\n"
    short = notebook("short", threads.format(str(report)))
    long = notebook("long", threads.format(str(report)) + "import time\ntime.sleep(3)")
    broken = notebook("broken", "raise RuntimeError('boom')")
    dies = notebook("dies", "import os\nos._exit(1)")  # the kernel dies: that notebook fails, the run goes on
    html = tmp_path / "html"

    notebooks = [str(path) for path in (short, long, broken, dies)]
    assert nbtools.main(["execute", "--jobs", "2", "--html", str(html), *notebooks]) == 1
    out = capsys.readouterr()
    assert "4 notebooks, 2 at a time" in out.out and "boom" in out.err and "DeadKernelError" in out.err
    statuses = re.findall(r"^\[\d/4\] (\w+) ", out.out, flags=re.M)
    assert sorted(statuses) == ["FAILED", "FAILED", "ok", "ok"], out.out
    cores = os.cpu_count()
    assert report.read_text().split() == [str(max(1, cores // 2))] * 2, (
        "each kernel gets its share of the cores"
    )
    assert {p.name for p in html.iterdir()} >= {"short.html", "long.html", "broken.html"}
    seconds = json.loads((html / ".seconds-fast.json").read_text())
    assert seconds["long.ipynb"] > seconds["short.ipynb"] + 2, seconds

    # the next run starts the notebook that took longest last time first
    order = [path.name for path in nbtools.longest_first([short, broken, long], html / ".seconds-fast.json")]
    assert order[0] == "long.ipynb", order
    with pytest.raises(SystemExit):
        nbtools.main(["execute", "--jobs", "0", str(short)])


@pytest.mark.slow
@pytest.mark.timeout(scaled(900))
@pytest.mark.parametrize("path", LECTURES, ids=_id)
def test_lecture_runs_in_fast_mode(path: Path) -> None:
    """Top to bottom on CPU in fast mode (COURSE_FAST=1), as CI does; every asserted claim must hold."""
    result = nbtools.execute(path, fast=True, timeout=scaled(600))
    assert result.error is None, f"{_id(path)} failed after {result.seconds:.0f} s:\n{result.error}"
