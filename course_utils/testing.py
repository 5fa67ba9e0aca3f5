"""Check a from-scratch optimizer against ``torch.optim``, the course's ground truth."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from course_utils.config import available_devices
from course_utils.models import MLP
from course_utils.training import set_seed


def check_against_torch(
    my_cls: type,
    torch_cls: type,
    hparams: Mapping[str, Any] | None = None,
    *,
    steps: int = 20,
    devices: Sequence[torch.device | str] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
) -> dict[str, float]:
    """Prove that ``my_cls`` takes exactly the steps ``torch_cls`` takes.

    Two copies of a small :class:`~course_utils.models.MLP` start from identical
    weights; ``my_cls(params, **hparams)`` trains one and ``torch_cls(params, **hparams)``
    the other, on identical random batches, for ``steps`` steps. After every step
    all parameters must agree (``torch.testing.assert_close``); the first mismatch
    raises an ``AssertionError`` naming the device, step and parameter.

    Runs on the CPU and, when available, on CUDA (or on ``devices``). Returns the
    largest absolute difference seen on each device, e.g. ``{"cpu": 0.0}``.

    Example::

        check_against_torch(SGDMomentum, torch.optim.SGD, dict(lr=0.1, momentum=0.9))
    """
    if steps < 1:
        raise ValueError(f"Invalid steps: {steps} (must be at least 1)")
    hparams = dict(hparams or {})
    report = {}
    for device in devices or available_devices():
        device = torch.device(device)
        set_seed(seed)
        reference = MLP([20, 16, 16, 4]).to(device)
        ours = copy.deepcopy(reference)
        # Generators, as model.parameters() returns them: a class must not rely on a list.
        my_opt = my_cls(ours.parameters(), **hparams)
        torch_opt = torch_cls(reference.parameters(), **hparams)
        criterion = nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(seed)
        worst = 0.0
        for step in range(1, steps + 1):
            x = torch.randn(32, 20, generator=generator).to(device)  # (batch, features)
            y = torch.randint(0, 4, (32,), generator=generator).to(device)
            for model, opt in ((reference, torch_opt), (ours, my_opt)):
                opt.zero_grad()
                criterion(model(x), y).backward()
                opt.step()
            for (name, expected), actual in zip(reference.named_parameters(), ours.parameters()):
                try:
                    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
                except AssertionError as exc:
                    raise AssertionError(
                        f"{my_cls.__name__} differs from {torch_cls.__module__}.{torch_cls.__name__} "
                        f"on {device} after step {step}, parameter {name!r} (hparams={hparams}):\n{exc}"
                    ) from None
                worst = max(worst, (actual - expected).abs().max().item())
        report[str(device)] = worst
        # "your Adam matches torch.optim.Adam", not "Adam matches Adam": the names are often the same.
        public = "torch.optim" if torch_cls.__module__.startswith("torch.optim") else torch_cls.__module__
        print(f"your {my_cls.__name__} matches {public}.{torch_cls.__name__} on {device} for {steps} steps "
              f"(largest difference {worst:.1e})")  # fmt: skip
    return report
