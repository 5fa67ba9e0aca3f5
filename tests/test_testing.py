"""course_utils.testing.check_against_torch accepts correct optimizers and catches wrong ones."""

import pytest
import torch

from course_utils import check_against_torch


class MomentumPyTorchStyle:
    """v <- momentum * v + g (v starts at the first g); p <- p - lr * v."""

    def __init__(self, params, lr=1e-3, momentum=0.0):
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self.v = [None for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            if self.v[i] is None:
                self.v[i] = p.grad.clone()
            else:
                self.v[i].mul_(self.momentum).add_(p.grad)
            p.sub_(self.lr * self.v[i])


class MomentumTextbook(MomentumPyTorchStyle):
    """v <- momentum * v + lr * g: the same for constant lr, but the buffer starts at zero here."""

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            if self.v[i] is None:
                self.v[i] = torch.zeros_like(p)
            self.v[i].mul_(self.momentum).add_(p.grad, alpha=self.lr)
            p.sub_(self.v[i] * 1.01)  # a 1% error, like a mistyped constant


def test_a_correct_optimizer_passes_on_every_device():
    report = check_against_torch(MomentumPyTorchStyle, torch.optim.SGD, dict(lr=0.1, momentum=0.9), steps=25)
    assert set(report) == {"cpu"} | ({"cuda"} if torch.cuda.is_available() else set())
    assert all(diff < 1e-5 for diff in report.values())


def test_a_wrong_optimizer_fails_naming_step_and_parameter():
    with pytest.raises(AssertionError) as err:
        check_against_torch(MomentumTextbook, torch.optim.SGD, dict(lr=0.1, momentum=0.9))
    message = str(err.value)
    assert "MomentumTextbook differs from torch.optim.sgd.SGD on cpu after step 1" in message
    assert "parameter 'layers.0.weight'" in message


def test_wrong_hyperparameter_names_are_not_silently_ignored():
    with pytest.raises(TypeError):
        check_against_torch(MomentumPyTorchStyle, torch.optim.SGD, dict(lr=0.1, momentun=0.9))
