"""How the course's interactive pictures reach the notebook: PNG bytes, one MIME bundle, an optional ipywidgets.

The playground, the knobs and the quiz all show a matplotlib figure as a PNG inside an ``ipywidgets.Image``,
and display themselves with :func:`widget_bundle`: the live widget where a kernel and a widget manager are
there (JupyterLab, Notebook 7, VS Code, Colab), the picture everywhere else (GitHub, nbviewer, the course
website, which drops the widget view: ``tools/site.py``). Both ipywidgets 7 (Colab's 7.7.1) and 8 work.
"""

from __future__ import annotations

import base64
import io
import sys
from types import ModuleType

import numpy as np
import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["WIDGET_VIEW", "figure_png", "import_widgets", "rgba_png", "widget_bundle", "widget_view"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # a reference to a live widget's model


def import_widgets() -> ModuleType:
    """``ipywidgets`` (7.x as on Colab, or 8.x), or an ImportError that says what works without it."""
    try:
        import ipywidgets
    except ImportError as err:
        raise ImportError(
            "The interactive widgets need ipywidgets (pip install ipywidgets); without it the pictures are "
            "shown, and run_optimizer, plot_paths and the quiz's make_cards work."
        ) from err
    return ipywidgets


def rgba_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an ``(height, width, 4)`` uint8 image, with Pillow's fastest compression.

    A few milliseconds instead of the ~50 ms of ``fig.savefig``'s default compression: what keeps a
    slider's redraw live."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgba).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig`` (at ``dpi``, default the figure's own), drawn with Agg.

    A figure made with pyplot is closed afterwards, so that the notebook does not show it a second time
    under the widget; a plain ``Figure()`` is left as it is (the playground keeps drawing into its own)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    own_dpi = fig.dpi
    if dpi is not None:
        fig.set_dpi(dpi)
    try:
        fig.canvas.draw()
        png = rgba_png(np.asarray(fig.canvas.buffer_rgba()))  # (height, width, 4) uint8
    finally:
        fig.set_dpi(own_dpi)
    pyplot = sys.modules.get("matplotlib.pyplot")  # imported only if the figure can be one of its own
    if pyplot is not None and getattr(fig, "number", None) in pyplot.get_fignums():
        pyplot.close(fig)
    return png


def widget_view(widget: object) -> dict:
    """``{WIDGET_VIEW: ...}`` for a live widget, ``{}`` for none or a closed one.

    ipywidgets 8 gives widgets a ``_repr_mimebundle_``; ipywidgets 7 (Colab's 7.7.1, and any kernel that
    imported 7 before an upgrade) only ``_ipython_display_``. Both render the same reference to the widget's
    model (widget message protocol 2.0), so it is written here, for either."""
    model_id = getattr(widget, "model_id", None)
    if not model_id:  # None once the widget is closed: then only the picture is left
        return {}
    return {WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": model_id}}


def widget_bundle(widget: object, png: bytes, text: str) -> dict:
    """The MIME bundle showing ``widget`` live, and ``png`` wherever widgets cannot render."""
    return {"text/plain": text, "image/png": base64.b64encode(png).decode("ascii"), **widget_view(widget)}
