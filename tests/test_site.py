"""The course website (python -m tools.site, make site): executed lectures as HTML with plots, and an index."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.fixtures.timing import scaled
from tools import notebooks as nbtools
from tools import site

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, cells: list[str], title: str = "# A tiny lecture") -> Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_markdown_cell(title)] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def test_knob_pictures_replace_widgets_and_the_index_links_every_page(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    path = _notebook(
        tmp_path / "01_tiny.ipynb",
        [
            "import matplotlib.pyplot as plt\nfrom course_utils.knobs import Knob, Knobs\n"
            "def draw(lr):\n    fig, ax = plt.subplots()\n    ax.plot([0, 1], [0, lr])\n    return fig\n"
            "Knobs(draw, [Knob('lr', [0.1, 0.2])])",
            "import ipywidgets\nipywidgets.IntSlider()",  # a widget with no picture: dropped
        ],
    )
    pages = site.build([path], tmp_path / "site", fast=True, timeout=scaled(120))
    assert [page.error for page in pages] == [None]
    page = (tmp_path / "site" / "01_tiny.html").read_text()
    assert "data:image/png;base64" in page, "the knob's picture is on the page"
    assert site.WIDGET_VIEW not in page and "embed-amd" not in page, "no widget views or widget JavaScript"
    index = (tmp_path / "site" / "index.html").read_text()
    assert '<a href="01_tiny.html">A tiny lecture</a>' in index and "failed" not in index.split("<ol>")[1]
    assert nbformat.read(path, as_version=4).cells[1].outputs == [], "the source notebook is not modified"


def test_a_failing_lecture_is_rendered_and_fails_the_build(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "02_broken.ipynb", ["raise RuntimeError('boom')"], title="# Broken")
    assert site.main(["--fast", "--out", str(tmp_path / "site"), str(path)]) == 1
    assert "boom" in (tmp_path / "site" / "02_broken.html").read_text()
    assert "failed" in (tmp_path / "site" / "index.html").read_text()


def test_make_site_target_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nsite:" in makefile and "tools.site" in makefile


@pytest.mark.slow
@pytest.mark.timeout(scaled(3600))
def test_the_whole_site_builds_in_fast_mode(tmp_path: Path) -> None:
    """Every lecture, executed in fast mode, becomes a page with figures; the index links them all."""
    lectures = sorted(ROOT.glob(nbtools.LECTURE_GLOB))
    assert site.main(["--fast", "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text()
    for lecture in lectures:
        page = (tmp_path / f"{lecture.stem}.html").read_text()
        assert "data:image/png;base64" in page, f"{lecture.name} has no figures"
        assert site.WIDGET_VIEW not in page
        assert f'href="{lecture.stem}.html"' in index
