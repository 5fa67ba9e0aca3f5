"""Hostile payloads for tests/test_hostile.py and tests/test_hostile_stages.py (real files, so ruff checks them).

Each file is a student's code: pasted into a solution cell (alone, or after a correct answer) or into a
cell of its own, it runs as the cell's code in the jailed kernel and in the jailed hidden-check process.

* Against the jail's walls (tests/test_hostile.py): escape_jail (and the daemon it starts,
  outlive_grading), patch_checks, flood_output, fused_adam, functional_adam, hoard_memory,
  subclass_adam, loop_forever, write_everywhere.
* Against the grader's stages (tests/test_hostile_stages.py): flood_channel, forged_results,
  noisy_adam, fill_socket_folder.

A payload that needs the test's own values (paths, a port, a token) defines a function of the same name,
and :func:`call` appends the call with those values written as literals: no source text is formatted.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def payload(name: str) -> str:
    """The source of ``tests/hostile/<name>.py``, to paste into a cell."""
    return (HERE / f"{name}.py").read_text()


def call(name: str, *args: object) -> str:
    """``tests/hostile/<name>.py`` followed by a call of its function ``name`` on ``args`` (their reprs)."""
    return payload(name) + f"\n\n{name}({', '.join(map(repr, args))})\n"
