"""Course-wide settings, read in one place.

Fast mode
---------
One switch shrinks every training run so that notebooks execute in seconds in CI
and while nbgrader grades a submission:

* ``COURSE_FAST=1`` (or ``true``/``yes``) turns it on explicitly;
* it is also on whenever nbgrader's ``NBGRADER_EXECUTION`` is set (autograding).

In fast mode :func:`course_utils.data.get_dataloaders` keeps at most
:data:`FAST_TRAIN_SIZE` training and :data:`FAST_EVAL_SIZE` validation/test
images, and :func:`course_utils.training.train` runs at most
:data:`FAST_MAX_EPOCHS` epochs. Lecture 7's text task
(:func:`course_utils.bag_of_words.newsgroups_loaders`) keeps at most :data:`FAST_TEXT_TRAIN_SIZE`
training and :data:`FAST_EVAL_SIZE` validation/test posts.

Device
------
:func:`get_device` is the one place that decides between the GPU and the CPU; the
training loop, the parity checks and the grader all ask it.

Data directory
--------------
MNIST and 20 Newsgroups live in one cache directory shared by every notebook, test and grader:
``$COURSE_DATA_DIR`` when set, otherwise ``~/.cache/optimizers-course``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # torch loads only when a device is asked for
    import torch

T = TypeVar("T")

FAST_TRAIN_SIZE = 8192
FAST_EVAL_SIZE = 2048
FAST_MAX_EPOCHS = 2
FAST_TEXT_TRAIN_SIZE = 4096

_TRUE = {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True when runs should be shrunk (``COURSE_FAST`` set, or nbgrader is executing)."""
    if os.environ.get("NBGRADER_EXECUTION"):
        return True
    return os.environ.get("COURSE_FAST", "").strip().lower() in _TRUE


FAST_MODE: bool = fast_mode()
"""Fast mode as it was when ``course_utils`` was imported; call :func:`fast_mode` for the live value."""


def pick(full: T, fast: T) -> T:
    """Return ``fast`` in fast mode and ``full`` otherwise, e.g. ``n_epochs = pick(5, 1)``."""
    return fast if fast_mode() else full


def data_dir() -> Path:
    """The directory that holds the datasets (``$COURSE_DATA_DIR`` or ``~/.cache/optimizers-course``)."""
    env = os.environ.get("COURSE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "optimizers-course"


def get_device() -> torch.device:
    """The GPU when there is one, otherwise the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[torch.device]:
    """The CPU, plus the GPU when there is one (where code must run on both)."""
    import torch

    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
