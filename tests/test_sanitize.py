"""Student HTML is inert where the instructor reads it (issue 19, point 8), checked in a real browser.

A submission's markdown cell holds a ``<script>``, an ``<img onerror>`` and a markdown link to
``javascript:``; its code cell has a ``text/html`` output with an ``<img onerror>`` and a JavaScript
output. The course's autograde
configuration (assignments/nbgrader_config.py) is loaded as nbgrader loads it, its preprocessors
after execution are run on that notebook, and the result is rendered as formgrader renders an
autograded notebook (HTMLExporter, nbgrader's ``formgrade`` template) and as generate_feedback does
(the ``feedback`` template's base, nbconvert's classic template, with the course's exporter
settings). Debian's headless Chromium, driven by Playwright, opens each page and clicks the link:
nothing a student wrote may run. The same notebook rendered without the course's settings does run (the control),
so the browser check can fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbconvert import HTMLExporter
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "assignments"
CHROMIUM = "/usr/bin/chromium"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MARKDOWN = """\
## My answer

<script>window.ran = (window.ran || []).concat("markdown script"); document.title = "pwned"</script>
<img src="x" onerror="window.ran = (window.ran || []).concat('markdown img'); document.title = 'pwned'">
[a link](javascript:window.ran=(window.ran||[]).concat('link'))
"""
HTML_OUTPUT = '<img src="x" onerror="window.ran = (window.ran || []).concat(\'output img\')"> <b>bold</b>'
JS_OUTPUT = "window.ran = (window.ran || []).concat('javascript output');"


def _hostile_notebook() -> nbformat.NotebookNode:
    code = nbformat.v4.new_code_cell("display(HTML(payload))", execution_count=1)
    code.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": HTML_OUTPUT, "text/plain": "<HTML>"}),
        nbformat.v4.new_output("display_data", data={"application/javascript": JS_OUTPUT}),
        nbformat.v4.new_output("stream", name="stdout", text="Test 1 passed\n"),
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(MARKDOWN), code])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _course_config() -> Config:
    """assignments/nbgrader_config.py, loaded the way nbgrader loads it."""
    return PyFileConfigLoader("nbgrader_config.py", path=str(COURSE)).load_config()


def _after_execution(config: Config, nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as the course's autograde stores it: its preprocessors after the jailed execution
    that touch markdown or outputs (grading steps that need a gradebook are not run)."""
    names = [p.__name__ for p in config.Autograde.autograde_preprocessors]
    steps = config.Autograde.autograde_preprocessors[names.index("JailedExecute") + 1 :]
    for step in steps:
        if step.__module__.startswith(("nbconvert", "autograder.sanitize")):
            nb, _ = step(config=config)(nb, {})
    return nb


def _render(nb: nbformat.NotebookNode, config: Config, template: str) -> str:
    from nbgrader.server_extensions.formgrader import handlers

    config = Config(config)
    config.HTMLExporter.template_name = template
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {  # what formgrader's SubmissionHandler passes
        "assignment_id": "optimizers_lab", "notebook_id": "adam", "submission_id": "s1", "index": 0,
        "total": 1, "base_url": "/", "student": "eve", "last_name": "", "first_name": "",
        "notebook_path": "autograded/eve/optimizers_lab/adam.ipynb",
    }  # fmt: skip
    html, _ = HTMLExporter(config=config).from_notebook_node(nb, resources=resources)
    return html


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's Chromium is not installed (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="sanitize-chromium-")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def _what_ran(browser, html: str, tmp_path: Path, name: str) -> list[str]:
    """Open ``html`` as a file page, click the links, and return what student code recorded."""
    page_file = tmp_path / f"{name}.html"
    page_file.write_text(html)
    page = browser.new_page()
    try:
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_timeout(1500)  # onerror handlers fire once the broken images have failed
        for link in page.locator("a", has_text="a link").all():
            link.click(timeout=2000)
        page.wait_for_timeout(300)
        return list(page.evaluate("window.ran || []")) + (["title"] if page.title() == "pwned" else [])
    finally:
        page.close()


def test_the_course_sanitizes_what_formgrader_and_feedback_render() -> None:
    config = _course_config()
    steps = [p.__name__ for p in config.Autograde.autograde_preprocessors]
    assert "SanitizeStudentHTML" in steps, steps
    assert steps.index("SanitizeStudentHTML") > steps.index("SaveAutoGrades") > steps.index("JailedExecute")
    assert config.SanitizeStudentHTML.enabled is True and config.HTMLExporter.sanitize_html is True
    nb = _after_execution(config, _hostile_notebook())
    markdown, code = nb.cells
    assert "<script>" not in markdown.source and "&lt;script&gt;" in markdown.source  # shown, as text
    assert "javascript:" not in markdown.source and "a link" in markdown.source
    assert [sorted(o.get("data", {})) for o in code.outputs] == [["text/html", "text/plain"], [], []]
    assert (
        "<img" not in code.outputs[0].data["text/html"] and "<b>bold</b>" in code.outputs[0].data["text/html"]
    )
    assert code.outputs[2].text == "Test 1 passed\n"


@pytest.mark.parametrize("template", ["formgrade", "classic"])
def test_student_html_does_not_run_in_chromium(template: str, browser, tmp_path: Path) -> None:
    config = _course_config()
    control = _what_ran(browser, _render(_hostile_notebook(), Config(), template), tmp_path, "control")
    assert {"markdown script", "markdown img", "output img"} <= set(control), control

    graded = _after_execution(config, _hostile_notebook())
    html = _render(graded, config, template)
    assert "&lt;script&gt;" in html  # what the student wrote is still there to read
    assert _what_ran(browser, html, tmp_path, "graded") == []
