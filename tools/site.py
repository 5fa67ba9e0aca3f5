"""The course website: every lecture executed, rendered to HTML with its outputs and plots, plus an index page.

People can read the lectures without installing or running anything. Usage (from the repository root)::

    python -m tools.site                      # full size (the real numbers), into build/site
    python -m tools.site --fast --out /tmp/s  # fast mode (COURSE_FAST=1), e.g. in CI
    python -m tools.site notebooks/01_gradient_descent.ipynb   # just some notebooks

``make site`` runs the first line. Each lecture is executed in memory by ``nbclient`` (the sources are never
modified) with the same kernel environment as ``python -m tools.notebooks execute``, then exported with nbconvert's
``lab`` template. Sliders (``course_utils.knobs``, the playground) cannot move without a kernel, so their widget views
are dropped and the static picture they carry (``image/png``, the figure for the initial slider values) is shown
instead; the page needs no widget JavaScript. A lecture that fails is still written, with its error in place, and the
build exits with status 1.
"""

from __future__ import annotations

import argparse
import html
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_utils.widgets import WIDGET_VIEW
from tools import notebooks as nbtools

DEFAULT_OUT = nbtools.REPO_ROOT / "build" / "site"


@dataclass
class Page:
    """One rendered lecture."""

    source: Path
    html: Path
    title: str
    seconds: float
    error: str | None


def title_of(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The notebook's first Markdown heading of level 1, without the '# '."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def make_static(nb: nbformat.NotebookNode) -> int:
    """Drop widget views that have a static picture next to them, and the saved widget state.

    Returns how many outputs fell back to their picture. Outputs that are *only* a widget view are removed too:
    without a kernel they would render as nothing.
    """
    fallbacks = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                if not set(data) - {"text/plain"}:
                    continue  # nothing to show without a kernel
                fallbacks += 1
            kept.append(output)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)
    return fallbacks


def render(path: Path, out: Path, fast: bool, timeout: int = 900) -> Page:
    """Execute ``path`` (in memory) and write ``out/NAME.html`` with the widgets made static."""
    run = nbtools.execute(path, fast, timeout, html_dir=out, before_html=make_static)
    return Page(path, run.html, title_of(run.nb, path.stem), run.seconds, run.error)


def index_html(pages: list[Page], fast: bool) -> str:
    """The index page: one link per lecture, with its title and whether it ran cleanly."""
    mode = "fast mode (small runs, for checking the build)" if fast else "full size"
    items = "\n".join(
        f'  <li><a href="{html.escape(page.html.name)}">{html.escape(page.title)}</a>'
        + (' <strong class="failed">(failed: see the page)</strong>' if page.error else "")
        + "</li>"
        for page in pages
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Optimizers in PyTorch</title>
<style>
  body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 3rem auto; padding: 0 1rem; line-height: 1.5; }}
  li {{ margin: 0.4rem 0; }}
  .failed {{ color: #b00; }}
  footer {{ color: #666; font-size: 0.9rem; margin-top: 2rem; }}
</style>
</head>
<body>
<h1>Optimizers in PyTorch</h1>
<p>Lecture notebooks that derive SGD, momentum, Nesterov, Adagrad, Adadelta, RMSprop and Adam, implement them from
scratch and check them against <code>torch.optim</code>. Every page below was executed top to bottom ({mode}); its
outputs and plots are the ones the code produced. Sliders need a running notebook: here each shows its picture for
the initial values. To turn the knobs, open the notebooks in JupyterLab or Colab.</p>
<ol>
{items}
</ol>
<footer>Built with <code>python -m tools.site</code> on {time.strftime("%Y-%m-%d")}.</footer>
</body>
</html>
"""


def build(paths: list[Path], out: Path, fast: bool, timeout: int = 900) -> list[Page]:
    """Render every notebook in ``paths`` into ``out`` and write ``out/index.html``."""
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for path in paths:
        page = render(path, out, fast, timeout)
        status = "ok" if page.error is None else "FAILED"
        print(f"{status:6} {page.seconds:7.1f} s  {path} -> {page.html}", flush=True)
        if page.error:
            print(page.error, file=sys.stderr)
        pages.append(page)
    (out / "index.html").write_text(index_html(pages, fast), encoding="utf-8")
    return pages


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tools.site", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="fast mode (COURSE_FAST=1); default: full size")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds (default 900)")
    parser.add_argument("notebooks", nargs="*", help=f"notebooks (default: {nbtools.LECTURE_GLOB})")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted(nbtools.REPO_ROOT.glob(nbtools.LECTURE_GLOB))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    start = time.perf_counter()
    pages = build(paths, args.out, args.fast, args.timeout)
    print(f"{len(pages)} pages in {time.perf_counter() - start:.1f} s: open {args.out / 'index.html'}")
    return 1 if any(page.error for page in pages) else 0


if __name__ == "__main__":
    sys.exit(main())
