"""Lectures 6c (preconditioners), 7 (comparing optimisers: seeds, test accuracy, a sparse task) and 7b (schedules,
AdamW, clipping): they are registered, their exercises have a self-check and a revealable solution, the solutions
pass their own self-checks and wrong answers do not; the bag-of-words task and the benchmark's floor are sound.

(tests/test_lectures.py runs every lecture, these included, top to bottom in fast mode.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import torch

from benchmarks import bench_lectures
from course_utils.bag_of_words import BagOfWords, newsgroups_loaders
from course_utils.training import evaluate, train
from tools import notebooks as nbtools

ROOT = Path(__file__).resolve().parent.parent
OWN = {
    "06c": ROOT / "notebooks" / "06c_preconditioners.ipynb",
    "07": ROOT / "notebooks" / "07_comparing_optimizers.ipynb",
    "07b": ROOT / "notebooks" / "07b_schedules_and_adamw.ipynb",
}
# An answer that each exercise's self-check must reject (per answer variable).
WRONG = {
    "predicted_adagrad_steps": "700000",
    "newton_P": "[[1.0, 0.0], [0.0, 25.0]]",
    "newton_lr": "1.0",
    "predicted_kappa_30": "1.0",
    "needed_gap_points": "100.0",
    "predicted_ratio": '"a"',
    "mean_cosine_fraction": "0.637",
    "predicted_lr_at_50": "0.15",
    "predicted_layer_norm": "1.0",
}


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbtools.NB_VERSION)


def _tagged(nb: nbformat.NotebookNode, tag: str) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def _solution_code(markdown: str) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", markdown, flags=re.S)
    return code


def test_new_lectures_are_registered() -> None:
    """Every tool that globs the lectures finds them, and the README's lecture table lists them."""
    found = {path.name for path in ROOT.glob(nbtools.LECTURE_GLOB)}
    readme = (ROOT / "README.md").read_text()
    for path in OWN.values():
        assert path.name in found, f"{path.name} is not matched by {nbtools.LECTURE_GLOB}"
        assert f"`{path.stem}`" in readme, f"README's lecture table does not list {path.stem}"


@pytest.mark.parametrize("number", sorted(OWN))
def test_exercises_have_a_self_check_and_a_revealable_solution(number: str) -> None:
    nb = _read(OWN[number])
    answers, checks, solutions = (
        _tagged(nb, t) for t in ("exercise-answer", "exercise-check", "exercise-solution")
    )
    assert 2 <= len(answers) <= 3, f"{number}: {len(answers)} exercises"
    assert checks == [i + 1 for i in answers] and solutions == [i + 2 for i in answers], (
        "answer, check, solution"
    )
    for a, c, s in zip(answers, checks, solutions):
        assert nb.cells[a - 1].cell_type == "markdown" and nb.cells[a - 1].source.startswith("### Exercise")
        assert "= None" in nb.cells[a].source, "the answer cell starts unanswered"
        assert "Not answered yet" in nb.cells[c].source and "✓" in nb.cells[c].source
        assert nb.cells[s].source.startswith("<details>") and "</details>" in nb.cells[s].source
        assert _solution_code(nb.cells[s].source).strip()


def _with_answers(nb: nbformat.NotebookNode, answer_for: callable) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a copy
    for a, s in zip(_tagged(nb, "exercise-answer"), _tagged(nb, "exercise-solution")):
        nb.cells[a].source += "\n" + answer_for(nb.cells[a].source, nb.cells[s].source)
    return nb


def _execute(nb: nbformat.NotebookNode, folder: Path) -> list[str]:
    """Run ``nb`` in fast mode and return the text each self-check cell printed."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(OWN["07"].parent)}}
    )
    client.execute(env=nbtools.kernel_env(fast=True))
    return [
        "".join(out.get("text", "") for out in nb.cells[i].outputs if out.get("output_type") == "stream")
        for i in _tagged(nb, "exercise-check")
    ]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("number", sorted(OWN))
def test_solutions_pass_and_wrong_answers_fail_the_self_checks(number: str, tmp_path: Path) -> None:
    """The revealed solution, pasted into the answer cell, passes its self-check; a wrong answer is told so.

    Both in one run: the wrong answers go into a second copy of each answer + check cell pair, appended at the end.
    """
    nb = _read(OWN[number])
    solved = _with_answers(nb, lambda answer, solution: _solution_code(solution))
    wrong_cells = []
    for a in _tagged(nb, "exercise-answer"):
        names = re.findall(r"^(\w+) = None", nb.cells[a].source, flags=re.M)
        wrong = "\n".join(f"{name} = {WRONG[name]}" for name in names)
        wrong_cells += [nbformat.v4.new_code_cell(wrong), nbformat.v4.new_code_cell(nb.cells[a + 1].source)]
    for cell in wrong_cells[1::2]:
        cell.metadata["tags"] = ["exercise-check"]
    solved.cells += wrong_cells
    outputs = _execute(solved, tmp_path)
    n = len(_tagged(nb, "exercise-check"))
    right, wrong = outputs[:n], outputs[n:]
    assert len(wrong) == n
    for text in right:
        assert "✓" in text and "✗" not in text, f"{number}: a solution fails its own self-check: {text!r}"
    for text in wrong:
        assert "✗" in text and "✓" not in text, f"{number}: a wrong answer passes the self-check: {text!r}"


def test_bag_of_words_task_is_sparse_and_learnable() -> None:
    train_loader, val_loader, test_loader = newsgroups_loaders(subset=3000, val_size=1000, seed=0)
    assert (len(train_loader.labels), len(val_loader.labels)) == (3000, 1000)
    assert train_loader.words.shape == (3000, 200) and len(train_loader.classes) == 20

    # Every epoch is reshuffled from torch's global RNG, so train(seed=...) fixes the order; evaluation order is fixed.
    torch.manual_seed(0)
    first = [labels for _, labels in train_loader]
    assert not torch.equal(torch.cat(first), torch.cat([labels for _, labels in train_loader]))
    torch.manual_seed(0)
    assert torch.equal(torch.cat(first), torch.cat([labels for _, labels in train_loader]))
    assert len(train_loader) == len(first) == 47
    assert torch.equal(torch.cat([labels for _, labels in val_loader]), val_loader.labels)

    # A word absent from a batch gets exactly zero gradient: the features are sparse.
    model = BagOfWords(train_loader.vocab_size, len(train_loader.classes))
    words, labels = next(iter(train_loader))
    torch.nn.functional.cross_entropy(model(words), labels).backward()
    absent = torch.ones(train_loader.vocab_size, dtype=torch.bool)
    absent[words.unique()] = False
    assert absent.float().mean() > 0.8, "a batch of 64 posts uses a small part of the vocabulary"
    assert (model.embedding.weight.grad[absent] == 0).all() and (
        model.embedding.weight.grad[~absent] != 0
    ).any()

    # The course's train()/evaluate() drive it, and Adagrad learns it far above chance (1/20).
    train(
        train_loader,
        model,
        torch.optim.Adagrad(model.parameters(), lr=3.0),
        n_epochs=2,
        seed=0,
        progress=False,
    )
    assert evaluate(test_loader, model)[1] > 0.3


def test_bench_counts_only_mnist_batches_towards_the_floor(tmp_path: Path) -> None:
    """The benchmark's hidden first cell counts MNIST images; other tasks' batches are counted apart."""
    import course_utils.training as training

    counts = tmp_path / "counts.json"
    original = training.train_epoch
    namespace: dict = {}
    try:
        exec(bench_lectures.COUNTER_CELL.format(path=str(counts)), namespace)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        mnist = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))] * 3
        training.train_epoch(
            mnist,
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            torch.nn.CrossEntropyLoss(),
            "cpu",
            False,
        )
        bow = BagOfWords(50)
        docs = [(torch.randint(0, 50, (4, 40)), torch.randint(0, 2, (4,)))] * 2
        training.train_epoch(
            docs, bow, torch.optim.SGD(bow.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), "cpu", False
        )
    finally:
        training.train_epoch = original
    assert namespace["_seen"] == {"images": 24, "steps": 3, "other_steps": 2}


def test_bench_bare_epoch_is_timed() -> None:
    seconds = bench_lectures.bare_epoch_seconds(repeats=1, steps=3, batch_size=4)
    assert 0 < seconds < 60
