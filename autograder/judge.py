"""Judging: the references and the comparisons, on the grader's side of the jail only.

The jailed runner (:mod:`autograder.sandbox`) reports what the student's code did; this
module says, per part, whether that is right and, when it is not, which known mistake it is.

* ``first_step`` and ``many_steps`` judge the update maths against ``torch.optim.Adam``.
* The other Adam parts judge their idea *relative to the student's own update*: the driver
  ran the student's class twice (a generator and ``zero_grad()`` against a list and fresh
  gradients; ``weight_decay=wd`` against ``weight_decay=0`` fed the penalised gradient), so a
  mistake in the maths costs only the parts about the maths. Before comparing, a probe
  checks that the update is one at all: it moves the parameters, against the gradient.
* The accumulation parts judge one idea each against the contract written out
  (:func:`reference_train_epoch`), on inputs that keep the ideas apart (full groups only for
  the gradient, a one-batch final group for the partial group, the student's own groups for
  the returned losses).

A failed part is explained by re-running the reference *with* each known mistake: the one
whose results the student's match is named by its code (:data:`autograder.spec.MISTAKES`).
References depend only on the seed and the device, so they are computed once and cached.
This module imports neither the registry nor the results at load time: the registry imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial


@dataclass(frozen=True)
class Finding:
    """Why a part failed, and the code of the known mistake that explains it (None: none does)."""

    message: str
    mistake: str | None = None


def judge(graded, part_name: str, result: object, seed: int, device: str, label: str):
    """The :class:`~autograder.results.Verdict` on one part of ``graded`` from the runner's ``result``."""
    from autograder.results import PASSED, Verdict
    from autograder.spec import MISTAKES

    part = graded.part(part_name)

    def out(status: str, finding: Finding | None = None) -> Verdict:
        if status == PASSED:
            return Verdict(part.name, PASSED, "", "", label, seed)
        mistake = finding.mistake if finding else None
        message = finding.message if finding else ""
        if mistake is not None and status == "failed":
            message += f"; your results match a known mistake: {MISTAKES[mistake].label}"
        hint = MISTAKES[mistake].hint if mistake else part.hint
        return Verdict(part.name, status, message, hint, label, seed, mistake)

    if not isinstance(result, dict):
        return out("error", Finding("the result could not be read"))
    if result.get("tripped"):
        what = str(result["tripped"][0])[:200]
        return out(
            "disallowed",
            Finding(
                f"{what} was called: implement the update yourself, with ordinary "
                "tensor operations (subclassing torch.optim.Optimizer is fine)",
                "delegated",
            ),
        )
    if not result.get("ok"):
        return out(*explain_error(result))
    try:
        finding = part.judge(result["payload"], seed, _torch_device(device), **part.driver_args)
    except Exception as exc:  # malformed payloads are the student's; never crash the batch
        finding = Finding(
            f"the checker could not understand your results ({type(exc).__name__}: {str(exc)[:200]})"
        )
    if finding is not None and finding.mistake not in (None, *part.mistakes):
        raise AssertionError(
            f"the judge of {graded.name}/{part.name} named {finding.mistake!r}, not one of its mistakes"
        )
    return out(PASSED) if finding is None else out("failed", finding)


def explain_error(result: dict) -> tuple[str, Finding]:
    """(status, finding) for a part whose code raised, with the most useful pointer first."""
    error = str(result.get("error") or "unknown error")
    extra = ""
    if error.startswith("MemoryError") or "can't allocate memory" in error or "not enough memory" in error:
        return "limit", Finding("your code went past the memory limit of the grading jail (MemoryError)")
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
    setup_error = result.get("setup_error")
    if setup_error and "does not define" not in error:
        message += f"\n(the solution cell's top-level code also raised {str(setup_error)[:600]})"
    return "error", Finding(message)


def _torch_device(device: str):
    import torch

    return torch.device(device)


# ----------------------------------------------------------------------------- comparing


def _difference(actual: object, expected, rtol: float, atol: float) -> str | None:
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


def _same(actual: object, expected, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether two tensors (or nested lists of them) agree, NaN matching NaN: how a mistake is recognised."""
    import torch

    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(_same(actual[key], expected[key], rtol, atol) for key in expected)
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(_same(a, e, rtol, atol) for a, e in zip(actual, expected))
        )
    if expected is None or not isinstance(actual, torch.Tensor):
        return actual is None and expected is None
    return tuple(actual.shape) == tuple(expected.shape) and bool(
        torch.allclose(actual.detach().double(), expected.detach().double(), rtol, atol, equal_nan=True)
    )


def _compare_params(
    got: list, expected: list, where: str, against: str, rtol: float, atol: float
) -> str | None:
    if len(got) != len(expected):
        return f"{where}: {len(got)} parameters came back instead of {len(expected)}"
    for q, (a, e) in enumerate(zip(got, expected)):
        why = _difference(a, e, rtol, atol)
        if why:
            return f"{where}, parameter {q} {why} compared with {against}"
    return None


def _compare_runs(
    got: list, expected: list, labels: list[str], against: str = "torch.optim.Adam", rtol: float = 1.3e-6,
    atol: float = 1e-5,
) -> str | None:  # fmt: skip
    """Where the trajectories ``got`` (one per label) first part from the expected ones (None if never)."""
    if [len(g) for g in got] != [len(e) for e in expected]:
        return f"{len(got)} runs came back instead of {len(expected)}, or runs of the wrong length"
    for label, run, ref in zip(labels, got, expected):
        for t, (g, e) in enumerate(zip(run, ref), start=1):
            problem = _compare_params(g, e, f"{label}, after step {t} of {len(ref)}", against, rtol, atol)
            if problem:
                return problem
    return None


# ----------------------------------------------------------------------------- Adam


class ReferenceAdam:
    """Adam written out as torch.optim.Adam computes it, optionally with one known ``mistake``.

    Run without a mistake it takes torch.optim.Adam's steps (a test holds it to that); with
    one, it takes the steps a student making that mistake takes, so the judge can name it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, mistake=None):
        import torch

        self.params = list(params)
        self.lr, self.eps, self.weight_decay, self.mistake = lr, eps, weight_decay, mistake
        self.betas = betas[::-1] if mistake == "betas_swapped" else tuple(betas)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0  # step() calls
        self.counted = 0  # the per-parameter counter of the "t_per_parameter" mistake

    def step(self) -> None:
        import torch

        beta_1, beta_2 = self.betas
        self.t += 1
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                if p.grad is None:
                    continue
                g = p.grad + self.weight_decay * p if self.weight_decay else p.grad
                m.mul_(beta_1).add_(g * g if self.mistake == "m_from_g_squared" else g, alpha=1 - beta_1)
                v.mul_(beta_2).add_(g.abs() if self.mistake == "v_from_abs_g" else g * g, alpha=1 - beta_2)
                self.counted += 1
                t = {"bias_correction_t0": self.t - 1, "t_per_parameter": self.counted}.get(
                    self.mistake, self.t
                )
                c1, c2 = (
                    (1.0, 1.0) if self.mistake == "no_bias_correction" else (1 - beta_1**t, 1 - beta_2**t)
                )
                m_hat = m if self.mistake == "m_not_m_hat" else m / c1
                v_hat = v / c2
                denom = (
                    (v_hat + self.eps).sqrt()
                    if self.mistake == "eps_inside_sqrt"
                    else v_hat.sqrt() + self.eps
                )
                p.sub_(self.lr * m_hat / denom)


# The update's known mistakes, in the order they are tried (a student's run matches at most one).
ADAM_MATHS = ("no_bias_correction", "bias_correction_t0", "t_per_parameter", "eps_inside_sqrt", "m_not_m_hat",
              "betas_swapped", "v_from_abs_g", "m_from_g_squared")  # fmt: skip


@lru_cache(maxsize=512)
def _adam_run(driver: str, seed: int, device, mistake: str | None = None) -> dict:
    """``cases.<driver>`` run with torch.optim.Adam, or with :class:`ReferenceAdam` making ``mistake``."""
    import torch.optim

    from autograder import cases

    optimizer = torch.optim.Adam if mistake is None else partial(ReferenceAdam, mistake=mistake)
    return getattr(cases, driver)(optimizer, seed, device)


def _maths_mistake(driver: str, key: str, got: object, seed: int, device) -> str | None:
    """The known mistake in the update whose run of ``driver`` gives what the student's gave (``got``)."""
    return next((code for code in ADAM_MATHS if _same(got, _adam_run(driver, seed, device, code)[key])), None)


def _never_moved(trajectory: list, start: list) -> bool:
    """Whether every recorded set of parameters is exactly where the run started."""
    import torch

    return all(
        isinstance(a, torch.Tensor) and a.shape == s.shape and torch.equal(a.cpu(), s.detach().cpu())
        for params in trajectory for a, s in zip(params, start)
    )  # fmt: skip


def first_step(payload: dict, seed: int, device) -> Finding | None:
    from autograder import cases

    if _never_moved([payload["params"]], cases.adam_params(seed, device)):
        return Finding("your step() did not change the parameters", "no_update")
    ref = _adam_run("run_first_step", seed, device)["params"]
    problem = _compare_params(
        payload["params"], ref, "after the first step (lr=0.01)", "torch.optim.Adam", 1.3e-6, 1e-5
    )
    if problem is None:
        return None
    start = cases.adam_params(seed, device)
    mine = sum(
        float((a.double() - s.detach().cpu().double()).abs().sum()) for a, s in zip(payload["params"], start)
    )
    adams = sum(float((e.double() - s.detach().cpu().double()).abs().sum()) for e, s in zip(ref, start))
    if (
        mine == mine and adams > 0 and abs(mine / adams - 1) > 0.01
    ):  # not NaN: a ratio the seed does not change
        problem += f"; your first step is {mine / adams:.3g}x as long as torch.optim.Adam's"
    return Finding(problem, _maths_mistake("run_first_step", "params", payload["params"], seed, device))


def many_steps(payload: dict, seed: int, device) -> Finding | None:
    from autograder import cases

    if all(
        _never_moved(run, cases.adam_params(seed + i, device))
        for i, run in enumerate(payload["trajectories"])
    ):
        return Finding("your step() did not change the parameters", "no_update")
    ref = _adam_run("run_many_steps", seed, device)["trajectories"]
    labels = [f"with {hp or 'defaults'}" for hp in cases.ADAM_SETTINGS]
    problem = _compare_runs(payload["trajectories"], ref, labels)
    if problem is None:
        return None
    return Finding(
        problem, _maths_mistake("run_many_steps", "trajectories", payload["trajectories"], seed, device)
    )


def _update_works(probe: dict, seed: int, device, idea: str) -> Finding | None:
    """None when one step of the student's update moves the parameters, and moves them differently for
    the gradients G, -G and 2G (so it is driven by the gradient); otherwise why ``idea`` cannot be judged
    apart from the update, naming the update's mistake when it is a known one."""
    import torch

    from autograder import cases

    start = [p.detach().cpu().double() for p in cases.adam_params(seed + 50, device)]
    after = {key: probe[key] for key in ("plus", "minus", "double")}
    if any(len(run) != len(start) or any(_difference(a, s, 0, float("inf")) for a, s in zip(run, start))
           for run in after.values()):  # fmt: skip
        why = "produced NaN, inf, or parameters of the wrong shape"
    elif all(torch.equal(a.double(), s) for a, s in zip(after["plus"], start)):
        return Finding(f"your step() did not change the parameters, so {idea} cannot be judged", "no_update")
    elif _same(after["plus"], after["minus"], 0, 0) and _same(after["plus"], after["double"], 0, 0):
        why = "moves the parameters the same way whatever the gradient"
    else:
        return None
    mistake = next(
        (code for code in ADAM_MATHS if _same(probe, _adam_run("probe", seed, device, code))), None
    )
    return Finding(f"one step of your update {why}, so {idea} cannot be judged apart from the update "
                   "(first_step and many_steps say what is wrong with it)", mistake)  # fmt: skip


def training_loop(payload: dict, seed: int, device) -> Finding | None:
    from autograder import cases

    start = [p.detach().cpu() for p in cases.tiny_model(seed, device).parameters()]
    loop, plain = payload["loop"], payload["plain"]

    def moved(run: list) -> bool:
        return any(_difference(a, s, 0, 0) for a, s in zip(run[-1], start))

    if not moved(loop) and moved(plain):
        return Finding(
            "given model.parameters() (a generator), your optimizer never changed the parameters, though "
            "it does given a list: the generator was used up before step() read it",
            "used_up_generator",
        )
    for t, left in enumerate(payload["uncleared"], start=1):
        if left:
            return Finding(
                f"in the training loop, zero_grad() before step {t} left parameter {int(left[0])}'s gradient "
                "non-zero, so backward() added the new gradient to the old one",
                "zero_grad_keeps",
            )
    broken = _update_works(payload["probe"], seed, device, "the training loop")
    if broken:
        return broken
    problem = _compare_runs(
        [loop],
        [plain],
        ["in a training loop given model.parameters()"],
        "your own update given a list and fresh gradients",
        rtol=1e-5,
        atol=1e-7,
    )
    return Finding(problem) if problem else None


# What each weight_decay=0 run of cases.run_weight_decay means when the student's steps match it.
_DECAY_EXPLAINED = {
    "decay_decoupled": ("decay_decoupled", "your steps are those of your update with the weights shrunk directly, "
                        "by (1 - lr * weight_decay), outside m and v"),
    "decay_decoupled_after": ("decay_decoupled", "your steps are those of your update with the weights shrunk "
                              "directly after it, by (1 - lr * weight_decay), outside m and v"),
    "decay_ignored": ("decay_ignored", "your steps are those of your update without any weight decay"),
    "decay_doubled": ("decay_doubled", "your steps are those of your update fed the gradient plus "
                      "2 * weight_decay * param: twice the penalty's gradient"),
    "decay_halved": ("decay_halved", "your steps are those of your update fed the gradient plus "
                     "0.5 * weight_decay * param: half the penalty's gradient"),
}  # fmt: skip


def weight_decay(payload: dict, seed: int, device) -> Finding | None:
    from autograder import cases

    broken = _update_works(payload["probe"], seed, device, "weight_decay")
    if broken:
        return broken
    labels = [f"with {hp}" for hp in cases.WEIGHT_DECAY_SETTINGS]
    against = (
        "your own update with weight_decay=0 fed the gradient of loss + (weight_decay / 2) * ||param||**2"
    )
    problem = _compare_runs(payload["student"], payload["coupled"], labels, against, rtol=1e-5, atol=1e-6)
    if problem is None:
        return None
    for run, (code, why) in _DECAY_EXPLAINED.items():
        if _compare_runs(payload["student"], payload[run], labels, against, rtol=1e-5, atol=1e-6) is None:
            return Finding(f"{problem}; {why}", code)
    return Finding(problem)


def device_state(payload: dict, seed: int, device) -> Finding | None:
    broken = _update_works(payload["probe"], seed, device, "where the state lives")
    if broken:
        return broken
    if any(dtype != "torch.float64" for dtype in payload["dtypes"]):
        return Finding(f"float64 parameters came out of your steps as {sorted(set(map(str, payload['dtypes'])))}: "
                       "update them in place, in their own dtype", "state_misplaced")  # fmt: skip
    if payload["misplaced"]:
        return Finding(
            f"with float64 parameters on {device}, your optimizer keeps {str(payload['misplaced'][0])[:200]}",
            "state_misplaced",
        )
    if payload["meta_misplaced"]:
        return Finding("with parameters on another device (meta), your optimizer keeps "
                       f"{str(payload['meta_misplaced'][0])[:200]}", "state_misplaced")  # fmt: skip
    if payload["stateless"]:
        return Finding(f"your optimizer keeps no tensor shaped like parameter {int(payload['stateless'][0])}: "
                       "Adam keeps m and v for every parameter")  # fmt: skip
    return None


# ----------------------------------------------------------------------------- gradient accumulation


def reference_train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps, mistake=None):
    """The contract, written plainly: one step per group of ``accumulation_steps`` batches (and one for
    a final partial group), each batch's loss divided by its group's size, one mean loss per step.
    With a ``mistake`` (a code of :data:`ACCUMULATION_MISTAKES`) it makes that mistake instead.
    Lives here, in the grader's process only: the sandbox never holds a reference."""
    model.train()
    k, n = accumulation_steps, len(iterator)
    losses, group = [], []
    for i, (images, labels) in enumerate(iterator):
        size = min(k, n - (i - i % k))  # the last group may be smaller
        if mistake == "zeroed_every_batch":
            optimizer.zero_grad()
        loss = criterion(model(images.to(device)), labels.to(device))
        divisor = {"loss_not_divided": 1, "partial_divided_by_k": k}.get(mistake, size)
        (loss / divisor).backward()
        group.append(loss.item())
        ends_group = len(group) == size and not (mistake == "last_group_dropped" and size < k)
        if ends_group or mistake == "step_every_batch":
            optimizer.step()
            optimizer.zero_grad()
            losses.append(sum(group) / len(group))
            group = []
    return losses


ACCUMULATION_MISTAKES = ("loss_not_divided", "zeroed_every_batch", "step_every_batch", "last_group_dropped",
                         "partial_divided_by_k")  # fmt: skip


@lru_cache(maxsize=512)
def _epoch(seed: int, n: int, k: int, device, mistake: str | None = None) -> dict:
    from autograder import cases

    return cases.run_train_epoch(partial(reference_train_epoch, mistake=mistake), seed, n, k, device)


def _case(n: int, k: int) -> str:
    return f"with {n} batches and accumulation_steps={k}"


def _cases(payload: list, seed: int, cases: tuple) -> list[tuple[dict, int, int, int]]:
    """(what the student's epoch did, its seed, n, k) per case; n and k from the registry, never the payload."""
    from autograder import cases as inputs

    if len(payload) != len(cases):
        raise ValueError(f"{len(payload)} epochs came back instead of {len(cases)}")
    return [
        (got, inputs.case_seed(seed, i), int(n), int(k))
        for i, (got, (n, k)) in enumerate(zip(payload, cases))
    ]


def _steps(got: dict, n: int) -> list[int]:
    steps = [int(s) for s in got["steps"]]
    if any(not 1 <= s <= n for s in steps) or steps != sorted(steps):
        raise ValueError(f"the recorded steps {steps[:20]} are not batches 1..{n} in order")
    return steps


def _epoch_mistake(got: dict, seed: int, n: int, k: int, device, codes: tuple[str, ...]) -> str | None:
    """The known mistake (among ``codes``) whose epoch steps where the student's did, with the same gradients."""
    for code in codes:
        ref = _epoch(seed, n, k, device, code)
        if _steps(got, n) == ref["steps"] and _same(got["grads"], ref["grads"], 1e-4, 1e-7):
            return code
    return None


def _gradient_problem(got: list, expected: list, where: str) -> str | None:
    for q, (a, e) in enumerate(zip(got, expected)):
        why = _difference(a, e, 1e-4, 1e-7)
        if why:
            ratio = ""
            if a is not None and hasattr(a, "shape") and a.shape == e.shape and float(e.abs().sum()) > 0:
                times = float((a.double() * e).sum() / (e.double() * e).sum())
                ratio = f" (your gradient is {times:.3g}x the expected one)"
            return f"{where} the gradient of parameter {q} {why}{ratio}"
    return None


def _returned_problem(got: dict, expected: list[float], case: str) -> str | None:
    returned = got["returned"]
    if returned["values"] is None:
        return f"{case} train_epoch returned a {str(returned['type'])[:40]}, not a list of losses"
    if int(returned["length"]) != len(expected):
        got = int(returned["length"])
        return f"{case} train_epoch returned {got} losses; expected {len(expected)} (one per optimizer step)"
    for j, (a, e) in enumerate(zip(returned["values"], expected)):
        if a is None or not abs(float(a) - e) <= 1e-6 + 1e-4 * abs(e):
            shown = "not a number" if a is None else f"{float(a):.6g}"
            return (
                f"{case} loss {j} you returned is {shown}; the mean of that group's batch losses is {e:.6g}"
            )
    return None


def plain(payload: list, seed: int, device, cases: tuple) -> Finding | None:
    for got, s, n, k in _cases(payload, seed, cases):
        ref = _epoch(s, n, k, device)
        if _steps(got, n) != ref["steps"]:
            return Finding(f"{_case(n, k)} the optimizer stepped after batches {_steps(got, n)}; plain training "
                           f"steps after every batch {ref['steps']}")  # fmt: skip
        problem = _compare_params(got["params"], ref["params"], f"{_case(n, k)} after the epoch",
                                  "plain mini-batch training", 1e-4, 1e-6)  # fmt: skip
        if problem:
            return Finding(problem)
        problem = _returned_problem(got, ref["returned"]["values"], _case(n, k))  # same steps and weights
        if problem:
            return Finding(problem, "losses_not_group_means")
    return None


def schedule(payload: list, seed: int, device, cases: tuple) -> Finding | None:
    """Steps after every k batches; whether a final partial group gets one is partial_group's idea."""
    for got, s, n, k in _cases(payload, seed, cases):
        steps, full = _steps(got, n), n - n % k
        expected = list(range(k, full + 1, k))
        tail = [b for b in steps if b > full]
        if [b for b in steps if b <= full] != expected or tail not in ([], [n]):
            return Finding(
                f"{_case(n, k)} your optimizer stepped after batches {steps or 'none'}; every full group "
                f"of {k} needs one step, after batches {expected}",
                _epoch_mistake(got, s, n, k, device, ("step_every_batch",)),
            )
    return None


def group_gradient(payload: list, seed: int, device, cases: tuple) -> Finding | None:
    codes = ("loss_not_divided", "zeroed_every_batch", "step_every_batch")
    for got, s, n, k in _cases(payload, seed, cases):
        ref, steps = _epoch(s, n, k, device), _steps(got, n)
        for j, batch in enumerate(ref["steps"]):
            if batch not in steps:
                return Finding(
                    f"{_case(n, k)} there was no optimizer step right after batch {batch}, so the update "
                    "of that group could not be checked",
                    _epoch_mistake(got, s, n, k, device, codes),
                )
            where = f"{_case(n, k)} at the step after batch {batch}"
            problem = _gradient_problem(got["grads"][steps.index(batch)], ref["grads"][j], where)
            if problem:
                return Finding(problem, _epoch_mistake(got, s, n, k, device, codes))
    return None


def _replay(got: dict, seed: int, n: int, device) -> tuple[list[float], list]:
    """The student's epoch rebuilt from the initial weights and the recorded steps (SGD with the
    recorded gradients): each batch's loss at the weights the student had when it took the batch,
    and each batch's gradient there. Never from numbers the student's process reported as losses."""
    import torch
    from torch import nn

    from autograder import cases

    model = cases.tiny_model(seed, device)
    criterion = nn.CrossEntropyLoss()
    losses, grads, applied = [], [], 0
    steps = _steps(got, n)
    for batch, (x, y) in enumerate(cases.batches(seed, n), start=1):
        model.zero_grad()
        loss = criterion(model(x.to(device)), y.to(device))
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.detach().cpu().clone() for p in model.parameters()])
        with torch.no_grad():
            while applied < len(steps) and steps[applied] <= batch:
                for p, g in zip(model.parameters(), got["grads"][applied]):
                    if isinstance(g, torch.Tensor) and g.shape == p.shape:
                        p.sub_(cases.LR_SGD * g.to(device=device, dtype=p.dtype))
                applied += 1
    return losses, grads


def partial_group(payload: list, seed: int, device, cases: tuple) -> Finding | None:
    """The cases end in a one-batch group, so this idea stands apart from how full groups are summed:
    the final step must come after the last batch, with that batch's own gradient, at the student's weights."""
    codes = ("last_group_dropped", "partial_divided_by_k", "step_every_batch")
    for got, s, n, k in _cases(payload, seed, cases):
        steps, full = _steps(got, n), n - n % k
        tail = [b for b in steps if b > full]
        if tail != [n]:
            why = (
                "there was no final optimizer step"
                if not tail
                else f"the optimizer stepped after batches {tail}"
            )
            return Finding(
                f"{_case(n, k)} the last {n - full} batch(es) form a partial group, but {why} "
                f"(one step after batch {n} was expected)",
                _epoch_mistake(got, s, n, k, device, codes),
            )
        _, grads = _replay(got, s, n, device)
        expected = [
            sum(grads[b - 1][q] for b in range(full + 1, n + 1)) / (n - full) for q in range(len(grads[0]))
        ]
        problem = _gradient_problem(
            got["grads"][-1], expected, f"{_case(n, k)} at the final step after batch {n}"
        )
        if problem:
            return Finding(f"{problem}; it should be the gradient of the mean of that group's own batch losses",
                           _epoch_mistake(got, s, n, k, device, codes))  # fmt: skip
    return None


def losses(payload: list, seed: int, device, cases: tuple) -> Finding | None:
    """One loss per step *the student took*: the mean of the batch losses since the step before."""
    for got, s, n, k in _cases(payload, seed, cases):
        seen, _ = _replay(got, s, n, device)
        bounds = [0, *_steps(got, n)]
        expected = [sum(seen[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:]) if b > a]
        problem = _returned_problem(got, expected, _case(n, k))
        if problem:
            return Finding(problem, "losses_not_group_means")
    return None
