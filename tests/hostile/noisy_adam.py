"""A correct Adam (defined just above in the same cell) whose steps make torch print a UserWarning.

Every test cell then writes to stderr while its asserts pass: warnings are not failures."""

import warnings

import torch

warnings.simplefilter("always", UserWarning)
_QuietAdam = globals()["Adam"]


class Adam(_QuietAdam):
    def step(self, *args, **kwargs):
        torch.tensor(torch.zeros(1))  # UserWarning: copy-construct from a tensor: use .clone().detach()
        return super().step(*args, **kwargs)
