"""course_utils.training on real MNIST (small subsets keep it quick)."""

import pytest
import torch

from course_utils import MLP, DivergenceError, evaluate, get_dataloaders, set_seed, train
from course_utils.config import FAST_MAX_EPOCHS


@pytest.fixture(scope="module")
def loaders(mnist_dir):
    return get_dataloaders(batch_size=64, subset=2048, device="cpu", val_size=1000)


def test_training_lowers_the_loss_and_learns_the_digits(loaders):
    train_loader, val_loader, test_loader = loaders
    model = MLP()
    set_seed(0)
    before_loss, before_acc = evaluate(test_loader, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = train(train_loader, model, optimizer, n_epochs=2, seed=0, progress=False)
    assert len(losses) == 2 * len(train_loader)
    assert sum(losses[-8:]) / 8 < 0.5 * sum(losses[:8]) / 8
    loss, acc = evaluate(test_loader, model)
    assert loss < before_loss and acc > 0.8 > before_acc


def test_a_seed_makes_runs_identical(loaders):
    train_loader = loaders[0]
    model = MLP()
    runs = []
    for _ in range(2):
        optimizer = torch.optim.Adam(model.parameters())
        runs.append(train(train_loader, model, optimizer, n_epochs=1, seed=5, progress=False))
    assert runs[0] == runs[1]
    optimizer = torch.optim.Adam(model.parameters())
    assert train(train_loader, model, optimizer, n_epochs=1, seed=6, progress=False) != runs[0]


def test_a_diverging_run_stops_with_a_clear_message(loaders):
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e6)
    with pytest.raises(DivergenceError) as err:
        train(loaders[0], model, optimizer, n_epochs=1, seed=0, progress=False)
    message = str(err.value)
    assert "at step" in message and "lower learning rate than lr=1e+06" in message
    assert isinstance(err.value, FloatingPointError)


def test_fast_mode_caps_the_epochs(loaders, fast_mode):
    model = MLP()
    losses = train(
        loaders[0], model, torch.optim.SGD(model.parameters(), lr=0.01), n_epochs=5, progress=False
    )
    assert len(losses) == FAST_MAX_EPOCHS * len(loaders[0])


def test_classic_pipeline_trains_too(mnist_dir):
    train_loader, _, _ = get_dataloaders(batch_size=128, subset=512, pipeline="classic", seed=0)
    model = MLP()
    losses = train(
        train_loader, model, torch.optim.SGD(model.parameters(), lr=0.01), n_epochs=1, progress=False
    )
    assert len(losses) == 4 and all(loss > 0 for loss in losses)


def test_tensorboard_scalars_are_written(loaders, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = MLP()
    losses = train(loaders[0], model, torch.optim.SGD(model.parameters(), lr=0.01), n_epochs=1,
                   progress=False, log_dir=tmp_path, tag="sgd")  # fmt: skip
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = events.Scalars("loss/sgd")
    assert [s.step for s in scalars] == list(range(len(losses)))
    assert [s.value for s in scalars] == pytest.approx(losses)


def test_bad_epochs_rejected(loaders):
    model = MLP()
    with pytest.raises(ValueError, match="n_epochs"):
        train(loaders[0], model, torch.optim.SGD(model.parameters(), lr=0.01), n_epochs=0)
