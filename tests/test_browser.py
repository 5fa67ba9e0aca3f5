"""Real-browser test: JupyterLab on localhost + Debian's headless Chromium driven by Playwright.

The test opens a temporary copy of notebooks/08_playground.ipynb, runs all cells, drags the SGD learning-rate
slider of the playground and checks that the plot changed, then answers a flash card. Screenshots are kept in
build/test-artifacts/ (playground.png after the slider move, playground-before.png before it, quiz.png).

Needs /usr/bin/chromium (``apt-get install chromium chromium-driver``); no browser is downloaded.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures import servers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "08_playground.ipynb"
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def chromium() -> str:
    """Path of Debian's Chromium (checked before JupyterLab is started, so a skip costs nothing)."""
    pytest.importorskip(
        "playwright.sync_api", reason="needs the playwright Python package (pip install playwright)"
    )
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "Chromium not found: install Debian's browser with `apt-get install chromium chromium-driver`."
    )


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free localhost port, serving a temp dir holding a copy of the notebook."""
    pytest.importorskip("jupyterlab")
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    port, token = servers.free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        # Isolate from the user's Jupyter settings and saved workspaces.
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    # No "get Jupyter news?" pop-up over the page; render every cell (no virtual scrolling) so the DOM is stable.
    for plugin, setting in [
        ("apputils-extension/notification", '{"fetchNews": "false"}'),
        ("notebook-extension/tracker", '{"windowingMode": "none"}'),
    ]:
        path = tmp_path / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(setting)
    log = tmp_path / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        servers.wait_until_answers(
            f"{base}/api/status?token={token}", proc, log, what="JupyterLab", timeout=90
        )
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", log
    finally:
        servers.stop(proc)  # the server and its kernels


def _changed_fraction(png_a: bytes, png_b: bytes) -> float:
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png_a)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(png_b)).convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b).max(axis=2) > 16).mean())


def test_playground_in_jupyterlab_redraws_when_a_slider_moves(chromium, jupyterlab, tmp_path):
    from playwright import sync_api

    url, log = jupyterlab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_api.sync_playwright() as p:
        # A persistent context is how Playwright takes a (fresh, empty) --user-data-dir.
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = browser.new_page()
        try:
            page.goto(url)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
            # Wait for the kernel to be up: the status bar says "Python 3 (ipykernel) | Idle".
            page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=90_000)

            # Run > Run All Cells, through the menu like a student would.
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            # The playground is the first widget with tabs; its figure is an <img> inside it.
            playground = page.locator(".jp-OutputArea-output .widget-vbox:has(.widget-tab)").first
            playground.wait_for(timeout=240_000)
            figure = playground.locator("img.widget-image").first
            figure.wait_for(timeout=60_000)
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=figure.element_handle(), timeout=30_000
            )
            figure.scroll_into_view_if_needed()
            # Let the rest of the notebook (the quiz) finish so the page stops moving.
            page.locator(".jp-OutputArea-output .widget-button", has_text="next card").first.wait_for(
                timeout=120_000
            )
            figure.scroll_into_view_if_needed()
            page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)  # any late widget message from the browser would arrive now
            status = playground.locator(".widget-html").last
            status_before = status.inner_text()
            before_src = figure.get_attribute("src")
            before = figure.screenshot()
            page.screenshot(path=str(ARTIFACTS / "playground-before.png"))

            # Drag the handle of the (visible) SGD tab's lr slider to the right.
            slider = playground.locator(
                ".widget-slider:visible", has=page.locator("label", has_text="lr")
            ).first
            readout = slider.locator(".widget-readout")
            before_readout = readout.inner_text()
            handle = slider.locator(".noUi-handle").first
            box = handle.bounding_box()
            assert box is not None, "slider handle is not on screen"
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            for dx in range(5, 35, 5):
                page.mouse.move(x + dx, y)
            page.mouse.up()

            page.wait_for_function(
                "([img, old]) => img.src !== old && img.complete && img.naturalWidth > 0",
                arg=[figure.element_handle(), before_src],
                timeout=60_000,
            )
            page.wait_for_timeout(1500)  # the kernel may still be working through the drag's updates
            after = figure.screenshot()
            page.screenshot(path=str(ARTIFACTS / "playground.png"))
            after_readout = readout.inner_text()
            status_after = status.inner_text()

            # The flash-card quiz answers a click with a verdict and an explanation.
            quiz = page.locator(
                ".jp-OutputArea-output .widget-vbox:has(.widget-button:text('next card'))"
            ).last
            quiz.scroll_into_view_if_needed()
            quiz.locator(".widget-hbox .widget-button").first.click()
            feedback = quiz.locator(".widget-html", has_text="Run:").first
            feedback.wait_for(timeout=30_000)
            verdict = feedback.inner_text()
            page.screenshot(path=str(ARTIFACTS / "quiz.png"))
            tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback").count()
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "playground-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    assert tracebacks == 0, "a notebook cell raised an exception (see build/test-artifacts/playground.png)"
    assert after_readout != before_readout, "the slider did not move"
    assert ("Right." in verdict or "No: it was" in verdict) and "steps on" in verdict, verdict
    # The notebook sets Adam's lr to 0.3 and back to its default from code; the browser must not undo that.
    from course_utils.playground import run_optimizer

    x, y = run_optimizer("rosenbrock", "Adam", steps=100).points[-1]
    adam = f"Adam: ({x:.3g}, {y:.3g})"
    assert adam in status_before and adam in status_after, (adam, status_before, status_after)
    assert status_after.split("|")[0] != status_before.split("|")[0], "SGD's summary did not change"
    changed = _changed_fraction(before, after)
    assert changed > 0.002, f"only {changed:.4%} of the plot's pixels changed after moving the slider"
    assert "Traceback" not in log.read_text()
