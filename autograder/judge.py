"""Judging: the references and the comparisons, on the grader's side of the jail only.

The jailed runner (:mod:`autograder.sandbox`) reports what the student's code did; this
module runs the reference on the same inputs (``torch.optim.Adam``, or the contract of
``train_epoch`` written out) and says, per part, whether they agree and if not, where.
References depend only on the seed and the device, so they are computed once and cached.
"""

from __future__ import annotations

from functools import lru_cache

from autograder import spec
from autograder.results import PASSED, Verdict


def judge(graded: spec.Notebook, part: str, result: object, seed: int, device: str, label: str) -> Verdict:
    """The verdict on one part from the runner's ``result`` for it."""
    hint = graded.part(part).hint

    def out(status: str, message: str = "") -> Verdict:
        return Verdict(part, status, message, "" if status == PASSED else hint, label, seed)

    if not isinstance(result, dict):
        return out("error", "the result could not be read")
    if result.get("tripped"):
        return out("disallowed", str(result["tripped"][0]) + " was called: implement the update yourself, with "
                   "ordinary tensor operations (subclassing torch.optim.Optimizer is fine)")  # fmt: skip
    if not result.get("ok"):
        return out(*explain_error(result))
    try:
        judges = ACCUMULATION_JUDGES if graded.name == "accumulation" else ADAM_JUDGES
        problem = judges[part](result["payload"], seed, _torch_device(device))
    except Exception as exc:  # malformed payloads are the student's; never crash the batch
        problem = f"the checker could not understand your results ({type(exc).__name__}: {str(exc)[:200]})"
    return out(PASSED) if problem is None else out("failed", problem)


def _difference(actual: object, expected, rtol: float, atol: float) -> str | None:  # noqa: ANN001
    """Why ``actual`` is not close to ``expected`` (None when it is)."""
    import torch

    if actual is None:
        return "is missing (None)"
    if not isinstance(actual, torch.Tensor):
        return f"is a {type(actual).__name__}, not a tensor"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"has shape {tuple(actual.shape)} instead of {tuple(expected.shape)}"
    a, e = actual.detach().double(), expected.detach().double()
    if not bool(torch.isfinite(a).all()):
        return "contains NaN or inf"
    diff = (a - e).abs()
    bad = diff > atol + rtol * e.abs()
    if bool(bad.any()):
        return f"is off by up to {diff.max().item():.3g} ({int(bad.sum())} of {bad.numel()} values)"
    return None


def explain_error(result: dict) -> tuple[str, str]:
    """(status, message) for a part whose code raised, with the most useful pointer first."""
    error = result.get("error") or "unknown error"
    extra = ""
    if error.startswith("MemoryError") or "can't allocate memory" in error or "not enough memory" in error:
        return "limit", "your code went past the memory limit of the grading jail (MemoryError)"
    if "NotImplementedError" in error:
        extra = " - the solution cell is still the stub: replace `raise NotImplementedError()` with your code"
    elif "leaf Variable that requires grad" in error:
        extra = " - update parameters inside `with torch.no_grad():` (or decorate step with @torch.no_grad())"
    elif error.startswith("TypeError") and "weight_decay" in error:
        extra = " - your Adam must accept weight_decay=... (a keyword argument of __init__, default 0.0)"
    elif "same device" in error or "Expected all tensors" in error:
        extra = " - create state with torch.zeros_like(param) so it lives on the parameter's device"
    first, _, where = error.partition("\n")
    message = f"your code raised {first}{extra}" + (f"\n{where}" if where else "")
    if result.get("setup_error") and "does not define" not in error:
        message += f"\n(the solution cell's top-level code also raised {result['setup_error']})"
    return "error", message


def _torch_device(device: str):  # noqa: ANN202
    import torch

    return torch.device(device)


def reference_train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):  # noqa: ANN001, ANN201
    """The contract, written plainly: one step per group of ``accumulation_steps`` batches (and one for
    a final partial group), each batch's loss divided by its group's size, one mean loss per step.
    Lives here, in the grader's process only: the sandbox never holds a reference."""
    model.train()
    n = len(iterator)
    losses, group = [], []
    for i, (images, labels) in enumerate(iterator):
        start = i - i % accumulation_steps
        size = min(accumulation_steps, n - start)  # the last group may be smaller
        loss = criterion(model(images.to(device)), labels.to(device))
        (loss / size).backward()
        group.append(loss.item())
        if len(group) == size:
            optimizer.step()
            optimizer.zero_grad()
            losses.append(sum(group) / size)
            group = []
    return losses


def _groups(n: int, k: int) -> list[range]:
    return [range(s, min(s + k, n)) for s in range(0, n, k)]


def _accumulation_cases(payload: list, part: str, seed: int, device) -> list[tuple[dict, dict]]:  # noqa: ANN001
    from autograder import cases

    pairs = []
    for i, (n, k) in enumerate(cases.ACCUMULATION_CASES[part]):
        ref = _reference_epoch(seed + 101 * i, n, k, device)
        pairs.append((payload[i], ref))
    return pairs


def _case(got: dict) -> str:
    return f"with {got['n']} batches and accumulation_steps={got['k']}"


def _check_returned(got: dict, expected: list[float]) -> str | None:
    returned = got["returned"]
    if returned["values"] is None:
        return f"{_case(got)} train_epoch returned a {returned['type']}, not a list of losses"
    values = returned["values"]
    if returned["length"] != len(expected):
        return f"{_case(got)} train_epoch returned {returned['length']} losses; expected {len(expected)} (one per optimizer step)"
    for j, (a, e) in enumerate(zip(values, expected)):
        if a is None or not abs(a - e) <= 1e-6 + 1e-4 * abs(e):
            shown = "not a number" if a is None else f"{a:.6g}"
            return f"{_case(got)} loss {j} you returned is {shown}; the mean of that group's batch losses is {e:.6g}"
    return None


def _judge_plain(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got, ref in _accumulation_cases(payload, "plain", seed, device):
        if got["steps"] != ref["steps"]:
            return f"{_case(got)} the optimizer stepped after batches {got['steps']}; plain training steps after every batch {ref['steps']}"
        for j, (a, e) in enumerate(zip(got["params"], ref["params"])):
            why = _difference(a, e, 1e-4, 1e-6)
            if why:
                return f"{_case(got)} parameter {j} after the epoch {why} compared with plain mini-batch training"
        problem = _check_returned(got, ref["returned"]["values"])  # same steps and weights: same losses
        if problem:
            return problem
    return None


def _judge_schedule(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got in payload:
        expected = [g[-1] + 1 for g in _groups(got["n"], got["k"])]
        if got["steps"] != expected:
            return f"{_case(got)} your optimizer stepped after batches {got['steps'] or 'none'}; expected after {expected}"
    return None


def _step_at(got: dict, batch: int) -> int | None:
    return got["steps"].index(batch) if batch in got["steps"] else None


def _judge_group_gradient(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got, ref in _accumulation_cases(payload, "group_gradient", seed, device):
        for j, batch in enumerate(ref["steps"]):
            at = _step_at(got, batch)
            if at is None:
                return f"{_case(got)} there was no optimizer step right after batch {batch}, so the update of that group could not be checked"
            for q, (a, e) in enumerate(zip(got["grads"][at], ref["grads"][j])):
                why = _difference(a, e, 1e-4, 1e-7)
                if why:
                    ratio = ""
                    if a is not None and e.abs().sum() > 0 and a.shape == e.shape:
                        ratio = f" (your gradient is {float((a * e).sum() / (e * e).sum()):.3g}x the expected one)"
                    return f"{_case(got)} at the step after batch {batch} the gradient of parameter {q} {why}{ratio}"
    return None


def _judge_partial_group(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for got, ref in _accumulation_cases(payload, "partial_group", seed, device):
        n = got["n"]
        at = _step_at(got, n)
        if at is None or at != len(got["steps"]) - 1:
            return f"{_case(got)} the last {n % got['k']} batch(es) form a partial group, but there was no final optimizer step after batch {n}"
        for q, (a, e) in enumerate(zip(got["grads"][at], ref["grads"][-1])):
            why = _difference(a, e, 1e-4, 1e-7)
            if why:
                return f"{_case(got)} the final partial group's gradient of parameter {q} {why} (it should be the gradient of the mean of that group's batch losses)"
    return None


def _replayed_losses(got: dict, seed: int, device) -> list[float]:  # noqa: ANN001
    """Each batch's loss at the weights the student's run had when it took that batch.

    Rebuilt here from the initial weights and the recorded steps (SGD with the recorded
    gradients), never from numbers the student's process reported as losses, so the
    returned losses are judged against values the solution cannot tamper with."""
    import torch
    from torch import nn

    from autograder import cases

    model = cases.tiny_model(seed, device)
    criterion = nn.CrossEntropyLoss()
    losses, applied = [], 0
    with torch.no_grad():
        for batch, (x, y) in enumerate(cases.batches(seed, got["n"]), start=1):
            losses.append(criterion(model(x.to(device)), y.to(device)).item())
            while applied < len(got["steps"]) and got["steps"][applied] <= batch:
                for p, g in zip(model.parameters(), got["grads"][applied]):
                    if isinstance(g, torch.Tensor) and g.shape == p.shape:
                        p.sub_(cases.LR_SGD * g.to(device=device, dtype=p.dtype))
                applied += 1
    return losses


def _judge_losses(payload: list, seed: int, device) -> str | None:  # noqa: ANN001
    for i, got in enumerate(payload):
        seen = _replayed_losses(got, seed + 101 * i, device)
        expected = [sum(seen[j] for j in g) / len(g) for g in _groups(got["n"], got["k"])]
        problem = _check_returned(got, expected)
        if problem:
            return problem
    return None


ACCUMULATION_JUDGES = {
    "plain": _judge_plain,
    "schedule": _judge_schedule,
    "group_gradient": _judge_group_gradient,
    "partial_group": _judge_partial_group,
    "losses": _judge_losses,
}


@lru_cache(maxsize=256)
def _reference_run(part: str, seed: int, device, optimizer: str = "Adam", decay_scale: float = 1.0) -> object:  # noqa: ANN001
    """A part's cases driver run with ``torch.optim.Adam`` (once per seed and device; callers only
    read it), or with a known mistake: another ``torch.optim`` ``optimizer`` (AdamW), or the
    weight decay scaled by ``decay_scale`` (0: weight_decay ignored)."""
    import torch.optim

    from autograder import cases

    def reference(params, weight_decay: float = 0.0, **hparams):  # noqa: ANN001, ANN003, ANN202
        return getattr(torch.optim, optimizer)(params, weight_decay=decay_scale * weight_decay, **hparams)

    return cases.ADAM_DRIVERS[part](reference, seed, device)


@lru_cache(maxsize=256)
def _reference_epoch(seed: int, n: int, k: int, device) -> dict:  # noqa: ANN001
    from autograder import cases

    return cases.run_train_epoch(reference_train_epoch, seed, n, k, device)


def _compare_params(
    got: list, expected: list, where: str, rtol: float = 1.3e-6, atol: float = 1e-5
) -> str | None:
    if len(got) != len(expected):
        return f"{where}: {len(got)} parameters came back instead of {len(expected)}"
    for q, (a, e) in enumerate(zip(got, expected)):
        why = _difference(a, e, rtol, atol)
        if why:
            return f"{where}, parameter {q} {why} compared with torch.optim.Adam"
    return None


def _judge_first_step(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    ref = _reference_run("first_step", seed, device)
    problem = _compare_params(payload["params"], ref["params"], "after the first step (lr=0.01)")
    if problem:
        start = cases.adam_params(seed, device)
        moved = [float((a - s.detach().cpu()).abs().max()) for a, s in zip(payload["params"], start)]
        if max(moved, default=0.0) > 0.05:
            problem += f"; your first step moved a parameter by {max(moved):.3g}, but Adam's first step is at most about lr=0.01"
    return problem


def _compare_runs(got: list, expected: list, labels: list[str], **tolerance: float) -> str | None:
    """Where the trajectories ``got`` (one per label) first part from the expected ones (None if never)."""
    if [len(g) for g in got] != [len(e) for e in expected]:
        return f"{len(got)} runs came back instead of {len(expected)}, or runs of the wrong length"
    for label, run, ref in zip(labels, got, expected):
        for t, (g, e) in enumerate(zip(run, ref), start=1):
            problem = _compare_params(g, e, f"{label}, after step {t} of {len(ref)}", **tolerance)
            if problem:
                return problem
    return None


def _judge_many_steps(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    ref = _reference_run("many_steps", seed, device)
    labels = [f"with {hp or 'defaults'}" for hp in cases.ADAM_SETTINGS]
    return _compare_runs(payload["trajectories"], ref["trajectories"], labels)


# Weight decays that go wrong in a typical way: the optimizer whose steps they take, and what that means.
DECAY_MISTAKES = (
    ("AdamW", 1.0, "your steps are torch.optim.AdamW's: you shrank the weights directly, as AdamW does, but "
                   "Adam's weight_decay adds weight_decay * param to the gradient, so it passes through m and v"),
    ("Adam", 0.0, "your steps are those of Adam without weight decay: your Adam ignored weight_decay"),
    ("Adam", 2.0, "your decay term is twice Adam's: check the gradient of (weight_decay / 2) * ||param||**2"),
    ("Adam", 0.5, "your decay term is half Adam's: check the gradient of (weight_decay / 2) * ||param||**2"),
)  # fmt: skip


def _judge_weight_decay(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    labels = [f"with {hp}" for hp in cases.WEIGHT_DECAY_SETTINGS]

    def part_from(optimizer: str, decay_scale: float) -> str | None:
        ref = _reference_run("weight_decay", seed, device, optimizer, decay_scale)
        return _compare_runs(payload["trajectories"], ref["trajectories"], labels)

    problem = part_from("Adam", 1.0)
    if problem is None:
        return None
    why = next((why for optimizer, scale, why in DECAY_MISTAKES if part_from(optimizer, scale) is None), None)
    return f"{problem}; {why}" if why else problem


def _judge_training_loop(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    from autograder import cases

    start = [p.detach().cpu() for p in cases.tiny_model(seed, device).parameters()]
    got = payload["trajectory"]
    if all(_difference(a, s, 0, 0) is None for a, s in zip(got[-1], start)):
        why = "never changed the parameters"
        if any(_difference(a, s, 0, 0) for a, s in zip(payload["list_step"], start)):
            why += ", though it does given a list: the generator was used up before step() read it"
        return f"given model.parameters() (a generator), your optimizer {why}"
    for t, left in enumerate(payload["uncleared"], start=1):
        if left:
            return f"in the training loop, zero_grad() before step {t} left parameter {left[0]}'s gradient non-zero, so backward() added the new gradient to the old one"
    ref = _reference_run("training_loop", seed, device)
    return _compare_runs([got], [ref["trajectory"]], ["in a training loop given model.parameters()"])


def _judge_device_state(payload: dict, seed: int, device) -> str | None:  # noqa: ANN001
    if payload["misplaced"]:
        return f"with float64 parameters on {device}, your optimizer keeps {payload['misplaced'][0]}"
    if payload["meta_misplaced"]:
        return (
            f"with parameters on another device (meta), your optimizer keeps {payload['meta_misplaced'][0]}"
        )
    ref = _reference_run("device_state", seed, device)
    where = [f"with float64 parameters on {device}"]
    problem = _compare_runs([payload["trajectory"]], [ref["trajectory"]], where, rtol=1e-9, atol=1e-12)
    return problem and problem + " (are m and v float64 like the parameters?)"


ADAM_JUDGES = {
    "first_step": _judge_first_step,
    "many_steps": _judge_many_steps,
    "training_loop": _judge_training_loop,
    "weight_decay": _judge_weight_decay,
    "device_state": _judge_device_state,
}
