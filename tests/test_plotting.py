"""course_utils.plotting returns figures that show what was asked."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from course_utils import moving_average, plot_loss, plot_losses
from course_utils.plotting import smoothed


def test_moving_average_is_the_windowed_mean():
    x = [1, 2, 3, 4, 10]
    assert moving_average(x, w=2).tolist() == [1.5, 2.5, 3.5, 7.0]
    assert len(moving_average(np.arange(100), w=5)) == 96
    with pytest.raises(ValueError, match="at least w=5"):
        moving_average([1, 2], w=5)


def test_smoothed_puts_each_mean_where_its_window_ends():
    steps, values = smoothed([1, 2, 3, 4, 10], w=3)
    assert steps.tolist() == [2, 3, 4]
    assert values.tolist() == [2.0, 3.0, 17 / 3]
    steps, values = smoothed([5, 6], w=1)
    assert steps.tolist() == [0, 1] and values.tolist() == [5, 6]


def test_plot_loss_draws_one_curve_with_labels():
    fig = plot_loss([3.0, 2.0, 1.0], title="SGD", ymax=2.5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "SGD"
    assert ax.get_ylim() == (0, 2.5)
    assert ax.get_xlabel() == "Update steps" and ax.get_ylabel() == "Loss"
    assert ax.lines[0].get_xdata().tolist() == [0, 1, 2]
    assert ax.lines[0].get_ydata().tolist() == [3.0, 2.0, 1.0]
    plt.close(fig)


def test_plot_loss_smooth_draws_the_trailing_mean_at_the_window_end():
    loss = [4.0, 2.0, 6.0, 0.0, 8.0, 2.0]
    fig = plot_loss(loss, smooth=3)
    (line,) = fig.axes[0].lines
    # window ending at step 2 is steps 0..2, ..., ending at step 5 is steps 3..5
    assert line.get_xdata().tolist() == [2, 3, 4, 5]
    assert line.get_ydata().tolist() == pytest.approx([4.0, 8 / 3, 14 / 3, 10 / 3])
    assert "moving average of 3" in fig.axes[0].get_ylabel()
    plt.close(fig)


def test_plot_losses_draws_a_labelled_line_per_run():
    fig = plot_losses([[3, 2, 1], [3, 1, 0.5]], ["sgd", "momentum"], title="cmp", ymax=4)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "momentum"]
    assert [line.get_ydata().tolist() for line in ax.lines] == [[3, 2, 1], [3, 1, 0.5]]
    with pytest.raises(ValueError, match="2 loss curves but 1 labels"):
        plot_losses([[1], [2]], ["a"])
    plt.close(fig)


def test_plot_losses_smooth_and_log_scale():
    a, b = np.arange(1, 11, dtype=float), np.full(10, 0.5)
    fig = plot_losses([a, b], ["a", "b"], smooth=4, logy=True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_ylim()[0] > 0, "a log axis does not start at the default ymin=0"
    for line, data in zip(ax.lines, (a, b)):
        assert line.get_xdata().tolist() == list(range(3, 10))
        assert line.get_ydata().tolist() == pytest.approx(np.convolve(data, np.ones(4) / 4, "valid"))
    with pytest.raises(ValueError, match="smooth window"):
        plot_losses([a], ["a"], smooth=0)
    with pytest.raises(ValueError, match="legend place"):
        plot_losses([a], ["a"], legend="top")
    plt.close(fig)


def test_legend_stays_off_the_curves():
    """The default legend sits outside the axes, so it cannot hide any part of a curve."""
    rng = np.random.default_rng(0)
    curves = [np.abs(rng.normal(1, 0.3, 200)).cumsum()[::-1] / 100 for _ in range(7)]
    fig = plot_losses(curves, [f"optimiser {i}" for i in range(7)])
    fig.canvas.draw()
    ax = fig.axes[0]
    axes_box = ax.get_window_extent()
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= axes_box.x1, "the legend is to the right of the plotting area"
    assert fig.bbox.contains(legend_box.x1 - 1, legend_box.y0 + 1), "...and inside the figure"
    plt.close(fig)
    inside = plot_losses(curves, [str(i) for i in range(7)], legend="inside")
    assert inside.axes[0].get_legend() is not None
    none = plot_losses(curves, [str(i) for i in range(7)], legend="none")
    assert none.axes[0].get_legend() is None
    plt.close("all")
