"""course_utils.knobs: sliders that redraw a figure, and the static picture behind them."""

import base64
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from course_utils.knobs import Knob, Knobs, linear_values, log_values, sweep_knobs
from course_utils.widgets import widget_view

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_value_grids():
    assert log_values(1e-3, 1e-1, per_decade=2) == [0.001, 0.00316, 0.01, 0.0316, 0.1]
    assert linear_values(0.0, 0.9, 0.3) == [0.0, 0.3, 0.6, 0.9]
    assert linear_values(0.0, 1.0, 0.1)[-1] == 1.0 and len(linear_values(0.0, 1.0, 0.1)) == 11
    with pytest.raises(ValueError, match="log range"):
        log_values(0.0, 1.0)
    with pytest.raises(ValueError, match="linear range"):
        linear_values(1.0, 0.0, 0.1)


def test_knob_starts_in_the_middle_and_snaps_to_its_values():
    knob = Knob("mu", [0.0, 0.5, 0.9, 0.99])
    assert knob.value == 0.9 and knob.description == "mu"
    assert Knob("mu", [0.0, 0.5, 0.9], value=0.52).value == 0.5
    assert knob.snap(0.97) == 0.99 and knob.label(0.99) == "0.99"
    assert Knob("name", ["SGD", "Adam"], value="Adam").value == "Adam"
    with pytest.raises(ValueError, match="not a value"):
        Knob("name", ["SGD", "Adam"], value="RMSprop")
    with pytest.raises(ValueError, match="repeated"):
        Knob("x", [1, 1])


def _draw_factory(calls):
    def draw(lr, mu):
        calls.append((lr, mu))
        fig, ax = plt.subplots()
        ax.plot([0, 1], [lr, mu])
        ax.set_title(f"lr={lr}, mu={mu}")
        return fig

    return draw


def test_sliders_redraw_and_cache_pictures():
    pytest.importorskip("ipywidgets")
    calls = []
    knobs = Knobs(_draw_factory(calls), [Knob.log("lr", 1e-3, 1e-1, value=1e-2), Knob("mu", [0.0, 0.9])])
    assert knobs.values == {"lr": 0.01, "mu": 0.9} and calls == [(0.01, 0.9)]
    first = knobs.png
    assert first.startswith(PNG_MAGIC) and knobs.image.value == first
    assert plt.get_fignums() == [], (
        "the drawn pyplot figure is closed, so the notebook does not show it twice"
    )

    knobs.sliders["mu"].value = 0.0  # what a student's drag does
    assert knobs.values["mu"] == 0.0 and calls[-1] == (0.01, 0.0)
    assert knobs.image.value == knobs.png != first

    knobs.set(mu=0.9, lr=0.011)  # snaps to the grid and moves the slider
    assert knobs.sliders["lr"].value == 0.01 and knobs.png == first
    assert len(calls) == 2, "a combination drawn before comes from the cache"
    with pytest.raises(ValueError, match="Unknown knob"):
        knobs.set(momentum=0.5)


def test_display_offers_the_widget_and_a_static_picture():
    pytest.importorskip("ipywidgets")
    knobs = Knobs(_draw_factory([]), [Knob("lr", [0.1, 0.2]), Knob("mu", [0.5])])
    bundle = knobs._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"]) == knobs.png
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == knobs.widget.model_id
    assert "lr=0.2" in bundle["text/plain"]


def test_without_ipywidgets_the_picture_is_shown(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` now raises ImportError
    knobs = Knobs(_draw_factory([]), [Knob("lr", [0.1, 0.2]), Knob("mu", [0.5])])
    assert knobs.widget is None and knobs.sliders == {}
    assert set(knobs._repr_mimebundle_()) == {"text/plain", "image/png"}
    knobs.set(lr=0.1)
    assert knobs.png.startswith(PNG_MAGIC)


def test_widget_view_for_ipywidgets_7_style_widgets():
    """ipywidgets 7 widgets have no _repr_mimebundle_; the view entry is built from the model id."""

    class Widget7:
        model_id = "abc123"

    assert widget_view(Widget7()) == {
        "application/vnd.jupyter.widget-view+json": {
            "version_major": 2,
            "version_minor": 0,
            "model_id": "abc123",
        }
    }


def test_draw_must_return_a_figure():
    with pytest.raises(TypeError, match="matplotlib Figure"):
        Knobs(lambda lr: None, [Knob("lr", [0.1])])
    with pytest.raises(ValueError, match="unique names"):
        Knobs(lambda lr: None, [Knob("lr", [0.1]), Knob("lr", [0.2])])


def test_sweep_knobs_highlight_the_chosen_run():
    runs = {1e-8: [9.0, 5.0, 1.0, 0.5, 0.4, 0.3], 1e-2: [2.0, 1.5, 1.0, 0.8, 0.6, 0.5]}
    knobs = sweep_knobs(runs, "eps", smooth=2, first_steps=3)
    assert knobs.values == {"eps": 1e-8} and knobs.png.startswith(PNG_MAGIC)
    fig = knobs.draw(eps=1e-2)
    left, right = fig.axes
    coloured = [line for line in right.lines if line.get_color() == "C3"]
    assert len(coloured) == 1 and coloured[0].get_xdata().tolist() == [1, 2, 3, 4, 5]
    assert coloured[0].get_ydata().tolist() == [1.75, 1.25, 0.9, 0.7, 0.55]
    assert "highest loss in the first 3 steps 2.00" in left.get_title()
    assert "loss at the end 0.550" in right.get_title() and right.get_yscale() == "log"
    plt.close("all")
