"""Shared fixtures. MNIST comes from the course's cache (fetched by `make test` before pytest runs)."""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # tests draw figures without a screen


@pytest.fixture(autouse=True)
def _normal_mode(monkeypatch):
    """Tests start in normal (not fast) mode unless they opt in with the ``fast_mode`` fixture."""
    monkeypatch.delenv("COURSE_FAST", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture
def fast_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")


@pytest.fixture(scope="session")
def mnist_dir():
    from course_utils.data import ensure_mnist

    return ensure_mnist()


@pytest.fixture(scope="session", autouse=True)
def _threads():
    # two OpenMP threads on the CI machine; don't oversubscribe when helpers run in parallel
    torch.set_num_threads(min(2, os.cpu_count() or 1))
