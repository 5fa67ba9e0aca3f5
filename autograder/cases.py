"""The inputs of every hidden check, drawn from a seed picked at grade time.

Both sides build them: the sandbox, which runs the student's code on them, and the
grader, which runs the reference on them. Everything comes from one
``torch.Generator`` on the CPU and only then moves to the device, so both sides get
bit-identical tensors without ever sending them across.
"""

from __future__ import annotations

import torch
from torch import nn

IN_FEATURES, HIDDEN, CLASSES = 12, 10, 4
BATCH = 8
LR_SGD = 0.1  # the learning rate of the recording optimizer given to train_epoch

# Hyperparameters of the multi-step Adam check, passed by keyword like torch.optim's.
ADAM_SETTINGS: tuple[dict, ...] = (
    {},
    {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-3},
    {"lr": 5e-3, "betas": (0.5, 0.9), "eps": 1e-6},
)
ADAM_STEPS = 30
# The weight-decay check: a few decays, one with non-default betas and eps.
WEIGHT_DECAY_SETTINGS: tuple[dict, ...] = (
    {"weight_decay": 0.1},
    {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-3, "weight_decay": 0.5},
    {"lr": 5e-3, "weight_decay": 0.01},
)
WEIGHT_DECAY_STEPS = 10
PARAM_SHAPES = ((6, 5), (5,), (3, 4))


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % (2**63))


def tiny_model(seed: int, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A 12-10-4 tanh network with weights drawn from ``seed`` (no global RNG involved)."""
    g = generator(seed)
    model = nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, CLASSES))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return model.to(device=device, dtype=dtype)


def batches(seed: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` CPU batches of (inputs (B, 12), labels (B,)); the last one is smaller, like a DataLoader's."""
    g = generator(seed + 1)
    out = []
    for i in range(n):
        size = BATCH if i < n - 1 else BATCH - 3
        x = torch.randn(size, IN_FEATURES, generator=g)  # (B, 12)
        y = torch.randint(0, CLASSES, (size,), generator=g)  # (B,)
        out.append((x, y))
    return out


def adam_params(seed: int, device: torch.device, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = generator(seed)
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype).requires_grad_() for s in PARAM_SHAPES]


def adam_grads(seed: int, steps: int, device: torch.device, dtype: torch.dtype = torch.float32) -> list[list]:
    """Gradients for ``steps`` steps. Their scale changes from step to step (down to 1e-4) and
    a few entries are exactly zero, so eps's place and the bias correction both show."""
    g = generator(seed + 7)
    out = []
    for t in range(steps):
        scale = (1.0, 1e-2, 0.3, 1e-4, 3.0)[t % 5]
        step = []
        for s in PARAM_SHAPES:
            grad = torch.randn(s, generator=g) * scale
            grad[torch.rand(s, generator=g) < 0.1] = 0.0
            grad.view(-1)[t % grad.numel()] = 0.0  # at least one exact zero in every tensor
            step.append(grad.to(device=device, dtype=dtype))
        out.append(step)
    return out


class CountingBatches:
    """An iterable of batches that counts how many have been taken (``len()`` works too)."""

    def __init__(self, data: list) -> None:
        self._data = data
        self.taken = 0

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self):
        for item in self._data:
            self.taken += 1
            yield item


class RecordingSGD:
    """Plain SGD that records, at every ``step()``, how many batches had been taken and the gradients."""

    def __init__(self, params, batches_seen: CountingBatches, lr: float = LR_SGD) -> None:
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.lr = lr
        self.seen = batches_seen
        self.steps: list[int] = []
        self.grads: list[list] = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()

    @torch.no_grad()
    def step(self, closure=None) -> None:
        self.steps.append(self.seen.taken)
        self.grads.append(
            [None if p.grad is None else p.grad.detach().to("cpu", copy=True) for p in self.params]
        )
        for p in self.params:
            if p.grad is not None:
                p.sub_(self.lr * p.grad)


def plain_values(value: object) -> dict:
    """A returned list as floats the grader can load safely, or a description of what it was."""
    if isinstance(value, (list, tuple)):
        out = []
        for item in value[:10_000]:
            try:
                out.append(float(item.item() if hasattr(item, "item") else item))
            except Exception:
                out.append(None)
        return {"type": type(value).__name__, "values": out, "length": len(value)}
    return {"type": type(value).__name__, "values": None, "length": None}


def run_train_epoch(train_epoch, seed: int, n: int, k: int, device: torch.device) -> dict:
    """Run any ``train_epoch(iterator, model, optimizer, criterion, device, k)`` and record what it did."""
    model = tiny_model(seed, device)
    data = CountingBatches(batches(seed, n))
    optimizer = RecordingSGD(model.parameters(), data)
    returned = train_epoch(data, model, optimizer, nn.CrossEntropyLoss(), device, k)
    return {
        "n": n,
        "k": k,
        "steps": list(optimizer.steps),
        "grads": optimizer.grads,
        "returned": plain_values(returned),
        "params": [p.detach().to("cpu", copy=True) for p in model.parameters()],
    }


def case_seed(seed: int, i: int) -> int:
    """The seed of a part's ``i``-th case (each case its own model and batches)."""
    return seed + 101 * i


def run_train_epochs(train_epoch, seed: int, device: torch.device, cases: tuple) -> list[dict]:
    """The accumulation parts' driver: one recorded epoch per ``(n_batches, accumulation_steps)`` case."""
    return [run_train_epoch(train_epoch, case_seed(seed, i), n, k, device) for i, (n, k) in enumerate(cases)]


# --------------------------------------------------------------------------- Adam drivers
# Each takes an optimizer class (the student's, or a reference) and returns plain tensors on the
# CPU. first_step and many_steps record the update maths, to be compared with torch.optim.Adam.
# The other drivers run the class twice, once the way their idea needs and once plainly, so the
# judge can compare the student's code with itself: a mistake in the maths does not fail them.


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().to("cpu", copy=True) for p in params]


def _feed(opt, params: list[torch.Tensor], grads: list[list[torch.Tensor]], before=None, after=None) -> list:
    """Give ``opt`` each step's gradients (no zero_grad) and record the parameters after every step.

    ``before(params, grads)`` may change the gradients just before each step (it returns the ones
    to set) and ``after(params)`` may change the parameters just after it."""
    trajectory = []
    for step in grads:
        if before is not None:
            step = before(params, step)
        for p, g in zip(params, step):
            p.grad = g.clone()
        opt.step()
        if after is not None:
            after(params)
        trajectory.append(_snapshot(params))
    return trajectory


def _trajectories(adam_cls, seed: int, device: torch.device, settings: tuple[dict, ...], steps: int) -> dict:
    """One trajectory of ``steps`` steps per hyperparameter setting, each from its own parameters and gradients."""
    out = []
    for i, hparams in enumerate(settings):
        params = adam_params(seed + i, device)
        out.append(_feed(adam_cls(params, **hparams), params, adam_grads(seed + i, steps, device)))
    return {"trajectories": out}


def run_first_step(adam_cls, seed: int, device: torch.device) -> dict:
    params = adam_params(seed, device)
    return {"params": _feed(adam_cls(params, lr=0.01), params, adam_grads(seed, 1, device))[0]}


def run_many_steps(adam_cls, seed: int, device: torch.device) -> dict:
    return _trajectories(adam_cls, seed, device, ADAM_SETTINGS, ADAM_STEPS)


def probe(adam_cls, seed: int, device: torch.device) -> dict:
    """One default step from the same parameters with a gradient G, with -G and with 2G: the judge
    checks that the student's update moves the parameters, and that how it moves them depends on
    the gradient, before it judges any idea relative to that update."""
    out = {}
    for scale, key in ((1.0, "plus"), (-1.0, "minus"), (2.0, "double")):
        params = adam_params(seed + 50, device)
        grads = [[scale * g for g in adam_grads(seed + 50, 1, device)[0]]]
        out[key] = _feed(adam_cls(params, lr=0.01), params, grads)[0]
    return out


def run_training_loop(adam_cls, seed: int, device: torch.device, steps: int = 5) -> dict:
    """The loop students write: ``Adam(model.parameters())`` (a generator), then zero_grad(),
    backward() and step() for every batch; and the same class given a list, with the driver
    clearing the gradients itself. Records both trajectories and the parameters whose gradient
    zero_grad() left non-zero."""
    criterion = nn.CrossEntropyLoss()
    runs = {}
    for style in ("loop", "plain"):
        model = tiny_model(seed, device)
        params = model.parameters() if style == "loop" else list(model.parameters())
        opt = adam_cls(params, lr=0.01)  # "loop": a generator, exactly as students will pass it
        trajectory, uncleared = [], []
        for x, y in batches(seed, steps):
            if style == "loop":
                opt.zero_grad()
                uncleared.append(
                    [q for q, p in enumerate(model.parameters()) if p.grad is not None and p.grad.any()]
                )
            else:
                for p in model.parameters():
                    p.grad = None
            criterion(model(x.to(device)), y.to(device)).backward()
            opt.step()
            trajectory.append(_snapshot(model.parameters()))
        runs[style] = trajectory
        runs[f"{style}_uncleared"] = uncleared
    return {"loop": runs["loop"], "plain": runs["plain"], "uncleared": runs["loop_uncleared"],
            "probe": probe(adam_cls, seed, device)}  # fmt: skip


def _coupled(scale: float, wd: float):
    """Gradients with ``scale * wd * param`` added, as the penalty (wd / 2) * ||param||**2 would add."""

    def before(params, grads):
        return [g + scale * wd * p.detach() for p, g in zip(params, grads)]

    return before


def _shrink(lr: float, wd: float):
    def shrink(params, grads=None):
        with torch.no_grad():
            for p in params:
                p.mul_(1 - lr * wd)
        return grads

    return shrink


def run_weight_decay(adam_cls, seed: int, device: torch.device) -> dict:
    """Per setting: the student's class with ``weight_decay=wd``, and the same class with
    ``weight_decay=0`` fed the coupled penalty it must equal, and each known way of getting the
    decay wrong (the judge names the one the student's steps match)."""
    runs: dict[str, list] = {}
    for i, hparams in enumerate(WEIGHT_DECAY_SETTINGS):
        wd, lr = hparams["weight_decay"], hparams.get("lr", 1e-3)
        plain = {k: v for k, v in hparams.items() if k != "weight_decay"}
        ways = {
            "student": (hparams, {}),
            "coupled": (plain, {"before": _coupled(1.0, wd)}),
            "decay_decoupled": (plain, {"before": _shrink(lr, wd)}),  # AdamW: shrink, then the step
            "decay_decoupled_after": (plain, {"after": _shrink(lr, wd)}),
            "decay_ignored": (plain, {}),
            "decay_doubled": (plain, {"before": _coupled(2.0, wd)}),
            "decay_halved": (plain, {"before": _coupled(0.5, wd)}),
        }
        for key, (kwargs, hooks) in ways.items():
            params = adam_params(seed + i, device)
            runs.setdefault(key, []).append(
                _feed(
                    adam_cls(params, **kwargs),
                    params,
                    adam_grads(seed + i, WEIGHT_DECAY_STEPS, device),
                    **hooks,
                )
            )
    return {**runs, "probe": probe(adam_cls, seed, device)}


def state_tensors(obj, depth: int = 0, seen: set | None = None) -> list[torch.Tensor]:
    """Every tensor an optimizer object keeps, looking a few levels into lists, tuples and dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 4:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and depth == 0:
        items = list(vars(obj).values())
    else:
        return []
    out = []
    for item in items:
        out += state_tensors(item, depth + 1, seen)
    return out


def misplaced_state(opt, params) -> list[str]:
    """Descriptions of state tensors that are not on the parameters' device or not of their dtype."""
    param_ids = {id(p) for p in params}
    device, dtype = params[0].device, params[0].dtype
    bad = []
    for t in state_tensors(opt):
        if id(t) in param_ids or t.dim() == 0:  # the parameters themselves, and scalar step counters
            continue
        if t.device != device or (t.is_floating_point() and t.dtype != dtype):
            bad.append(f"a {tuple(t.shape)} {str(t.dtype).replace('torch.', '')} tensor on {t.device}")
    return bad


def per_parameter_state(opt, params) -> list[int]:
    """The parameters (by index) for which the optimizer keeps no tensor of the parameter's shape."""
    shapes = [tuple(t.shape) for t in state_tensors(opt) if t.dim() > 0 and all(t is not p for p in params)]
    return [q for q, p in enumerate(params) if tuple(p.shape) not in shapes]


def run_device_state(adam_cls, seed: int, device: torch.device, steps: int = 10) -> dict:
    """float64 parameters on the grading device, then (on a CPU-only machine) parameters on the
    meta device standing in for a GPU: state must follow the parameters."""
    params = adam_params(seed, device, torch.float64)
    grads = adam_grads(seed, steps, device, torch.float64)
    opt = adam_cls(params, lr=0.01, betas=(0.9, 0.99))
    _feed(opt, params, grads)
    out = {
        "dtypes": [str(p.dtype) for p in params],
        "misplaced": misplaced_state(opt, params),
        "stateless": per_parameter_state(opt, params),
        "meta_misplaced": [],
        "probe": probe(adam_cls, seed, device),
    }
    if device.type == "cpu":
        meta = [torch.empty(s, device="meta").requires_grad_() for s in PARAM_SHAPES]
        opt = adam_cls(meta)
        for p in meta:
            p.grad = torch.empty(p.shape, device="meta")
        try:
            opt.step()
        except Exception:  # data-dependent code cannot run on meta; the state check below still applies
            pass
        out["meta_misplaced"] = misplaced_state(opt, meta)
    return out
