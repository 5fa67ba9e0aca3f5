"""The training loop: seed, train, evaluate. Read it top to bottom; there are no hidden callbacks."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from course_utils import config
from course_utils.config import get_device  # noqa: F401 - re-exported: notebooks import it from here


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite: training diverged."""


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's RNGs (CPU and every GPU) so runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _learning_rate(optimizer) -> str:
    groups = getattr(optimizer, "param_groups", None)
    if groups and "lr" in groups[0]:
        return f"lr={groups[0]['lr']:g}"
    lr = getattr(optimizer, "lr", None)
    return f"lr={lr:g}" if isinstance(lr, (int, float)) else "the learning rate"


def train_epoch(
    iterator: Iterable,
    model: nn.Module,
    optimizer,
    criterion: nn.Module,
    device: torch.device | str,
    progress: bool = True,
    desc: str | None = None,
    step_offset: int = 0,
) -> list[float]:
    """One pass over ``iterator``: one optimizer step per batch. Returns the loss of every step.

    Raises :class:`DivergenceError` as soon as a loss is NaN or infinite.
    ``step_offset`` only numbers the steps in that message.
    """
    model.train()
    losses = []
    for images, labels in tqdm(iterator, desc=desc, leave=False, disable=not progress):
        images, labels = images.to(device), labels.to(device)  # (B, 1, 28, 28), (B,)
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            step = step_offset + len(losses)
            raise DivergenceError(
                f"The loss became {value} at step {step} (after {len(losses)} steps of this epoch): "
                f"training diverged. Try a lower learning rate than {_learning_rate(optimizer)}, "
                "e.g. 10x smaller."
            )
        losses.append(value)
    return losses


def train(
    iterator: Iterable,
    model: nn.Module,
    optimizer,
    criterion: nn.Module | None = None,
    device: torch.device | str | None = None,
    n_epochs: int = 5,
    seed: int | None = None,
    progress: bool = True,
    log_dir: str | os.PathLike | None = None,
    tag: str | None = None,
) -> list[float]:
    """Re-initialise ``model`` and train it for ``n_epochs``; return the loss of every step.

    Like the course's original ``train``, the model's parameters are redrawn with
    ``model.init_params()`` first, so one model and optimizer can be reused for several
    runs (build a fresh optimizer each time: it keeps state). With ``seed``, the initial
    weights and the order and augmentation of the batches are the same in every run,
    so runs of different optimizers are comparable step by step.

    In fast mode (:mod:`course_utils.config`) at most ``FAST_MAX_EPOCHS`` epochs run.
    With ``log_dir`` (and the optional ``tensorboard`` package), the losses are also
    written as TensorBoard scalars under ``tag``.
    """
    if n_epochs < 1:
        raise ValueError(f"Invalid n_epochs: {n_epochs} (must be at least 1)")
    n_epochs = config.pick(n_epochs, min(n_epochs, config.FAST_MAX_EPOCHS))
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    if seed is not None:
        set_seed(seed)
    model.init_params()
    writer = _summary_writer(log_dir)

    losses: list[float] = []
    try:
        for epoch in range(n_epochs):
            if hasattr(iterator, "set_epoch"):  # seeded loaders draw epoch e's order from seed + e
                iterator.set_epoch(epoch)
            desc = f"{tag or 'epoch'} {epoch + 1}/{n_epochs}"
            epoch_losses = train_epoch(
                iterator, model, optimizer, criterion, device, progress, desc, len(losses)
            )
            if writer is not None:
                for i, value in enumerate(epoch_losses, start=len(losses)):
                    writer.add_scalar(f"loss/{tag or 'train'}", value, i)
            losses.extend(epoch_losses)
    finally:
        if writer is not None:
            writer.close()
    return losses


def _summary_writer(log_dir):
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            "log_dir needs TensorBoard: `pip install tensorboard` (or the course's `[tensorboard]` extra)"
        ) from exc
    return SummaryWriter(log_dir=str(log_dir))


@torch.no_grad()
def evaluate(
    iterator: Iterable,
    model: nn.Module,
    criterion: nn.Module | None = None,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy (a fraction in [0, 1]) of ``model`` over ``iterator``."""
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in iterator:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)  # (B, classes)
        total_loss += criterion(logits, labels).item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        count += len(labels)
    if count == 0:
        raise ValueError("evaluate() got an empty iterator")
    return total_loss / count, correct / count
