"""Shared code for the *Optimizers in PyTorch* course.

Split by concern, each module small enough to read in a few minutes:

* :mod:`course_utils.config`   - fast mode and the data directory, read in one place;
* :mod:`course_utils.data`     - real MNIST (fetched offline too) and the classic/fast loaders;
* :mod:`course_utils.models`   - the MLP;
* :mod:`course_utils.training` - ``set_seed``, ``train``, ``evaluate``;
* :mod:`course_utils.plotting` - loss curves;
* :mod:`course_utils.testing`  - ``check_against_torch`` for your own optimizers;
* :mod:`course_utils.knobs`    - sliders that redraw a lecture's figure (``Knob``, ``Knobs``);
* :mod:`course_utils.playground` / :mod:`course_utils.quiz` - the interactive playground and flash cards;
* :mod:`course_utils.widgets`  - what they share: PNG pictures, the MIME bundle, the ipywidgets import.

Everything a lecture uses is importable from the package itself (``from course_utils import MLP, Knobs``);
the modules stay importable one by one. ipywidgets is imported only when a ``Knobs``, ``Playground`` or
``Quiz`` is created, so ``import course_utils`` works with ipywidgets 7 (Colab) or 8, and without it.
"""

from course_utils import config
from course_utils.config import fast_mode, pick
from course_utils.data import MEAN, STD, augment_batch, get_dataloaders, load_mnist
from course_utils.knobs import Knob, Knobs, sweep_knobs
from course_utils.models import MLP
from course_utils.playground import OPTIMIZERS, Playground, draw_surface, plot_paths, run_optimizer
from course_utils.plotting import moving_average, plot_loss, plot_losses
from course_utils.quiz import Quiz, check_prediction
from course_utils.surfaces import SURFACES, get_surface
from course_utils.testing import check_against_torch
from course_utils.training import DivergenceError, evaluate, get_device, set_seed, train, train_epoch

__all__ = [
    "MEAN",
    "MLP",
    "OPTIMIZERS",
    "STD",
    "SURFACES",
    "DivergenceError",
    "Knob",
    "Knobs",
    "Playground",
    "Quiz",
    "augment_batch",
    "check_against_torch",
    "check_prediction",
    "config",
    "draw_surface",
    "evaluate",
    "fast_mode",
    "get_dataloaders",
    "get_device",
    "get_surface",
    "load_mnist",
    "moving_average",
    "pick",
    "plot_loss",
    "plot_losses",
    "plot_paths",
    "run_optimizer",
    "set_seed",
    "sweep_knobs",
    "train",
    "train_epoch",
]
