"""course_utils.models.MLP."""

import math

import pytest
import torch

from course_utils import MLP, set_seed


@pytest.mark.parametrize("sizes", [[784, 256, 256, 10], [784, 1024, 1024, 512, 10], [5, 3]])
def test_layers_follow_sizes(sizes):
    model = MLP(sizes)
    shapes = [tuple(p.shape) for p in model.parameters()]
    expected = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        expected += [(n_out, n_in), (n_out,)]
    assert shapes == expected


def test_flattens_images_and_returns_logits():
    out = MLP()(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1)), "logits, not probabilities"


def test_kaiming_normal_weights_and_zero_biases():
    set_seed(0)
    model = MLP([784, 1024, 1024, 10])
    for layer in model.layers:
        fan_in = layer.weight.shape[1]
        assert abs(layer.weight.std().item() - math.sqrt(2 / fan_in)) < 0.02 * math.sqrt(2 / fan_in)
        assert abs(layer.weight.mean().item()) < 0.01
        assert torch.count_nonzero(layer.bias) == 0


def test_init_params_redraws_in_place_and_is_seeded():
    model = MLP([20, 8, 3])
    weight = model.layers[0].weight
    with torch.no_grad():
        model.layers[0].bias.fill_(1.0)
    set_seed(1)
    model.init_params()
    first = weight.clone()
    assert model.layers[0].weight is weight, "same tensors, so an optimizer built earlier still holds them"
    assert torch.count_nonzero(model.layers[0].bias) == 0
    set_seed(1)
    model.init_params()
    assert torch.equal(first, weight)


@pytest.mark.parametrize("sizes", [[784], [784, 0, 10], []])
def test_bad_sizes_are_rejected(sizes):
    with pytest.raises(ValueError, match="sizes"):
        MLP(sizes)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="expects 784 input features per example, got 100"):
        MLP()(torch.randn(2, 100))
