"""Shared code for the *Optimizers in PyTorch* course.

Split by concern, each module small enough to read in a few minutes:

* :mod:`course_utils.config`   - fast mode and the data directory, read in one place;
* :mod:`course_utils.data`     - real MNIST (fetched offline too) and the classic/fast loaders;
* :mod:`course_utils.models`   - the MLP;
* :mod:`course_utils.training` - ``set_seed``, ``train``, ``evaluate``;
* :mod:`course_utils.plotting` - loss curves;
* :mod:`course_utils.testing`  - ``check_against_torch`` for your own optimizers;
* :mod:`course_utils.playground` / :mod:`course_utils.quiz` - the interactive widgets.

The names below are importable from the package itself (``from course_utils import MLP``);
submodules load on first use, so ``import course_utils`` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "fast_mode": "config",
    "pick": "config",
    "MEAN": "data",
    "STD": "data",
    "get_dataloaders": "data",
    "MLP": "models",
    "moving_average": "plotting",
    "plot_loss": "plotting",
    "plot_losses": "plotting",
    "check_against_torch": "testing",
    "DivergenceError": "training",
    "evaluate": "training",
    "get_device": "training",
    "set_seed": "training",
    "train": "training",
    "train_epoch": "training",
    "Playground": "playground",
    "run_optimizer": "playground",
    "Quiz": "quiz",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 lazy attribute
    if name in _EXPORTS:
        return getattr(import_module(f"course_utils.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'course_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
