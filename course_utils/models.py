"""The course's multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """A fully connected ReLU network for flattened 28x28 images.

    ``sizes`` lists every layer width, input first and classes last: the course
    uses ``[784, 256, 256, 10]`` and, for the bigger experiments,
    ``[784, 1024, 1024, 512, 10]``. Weights are Kaiming-normal (suited to ReLU)
    and biases zero; :meth:`init_params` draws them again, so one model can be
    reused for several runs.
    """

    def __init__(self, sizes: Sequence[int] = (784, 256, 256, 10)) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(
                f"MLP needs at least an input and an output size, all positive; got sizes={sizes}"
            )
        self.sizes = sizes
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes, sizes[1:]))
        self.init_params()

    def init_params(self) -> None:
        """Kaiming-normal weights and zero biases, drawn from torch's global RNG."""
        for layer in self.layers:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=1)  # (batch, 1, 28, 28) -> (batch, 784)
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"MLP expects {self.sizes[0]} input features per example, got {x.shape[1]}")
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)  # (batch, classes): logits, no softmax
