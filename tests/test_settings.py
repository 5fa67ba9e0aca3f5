"""Grading settings travel one way: c.Grading in nbgrader_config.py or the command line, never the environment."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from traitlets.config import Config

from autograder import jail, settings
from autograder.__main__ import options, parser
from autograder.grade import make_task
from autograder.preprocessors import JailedExecute
from tests.fixtures import course


@pytest.fixture
def scratch_course(tmp_path: Path) -> Path:
    return course.scratch(
        tmp_path, grading={"cell_timeout": 17, "memory_bytes": 3 * 2**30, "unconfined": True}
    )


def test_nbgrader_config_reaches_the_preprocessors_and_the_jailed_kernel(scratch_course: Path) -> None:
    config = settings.course_config(scratch_course)
    execute = JailedExecute(config=config)
    assert execute.timeout == 17 and execute.limits.memory_bytes == 3 * 2**30
    km = jail.JailedKernelManager(config=config)  # nbclient creates it with the same configuration
    try:
        assert km.jail.limits.cell_timeout == 17 and km.jail.limits.memory_bytes == 3 * 2**30
        assert km.jail.confined is False
    finally:
        km.jail.close()


def test_command_line_flags_go_over_the_course_config_and_into_the_task(scratch_course: Path) -> None:
    before = dict(os.environ)
    args = parser().parse_args(
        ["--course", str(scratch_course), "grade", "--cell-timeout", "99", "--device", "cpu"]
    )
    run = options(args)
    assert run.limits.cell_timeout == 99  # the flag wins
    assert run.limits.memory_bytes == 3 * 2**30 and run.unconfined  # the rest from nbgrader_config.py
    assert run.device == "cpu" and run.seed is None
    assert dict(os.environ) == before, "nothing is passed through the environment"
    task = make_task(scratch_course, "nobody", run.with_seed())
    shipped = pickle.loads(pickle.dumps(task))  # what a Dask worker receives
    worker = settings.Options.from_config(settings.course_config(scratch_course, shipped.options))
    assert worker == shipped.options and worker.seed is not None and worker.limits.cell_timeout == 99


def test_defaults_without_a_config_and_clear_errors_for_a_wrong_one() -> None:
    assert settings.Options.from_config(None) == settings.Options()
    assert settings.Options.from_config(Config()).limits == settings.Limits()
    config = Config()
    config.Grading.cell_timout = 5  # misspelt
    with pytest.raises(ValueError, match="unknown setting c.Grading.cell_timout"):
        settings.Options.from_config(config)
    config = Config()
    config.Grading.memory_bytes = "lots"
    with pytest.raises(ValueError, match="memory_bytes = 'lots': expected a int value"):
        settings.Options.from_config(config)


def test_options_round_trip_through_configuration() -> None:
    given = settings.Options(
        settings.Limits(part_timeout=2.5, processes=8),
        device="cpu",
        unconfined=True,
        seed=7,
        scratch="/srv/run",
    )
    assert settings.Options.from_config(given.to_config()) == given


def test_a_runs_scratch_folder_reaches_the_jails_as_configuration(
    scratch_course: Path, tmp_path: Path
) -> None:
    """The folder a grading run sweeps at its end is where its kernels' and checks' jails are made."""
    run = settings.Options(unconfined=True, scratch=str(tmp_path / "run"))
    config = settings.course_config(scratch_course, run)
    km = jail.JailedKernelManager(config=config)
    try:
        assert km.jail.scratch.parent == (tmp_path / "run").resolve()
    finally:
        km.jail.close()
    assert settings.scratch_root(settings.Options.from_config(config)) == tmp_path / "run"


def test_grade_class_hands_its_scratch_folder_on_without_the_environment(
    scratch_course: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autograder import grade

    seen = {}

    def record(root, students, options, *rest) -> dict:  # the coordinator, with what grade_class gives it
        seen.update(environ=dict(os.environ), options=options, scratch=rest[-1])
        return {}

    monkeypatch.setattr(grade, "_grade_class", record)
    before = dict(os.environ)
    grade.grade_class(scratch_course, ["nobody"], workers=1)
    assert seen["environ"] == before and dict(os.environ) == before, (
        "nothing is passed through the environment"
    )
    assert seen["options"].scratch == str(seen["scratch"]) and seen["options"].seed is not None
    assert not Path(seen["scratch"]).exists(), "the run's folder is swept at its end"
