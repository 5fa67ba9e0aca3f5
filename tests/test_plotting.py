"""course_utils.plotting returns figures that show what was asked."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from course_utils import moving_average, plot_loss, plot_losses


def test_moving_average_is_the_windowed_mean():
    x = [1, 2, 3, 4, 10]
    assert moving_average(x, w=2).tolist() == [1.5, 2.5, 3.5, 7.0]
    assert len(moving_average(np.arange(100), w=5)) == 96
    with pytest.raises(ValueError, match="at least w=5"):
        moving_average([1, 2], w=5)


def test_plot_loss_draws_one_curve_with_labels():
    fig = plot_loss([3.0, 2.0, 1.0], title="SGD", ymax=2.5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "SGD"
    assert ax.get_ylim() == (0, 2.5)
    assert ax.get_xlabel() == "Update steps" and ax.get_ylabel() == "Loss"
    assert ax.lines[0].get_ydata().tolist() == [3.0, 2.0, 1.0]


def test_plot_losses_draws_a_labelled_line_per_run():
    fig = plot_losses([[3, 2, 1], [3, 1, 0.5]], ["sgd", "momentum"], title="cmp", ymax=4)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "momentum"]
    assert [line.get_ydata().tolist() for line in ax.lines] == [[3, 2, 1], [3, 1, 0.5]]
    with pytest.raises(ValueError, match="2 loss curves but 1 labels"):
        plot_losses([[1], [2]], ["a"])
