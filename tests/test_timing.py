"""Time limits scaled for a busy machine stay usable wherever a test passes them."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.fixtures import timing


def test_a_scaled_limit_is_whole_seconds_that_nbclient_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "TIME_SCALE", 2.371)  # a load average of 4.742 on 2 cores
    limit = timing.scaled(600)
    assert limit == 1423 and isinstance(limit, int)
    client = NotebookClient(nbformat.v4.new_notebook(), timeout=limit)  # an Integer trait: 1422.6 would fail
    assert client.timeout == 1423


def test_the_scale_comes_from_the_environment_or_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TIME_SCALE", "3")
    assert timing._time_scale() == 3.0
    monkeypatch.setenv("TEST_TIME_SCALE", "0.5")
    assert timing._time_scale() == 1.0  # never shorter than measured on a quiet machine
    monkeypatch.setenv("TEST_TIME_SCALE", "lots")
    with pytest.raises(ValueError, match="TEST_TIME_SCALE='lots' is not a number"):
        timing._time_scale()
    monkeypatch.delenv("TEST_TIME_SCALE")
    assert 1.0 <= timing._time_scale() <= 4.0
