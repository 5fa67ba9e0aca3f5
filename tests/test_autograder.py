"""The lab's hidden checks, notebook repair and submission collection (no nbgrader run here).

Every check runs the real sandbox on real solution-cell sources and compares with
torch.optim / the written-out contract; each known mistake must fail exactly the parts it
breaks, so partial work earns partial marks and no mistake earns a mark it should not.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import nbformat
import pytest
import torch

from autograder import hidden, pipeline, repair, solutions, spec

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "assignments" / "source" / spec.ASSIGNMENT
CORRECT = {"accumulation": solutions.ACCUMULATION, "adam": solutions.ADAM}
MISTAKES = [(nb, key) for nb, table in (("accumulation", solutions.ACCUMULATION_MISTAKES),
                                        ("adam", solutions.ADAM_MISTAKES)) for key in table]  # fmt: skip


def _table(notebook: str) -> dict:
    return solutions.ACCUMULATION_MISTAKES if notebook == "accumulation" else solutions.ADAM_MISTAKES


def _strip_markers(source: str) -> str:
    return "\n".join(
        line
        for line in source.splitlines()
        if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line
    )


def _source_notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(SOURCE / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", sorted(spec.NOTEBOOKS))
def test_source_notebooks_hold_the_reference_solutions_and_no_outputs(name: str) -> None:
    nb = _source_notebook(name)
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
    verdicts = hidden.run_checks(name, CORRECT[name], seed=1234)
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
        futures = {key: pool.submit(hidden.run_checks, key[0], _table(key[0])[key[1]][0]) for key in MISTAKES}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.parametrize("notebook,mistake", MISTAKES)
def test_each_mistake_fails_exactly_the_parts_it_breaks(
    notebook: str, mistake: str, mistake_verdicts: dict
) -> None:
    _, broken, *maybe = _table(notebook)[mistake]
    verdicts = mistake_verdicts[notebook, mistake]
    failed = {p for p, v in verdicts.items() if not v["passed"]}
    assert broken <= failed <= broken | set(*maybe), {p: v["message"] for p, v in verdicts.items()}
    for part in failed:
        assert verdicts[part]["message"] and verdicts[part]["hint"] == spec.notebook(notebook).part(part).hint


def test_cheats_are_caught_at_run_time_not_only_by_the_static_rules() -> None:
    # getattr(torch, "op" + "tim") passes the static rules; the tripwire stops it.
    source = solutions.ADAM_MISTAKES["optim_by_getattr"][0]
    assert hidden.static_problems(source, "adam") == []
    verdict = hidden.run_checks("adam", source, parts=["first_step"])["first_step"]
    assert verdict["status"] == "disallowed" and "torch.optim.Adam" in verdict["message"]
    # Reading the grader's files is refused by the audit hook, even when the exception is swallowed.
    source = solutions.ADAM_MISTAKES["reads_grader_files"][0]
    assert hidden.static_problems(source, "adam") == []
    verdict = hidden.run_checks("adam", source, parts=["zero_grad"])["zero_grad"]
    assert verdict["status"] == "disallowed" and "not allowed while grading" in verdict["message"]


def test_static_rules() -> None:
    assert hidden.static_problems("from torch.optim import Adam\n", "adam")
    assert hidden.static_problems("import torch.optim as optim\n", "adam")
    assert not hidden.static_problems("import torch.optim as optim\n", "accumulation")
    assert hidden.static_problems("import importlib\n", "accumulation") == ["import importlib"]
    assert hidden.static_problems("x = open('f').read()\n", "accumulation") == ["open()"]
    assert hidden.static_problems("import autograder\n", "accumulation") == ["import autograder"]
    verdicts = hidden.run_checks("adam", "class Adam(:\n", parts=["first_step"])
    assert (
        verdicts["first_step"]["status"] == "error"
        and "syntax error on line 1" in verdicts["first_step"]["message"]
    )


def test_loops_crashes_exits_and_stubs_are_contained() -> None:
    loop = "def train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):\n    while True:\n        pass\n"
    verdicts = hidden.run_checks("accumulation", loop, parts=["plain", "schedule"], part_timeout=2)
    assert [v["status"] for v in verdicts.values()] == ["timeout", "timeout"]
    crash = "import os\n" + loop.replace("while True:\n        pass", "os._exit(3)")
    verdicts = hidden.run_checks("accumulation", crash, parts=["plain"])
    assert verdicts["plain"]["status"] == "crashed" and "exit code 3" in verdicts["plain"]["message"]
    exits = "import sys\n" + loop.replace("while True:\n        pass", "sys.exit(0)")
    verdicts = hidden.run_checks("accumulation", exits, parts=["plain"])
    assert verdicts["plain"]["status"] == "error" and "SystemExit" in verdicts["plain"]["message"]
    stub = loop.replace("while True:\n        pass", "# YOUR CODE HERE\n    raise NotImplementedError()")
    verdicts = hidden.run_checks("accumulation", stub, parts=["losses"])
    assert "still the stub" in verdicts["losses"]["message"]
    assert hidden.run_checks("adam", None, parts=["zero_grad"])["zero_grad"]["status"] == "missing"


def test_nan_results_fail_with_a_clear_message() -> None:
    source = solutions.ADAM.replace("eps=1e-8):", "eps=0.0):")  # 0/0 where a gradient is exactly zero
    verdicts = hidden.run_checks("adam", source, parts=["first_step", "zero_grad"])
    assert verdicts["first_step"]["status"] == "failed" and "NaN" in verdicts["first_step"]["message"]
    assert verdicts["zero_grad"]["passed"]


def test_check_reads_the_graders_verdicts_and_shows_only_a_hint(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "verdicts.json"
    good = hidden.verdict("plain", "passed", device="cpu")
    bad = hidden.verdict(
        "losses", "failed", "loss 0 is 2.0; expected 1.0", device="cpu", hint="Return the mean."
    )
    path.write_text(json.dumps({"accumulation": {"plain": good, "losses": bad}}))
    monkeypatch.setenv("AUTOGRADER_VERDICTS", str(path))
    monkeypatch.setenv("AUTOGRADER_WAIT", "0.2")
    hidden.check("accumulation", "plain")
    assert "passed on cpu" in capsys.readouterr().out
    with pytest.raises(hidden.HiddenTestFailure) as info:
        hidden.check("accumulation", "losses")
    shown = "\n".join(info.value._render_traceback_())
    assert "expected 1.0" in shown and "Hint: Return the mean." in shown and "def " not in shown
    with pytest.raises(hidden.HiddenTestFailure, match="no verdict was recorded"):
        hidden.check("accumulation", "schedule")
    with pytest.raises(KeyError, match="Unknown part"):
        hidden.check("accumulation", "nope")


# --------------------------------------------------------------------------- repair


def _strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What Colab-style editors do: cell metadata and ids gone, notebook metadata replaced."""
    out = copy.deepcopy(nb)
    for cell in out.cells:
        cell.metadata = {}
        cell.pop("id", None)
    out.metadata = {
        "colab": {"provenance": []},
        "kernelspec": {"name": "python3", "display_name": "Python 3"},
    }
    out.nbformat_minor = 0  # v4.0: cells need no ids
    return out


def _ids(nb: nbformat.NotebookNode) -> list[str]:
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]


@pytest.mark.parametrize("name", sorted(spec.NOTEBOOKS))
def test_repair_restores_metadata_stripped_by_colab(name: str) -> None:
    release = _source_notebook(name)
    student = _strip(release)
    student.cells[4 if name == "accumulation" else 4].source = CORRECT[name]  # their answer, no markers
    fixed, notes = repair.repair(student, release, spec.notebook(name))
    assert _ids(fixed) == _ids(release)
    assert repair.solution_source(fixed, spec.notebook(name)) == CORRECT[name]
    assert any("restored from the release" in n for n in notes)
    nbformat.validate(fixed)


def test_repair_handles_deleted_duplicated_and_renamed_cells() -> None:
    release = _source_notebook("accumulation")
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


@pytest.fixture
def course(tmp_path: Path) -> pipeline.Course:
    root = tmp_path / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text((ROOT / "assignments" / "nbgrader_config.py").read_text())
    return pipeline.Course(root)


def test_collect_understands_folders_forms_and_lms_exports(tmp_path: Path, course: pipeline.Course) -> None:
    uploads = tmp_path / "uploads"
    (uploads / "alice").mkdir(parents=True)
    (uploads / "alice" / "accumulation.ipynb").write_text(_notebook_with("def train_epoch(): pass"))
    (uploads / "Dan Brown_555_assignsubmission_file_").mkdir()
    (uploads / "Dan Brown_555_assignsubmission_file_" / "Copy of adam.ipynb").write_text(
        _notebook_with("class Adam: pass")
    )
    (uploads / "smithjohn_LATE_1234_5678_adam-1.ipynb").write_text(_notebook_with("class Adam: pass"))
    old = uploads / "accumulation - Carol Smith.ipynb"
    new = uploads / "my work - Carol Smith.ipynb"  # named after nothing: recognised by its content
    old.write_text(_notebook_with("def train_epoch(): return 'old'"))
    new.write_text(_notebook_with("def train_epoch(): return 'new'"))
    os.utime(old, (1_700_000_000, 1_700_000_000))
    os.utime(new, (1_700_000_500, 1_700_000_500))
    (uploads / "notes.ipynb").write_text(_notebook_with("print('hi')"))

    summary = pipeline.collect(course, uploads)
    assert summary["students"] == ["alice", "carol_smith", "dan_brown", "smithjohn"]
    sub = course.submitted
    assert (
        "'new'" in (sub / "carol_smith" / spec.ASSIGNMENT / "accumulation.ipynb").read_text()
    )  # latest wins
    assert (sub / "dan_brown" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "smithjohn" / spec.ASSIGNMENT / "adam.ipynb").exists()
    assert (sub / "alice" / spec.ASSIGNMENT / "timestamp.txt").exists()
    assert any("notes.ipynb" in s and "whose" in s for s in summary["skipped"])


def test_collect_with_a_custom_pattern_and_clear_errors(tmp_path: Path, course: pipeline.Course) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "s123456__adam.ipynb").write_text(_notebook_with("class Adam: pass"))
    summary = pipeline.collect(course, uploads, r"(?P<student>s\d+)__(?P<notebook>\w+)")
    assert summary["students"] == ["s123456"]
    with pytest.raises(pipeline.PipelineError, match="not a folder"):
        pipeline.collect(course, tmp_path / "missing")
    assert pipeline.slug("  Jane  O'Neil ") == "jane_o_neil" and pipeline.slug("JD@uni.edu") == "jd"


def test_check_command_grades_one_file(tmp_path: Path, capsys) -> None:
    from autograder.__main__ import main

    nb = _strip(_source_notebook("adam"))  # metadata stripped: the cell defining Adam is found anyway
    nb.cells[4].source = solutions.ADAM_MISTAKES["zero_grad_allocates"][0]
    path = tmp_path / "Copy of adam.ipynb"
    nbformat.write(nb, path)
    assert main(["check", str(path), "--device", "cpu"]) == 1  # one part fails
    verdicts = json.loads(capsys.readouterr().out)
    assert {p: v["passed"] for p, v in verdicts.items()} == {
        p.name: p.name != "zero_grad" for p in spec.ADAM.parts
    }


def test_one_sandbox_for_both_notebooks_keeps_their_verdicts_apart() -> None:
    snooping = "import os\n_ = os.listdir(os.environ['PYTHONPATH'].split(os.pathsep)[0])\n"
    verdicts = hidden.run_many(
        {
            "accumulation": snooping + solutions.ACCUMULATION,
            "adam": solutions.ADAM_MISTAKES["generator_consumed_twice"][0],
        }
    )
    assert {v["status"] for v in verdicts["accumulation"].values()} == {"disallowed"}
    assert {p for p, v in verdicts["adam"].items() if not v["passed"]} == {"generator"}
