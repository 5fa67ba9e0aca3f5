"""The lab's hidden checks and notebook repair (no nbgrader run here).

Every check runs the real jailed runner on real solution-cell sources and compares with
torch.optim / the written-out contract; each known mistake must fail exactly the parts it
breaks, so partial work earns partial marks and no mistake earns a mark it should not.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
import pytest
import torch

import autograder
from autograder import checks, repair, settings, spec
from tests.fixtures import course, solutions

ROOT = Path(__file__).resolve().parents[1]
CORRECT = {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM}
MISTAKES = [(nb, key) for nb, table in (("accumulation", solutions.ACCUMULATION_MISTAKES),
                                        ("adam", solutions.ADAM_MISTAKES)) for key in table]  # fmt: skip


def _run(notebook: str, source: str | None, parts: list[str] | None = None, **limits) -> dict[str, dict]:
    """Verdicts of one notebook's checks as plain dicts, for the parts asked for."""
    verdicts = checks.run_checks({notebook: source}, limits=settings.Limits(**limits))[notebook]
    return {p: {**vars(v), "passed": v.passed} for p, v in verdicts.items() if parts is None or p in parts}


def _table(notebook: str) -> dict:
    return solutions.ACCUMULATION_MISTAKES if notebook == "accumulation" else solutions.ADAM_MISTAKES


def _strip_markers(source: str) -> str:
    return "\n".join(
        line
        for line in source.splitlines()
        if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line
    )


@pytest.mark.parametrize("name", sorted(spec.NOTEBOOKS))
def test_source_notebooks_hold_the_reference_solutions_and_no_outputs(name: str) -> None:
    nb = course.source(name)
    cell = repair.solution_source(nb, spec.notebook(name))
    assert cell is not None, f"{name}.ipynb has no cell with grade_id {spec.notebook(name).solution_id}"
    assert _strip_markers(cell).strip() == CORRECT[name].strip()
    graded = {
        c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")
    }
    assert set(graded) == {p.grade_id for p in spec.notebook(name).parts}
    for part in spec.notebook(name).parts:
        text = graded[part.grade_id].source
        hidden_part = text.split("### BEGIN HIDDEN TESTS")[1]
        assert (
            f'autograder.check("{name}", "{part.name}")' in hidden_part
        )  # hidden cells only call the package
        assert text.split("### BEGIN HIDDEN TESTS")[0].strip(), f"{part.grade_id} has no visible test"
        assert graded[part.grade_id].metadata["nbgrader"]["points"] == part.points
    imports = next(
        c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{name}_imports"
    )
    assert spec.notebook(name).prelude.strip() in imports  # the sandbox sees what the notebook imports
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", sorted(spec.NOTEBOOKS))
def test_correct_solution_passes_every_part(name: str) -> None:
    verdicts = _run(name, CORRECT[name])
    assert {p: v["status"] for p, v in verdicts.items()} == {
        p.name: "passed" for p in spec.notebook(name).parts
    }
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert all(v["device"].startswith(expected) for v in verdicts.values())


@pytest.fixture(scope="module")
def mistake_verdicts() -> dict:
    """Every known mistake checked once, two sandboxes at a time (each check is its own process)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:  # a fresh random seed each, as when grading
        futures = {key: pool.submit(_run, key[0], _table(key[0])[key[1]][0]) for key in MISTAKES}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.parametrize("notebook,mistake", MISTAKES)
def test_each_mistake_loses_only_its_own_parts_and_is_named_by_its_code(
    notebook: str, mistake: str, mistake_verdicts: dict
) -> None:
    _, code, lost, *maybe = _table(notebook)[mistake]
    verdicts = mistake_verdicts[notebook, mistake]
    failed = {p for p, v in verdicts.items() if not v["passed"]}
    assert lost <= failed <= lost | set(*maybe), {p: v["message"] for p, v in verdicts.items()}
    assert {verdicts[p]["mistake"] for p in failed} == {code}, {p: v["message"] for p, v in verdicts.items()}
    for part in failed:
        verdict = verdicts[part]
        assert verdict["message"]
        if code is None:
            assert verdict["hint"] == spec.notebook(notebook).part(part).hint
        else:  # the hint is the mistake's own, and a failed part names the mistake in its message
            assert verdict["hint"] == spec.MISTAKES[code].hint
            assert verdict["status"] != "failed" or spec.MISTAKES[code].label in verdict["message"]


def test_every_mistake_code_has_a_fixture_and_belongs_to_the_parts_that_name_it() -> None:
    fixtures = {
        entry[1]
        for table in (solutions.ACCUMULATION_MISTAKES, solutions.ADAM_MISTAKES)
        for entry in table.values()
    }
    assert fixtures - {None} == set(spec.MISTAKES)
    for graded in spec.NOTEBOOKS.values():
        for part in graded.parts:
            assert set(part.mistakes) <= {m.code for m in spec.MISTAKES.values() if m.notebook == graded.name}
    for table, name in ((solutions.ACCUMULATION_MISTAKES, "accumulation"), (solutions.ADAM_MISTAKES, "adam")):
        for _source, code, lost, *_ in table.values():
            assert code is None or all(code in spec.notebook(name).part(p).mistakes for p in lost)


def test_the_fixed_lab_table_one_mistake_costs_only_its_idea(mistake_verdicts: dict) -> None:
    """Issue 18's table: marks per notebook for a correct answer and for one mistake each."""

    def marks(notebook: str, mistake: str) -> int:
        return sum(v["passed"] for v in mistake_verdicts[notebook, mistake].values())

    assert marks("adam", "no_bias_correction") == 3
    assert marks("adam", "decoupled_weight_decay") == 4
    assert marks("adam", "t_per_parameter") == 3
    assert marks("adam", "eps_inside_sqrt") >= 3
    assert marks("accumulation", "no_final_partial_step") == 4
    assert marks("accumulation", "loss_not_scaled") == 4


def test_the_reference_adam_without_a_mistake_is_torch_optim_adam() -> None:
    """The judge names mistakes by re-running its own Adam with each; without one it must be torch's."""
    from autograder import cases, judge

    for hparams in (*cases.ADAM_SETTINGS, *cases.WEIGHT_DECAY_SETTINGS):
        runs = []
        for optimizer in (torch.optim.Adam, judge.ReferenceAdam):
            params = cases.adam_params(3, torch.device("cpu"))
            runs.append(
                cases._feed(
                    optimizer(params, **hparams), params, cases.adam_grads(3, 30, torch.device("cpu"))
                )
            )
        assert judge._compare_runs([runs[1]], [runs[0]], [str(hparams)]) is None


def test_the_course_materials_answers_are_caught_for_what_they_get_wrong() -> None:
    adam = _run("adam", solutions.MATERIAL_ADAM)
    assert {p: v["mistake"] for p, v in adam.items() if not v["passed"]} == {
        "first_step": "m_from_g_squared",  # m averages g * g
        "many_steps": "m_from_g_squared",
        "training_loop": "used_up_generator",  # model_params is read twice
        "weight_decay": None,  # no weight_decay keyword: an error that says so
    }, {p: v["message"] for p, v in adam.items()}
    assert "must accept weight_decay=" in adam["weight_decay"]["message"]
    accumulation = _run("accumulation", solutions.MATERIAL_ACCUMULATION)
    failed = {p for p, v in accumulation.items() if not v["passed"]}
    assert {"group_gradient", "losses"} <= failed, {p: v["message"] for p, v in accumulation.items()}


@pytest.mark.parametrize("style", sorted(solutions.ADAM_ZERO_GRAD_STYLES))
def test_a_zero_grad_that_clears_in_any_style_passes_every_part(style: str) -> None:
    verdicts = _run("adam", solutions.ADAM_ZERO_GRAD_STYLES[style])
    assert all(v["passed"] for v in verdicts.values()), {p: v["message"] for p, v in verdicts.items()}


def test_a_missing_weight_decay_keyword_is_an_error_that_says_so() -> None:
    no_keyword = solutions.ADAM.replace(", weight_decay=0.0):", "):\n        weight_decay = 0.0")
    verdict = _run("adam", no_keyword, ["first_step", "weight_decay"])
    assert verdict["first_step"]["passed"] and verdict["weight_decay"]["status"] == "error"
    assert "must accept weight_decay=" in verdict["weight_decay"]["message"]


def test_messages_say_what_was_seen(mistake_verdicts: dict) -> None:
    never_clears = mistake_verdicts["adam", "zero_grad_never_clears"]["training_loop"]["message"]
    assert "zero_grad() before step 2 left parameter 0's gradient non-zero" in never_clears
    used_up = mistake_verdicts["adam", "generator_consumed_twice"]["training_loop"]["message"]
    assert "the generator was used up" in used_up and "zero_grad" not in used_up
    decoupled = mistake_verdicts["adam", "decoupled_weight_decay"]["weight_decay"]["message"]
    assert "shrunk directly" in decoupled
    # Without bias correction the first step is (1 - 0.9) / sqrt(1 - 0.999) = 3.16 times Adam's, whatever the seed.
    assert (
        "3.16x as long as torch.optim.Adam's"
        in mistake_verdicts["adam", "no_bias_correction"]["first_step"]["message"]
    )
    not_divided = mistake_verdicts["accumulation", "loss_not_scaled"]["group_gradient"]["message"]
    assert "x the expected one" in not_divided


def test_delegating_adam_is_caught_by_behaviour_and_a_real_subclass_is_not() -> None:
    for key in ("wraps_torch_adam", "optim_by_getattr", "fused_kernel_by_getattr", "functional_adam"):
        verdict = _run("adam", solutions.ADAM_MISTAKES[key][0], ["first_step"])["first_step"]
        assert verdict["status"] == "disallowed", (key, verdict)
    verdicts = _run("adam", solutions.ADAM_SUBCLASS)
    assert all(v["passed"] for v in verdicts.values()), verdicts
    # In the jail the grader's files are not there at all.
    verdict = _run("adam", solutions.ADAM_MISTAKES["reads_grader_files"][0], ["weight_decay"])["weight_decay"]
    assert verdict["status"] == "error" and "does not define Adam" in verdict["message"]


def test_syntax_errors_and_missing_cells() -> None:
    verdicts = _run("adam", "class Adam(:\n", ["first_step"])
    assert (
        verdicts["first_step"]["status"] == "error"
        and "syntax error on line 1" in verdicts["first_step"]["message"]
    )
    assert _run("adam", None, ["training_loop"])["training_loop"]["status"] == "missing"


def test_loops_crashes_exits_and_stubs_are_contained() -> None:
    loop = (
        "def train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):\n"
        "    while True:\n        pass\n"
    )
    verdicts = _run("accumulation", loop, ["plain", "schedule"], part_timeout=2)
    assert [v["status"] for v in verdicts.values()] == ["timeout", "timeout"]
    crash = "import os\n" + loop.replace("while True:\n        pass", "os._exit(3)")
    verdicts = _run("accumulation", crash, ["plain"])
    assert verdicts["plain"]["status"] == "crashed" and "code 3" in verdicts["plain"]["message"]
    exits = "import sys\n" + loop.replace("while True:\n        pass", "sys.exit(0)")
    verdicts = _run("accumulation", exits, ["plain"])
    assert verdicts["plain"]["status"] == "error" and "SystemExit" in verdicts["plain"]["message"]
    stub = loop.replace("while True:\n        pass", "# YOUR CODE HERE\n    raise NotImplementedError()")
    verdicts = _run("accumulation", stub, ["losses"])
    assert "still the stub" in verdicts["losses"]["message"]
    hog = "import torch\n" + loop.replace(
        "while True:\n        pass", "return [torch.ones(2**31, 4)]"
    )  # 32 GiB
    verdicts = _run("accumulation", hog, ["plain"], memory_bytes=2 * 2**30)
    assert verdicts["plain"]["status"] == "limit" and "memory limit" in verdicts["plain"]["message"]


def test_nan_results_fail_with_a_clear_message() -> None:
    source = solutions.ADAM.replace("eps=1e-8,", "eps=0.0,")  # 0/0 where a gradient is exactly zero
    verdicts = _run("adam", source, ["first_step", "training_loop"])
    assert verdicts["first_step"]["status"] == "failed" and "NaN" in verdicts["first_step"]["message"]
    # The training loop is judged against the student's own update, which here is NaN: it says so.
    assert (
        "NaN" in verdicts["training_loop"]["message"] and "first_step" in verdicts["training_loop"]["message"]
    )


def test_check_runs_live_and_shows_only_the_message_and_hint(capsys) -> None:
    # Outside a notebook there is no solution cell in the history: the check says so, with the hint.
    with pytest.raises(autograder.HiddenTestFailure) as info:
        autograder.check("accumulation", "losses")
    shown = "\n".join(info.value._render_traceback_())
    assert "missing" in shown and "Hint: " + spec.notebook("accumulation").part("losses").hint in shown
    assert "def " not in shown
    with pytest.raises(KeyError, match="Unknown part"):
        autograder.check("accumulation", "nope")


# --------------------------------------------------------------------------- repair


def _ids(nb: nbformat.NotebookNode) -> list[str]:
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]


@pytest.mark.parametrize("name", sorted(spec.NOTEBOOKS))
def test_repair_restores_metadata_stripped_by_colab(name: str) -> None:
    release = course.source(name)
    student = course.colab(release, cell_id=None)  # every cell's metadata empty
    solution = course.cell_index(release, spec.notebook(name).solution_id)
    student.cells[solution].source = CORRECT[name]  # their answer, no markers
    fixed, notes = repair.repair(student, release, spec.notebook(name))
    assert _ids(fixed) == _ids(release)
    assert repair.solution_source(fixed, spec.notebook(name)) == CORRECT[name]
    assert any("restored from the release" in n for n in notes)
    nbformat.validate(fixed)


def test_repair_handles_deleted_duplicated_and_renamed_cells() -> None:
    release = course.source("accumulation")
    student = copy.deepcopy(release)
    test_ids = [p.grade_id for p in spec.ACCUMULATION.parts]
    student.cells = [
        c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") != test_ids[-1]
    ]
    solution = next(
        c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "accumulation_solution"
    )
    student.cells.insert(student.cells.index(solution) + 1, copy.deepcopy(solution))  # duplicated
    student.cells[student.cells.index(solution) + 2].metadata["nbgrader"]["grade_id"] = "renamed"
    fixed, notes = repair.repair(student, release, spec.ACCUMULATION)
    assert _ids(fixed) == _ids(release)  # each graded cell once, in order, the deleted one back
    assert any(test_ids[-1] in n for n in notes) and any("extra copy" in n for n in notes)


def test_load_notebook_explains_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [')
    with pytest.raises(repair.InvalidNotebook, match="not valid notebook JSON"):
        repair.load_notebook(bad)
    bad.write_text('{"hello": 1}')
    with pytest.raises(repair.InvalidNotebook, match="no list of cells"):
        repair.load_notebook(bad)


# --------------------------------------------------------------------------- collect


def _notebook_with(source: str) -> str:
    return nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]))


def test_check_command_grades_one_file(tmp_path: Path, capsys) -> None:
    from autograder.__main__ import main

    release = course.source("adam")
    nb = course.colab(release, cell_id=None)  # metadata stripped: the cell defining Adam is found anyway
    solution = course.cell_index(release, spec.notebook("adam").solution_id)
    nb.cells[solution].source = solutions.ADAM_MISTAKES["decoupled_weight_decay"][0]
    path = tmp_path / "Copy of adam.ipynb"
    nbformat.write(nb, path)
    assert main(["check", str(path), "--device", "cpu"]) == 1  # one part fails
    verdicts = json.loads(capsys.readouterr().out)
    assert {p: v["passed"] for p, v in verdicts.items()} == {
        p.name: p.name != "weight_decay" for p in spec.ADAM.parts
    }


def test_one_runner_for_both_notebooks_keeps_their_verdicts_apart() -> None:
    verdicts = checks.run_checks(
        {
            "accumulation": solutions.ACCUMULATION,
            "adam": solutions.ADAM_MISTAKES["generator_consumed_twice"][0],
        }
    )
    assert all(v.passed for v in verdicts["accumulation"].values())
    assert {p for p, v in verdicts["adam"].items() if not v.passed} == {"training_loop"}
