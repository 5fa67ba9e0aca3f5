"""A train_epoch that keeps 256 MiB more, touched, until something stops it (the memory limit)."""

import torch


def train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):
    """Keeps 256 MiB more, touched, until something stops it."""
    hoard = []
    while True:
        hoard.append(torch.ones(2**26))
