"""Hostile solution-cell payloads for tests/test_hostile_stages.py (real files, so ruff checks them).

Each file is appended to a correct solution cell, or stands in for one, in a student's
notebook. In the kernel and in the hidden-check process alike it runs as the cell's code.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def payload(name: str) -> str:
    """The source of ``tests/hostile/<name>.py``, to paste into a solution cell."""
    return (HERE / f"{name}.py").read_text()
