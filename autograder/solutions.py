"""Reference solutions and known-wrong submissions of the lab, as solution-cell sources.

The correct ones are what ``assignments/source`` holds between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; the wrong ones are the mistakes the hidden checks must catch: every
error in the original course material's own answers, and the classic ones. Tests and the
benchmark build submissions from them. Instructor-only, like the rest of this package.
"""

from __future__ import annotations

from pathlib import Path

ACCUMULATION = '''\
def train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):
    """One epoch with gradient accumulation; returns one loss per optimizer step."""
    model.train()
    n_batches = len(iterator)
    losses, group_losses = [], []
    for i, (images, labels) in enumerate(tqdm.tqdm(iterator, leave=False)):
        images, labels = images.to(device), labels.to(device)  # (B, 1, 28, 28), (B,)
        group_start = i - i % accumulation_steps
        group_size = min(accumulation_steps, n_batches - group_start)  # the last group may be partial
        loss = criterion(model(images), labels)
        # Dividing by the group size makes the summed gradients those of the group's mean loss.
        (loss / group_size).backward()
        group_losses.append(loss.item())
        if len(group_losses) == group_size:
            optimizer.step()
            optimizer.zero_grad()  # only after a step: gradients add up within a group
            losses.append(sum(group_losses) / group_size)
            group_losses = []
    return losses
'''

ADAM = '''\
class Adam:
    """Adam (Kingma & Ba, 2015) with torch.optim.Adam's defaults and eps outside the square root."""

    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        self.model_params = list(model_params)  # a generator could be read only once
        self.lr = lr
        self.beta_1, self.beta_2 = betas
        self.eps = eps
        # zeros_like: same shape, device and dtype as each parameter
        self.m = [torch.zeros_like(p) for p in self.model_params]
        self.v = [torch.zeros_like(p) for p in self.model_params]
        self.t = 0

    def zero_grad(self):
        for param in self.model_params:
            param.grad = None  # like torch.optim: no new memory, and backward() starts afresh

    @torch.no_grad()
    def step(self):
        self.t += 1  # once per step, shared by every parameter; t = 1 on the first step
        for param, m, v in zip(self.model_params, self.m, self.v):
            if param.grad is None:
                continue
            grad = param.grad
            m.mul_(self.beta_1).add_(grad, alpha=1 - self.beta_1)
            v.mul_(self.beta_2).addcmul_(grad, grad, value=1 - self.beta_2)
            m_hat = m / (1 - self.beta_1**self.t)
            v_hat = v / (1 - self.beta_2**self.t)
            param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))
'''


def _swap(source: str, old: str, new: str) -> str:
    if old not in source:
        raise ValueError(f"mutation target not found: {old!r}")
    return source.replace(old, new)


# The answers printed in the course material's exercises, verbatim in behaviour.
MATERIAL_ACCUMULATION = """\
def train_epoch(iterator, model, optimizer, criterion, device, accumulation_steps):
    model.train()
    losses = []
    total_loss = 0.0
    for i, (images, labels) in enumerate(tqdm.tqdm(iterator, leave=False)):
        images = images.to(device)
        labels = labels.to(device)
        optimizer.zero_grad()
        predictions = model(images)
        loss = criterion(predictions, labels)
        loss.backward()
        if (i + 1) % accumulation_steps == 0:
            optimizer.step()
            losses.append(total_loss / accumulation_steps)
            total_loss = 0.0
        else:
            total_loss += loss.item()
    if total_loss > 0:
        optimizer.step()
        losses.append(total_loss / (i % accumulation_steps + 1))
    return losses
"""

MATERIAL_ADAM = """\
class Adam:
    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.model_params = model_params
        self.lr = lr
        self.beta_1, self.beta_2 = betas
        self.eps = eps
        self.avg_grads = [torch.zeros_like(param) for param in model_params]
        self.avg_sqr_grads = [torch.zeros_like(param) for param in model_params]
        self.n_steps = 0

    def zero_grad(self):
        for param in self.model_params:
            param.grad = torch.zeros_like(param)

    @torch.no_grad()
    def step(self):
        self.n_steps += 1
        for i, (param, avg_grad, avg_sqr_grad) in enumerate(zip(self.model_params, self.avg_grads, self.avg_sqr_grads)):
            grad = param.grad
            avg_grad.mul_(self.beta_1).add_(grad*grad*(1 - self.beta_1))
            avg_sqr_grad.mul_(self.beta_2).add_(grad* grad*(1-self.beta_2))
            avg_grad_corrected = avg_grad.div(1 - self.beta_1 ** self.n_steps)
            avg_sqr_grad_corrected = avg_sqr_grad.div(1 - self.beta_2 ** self.n_steps)
            std = avg_sqr_grad_corrected.sqrt().add(self.eps)
            param.sub_(self.lr * avg_grad_corrected / std)
"""

# name -> (source, the parts it must fail[, parts it may also fail, depending on the grade-time
# data]); every other part must pass.
ACCUMULATION_MISTAKES: dict[str, tuple] = {
    "material": (MATERIAL_ACCUMULATION, {"plain", "group_gradient", "partial_group", "losses"}),
    "zero_grad_every_batch": (
        _swap(ACCUMULATION, "        loss = criterion(model(images), labels)\n",
              "        optimizer.zero_grad()\n        loss = criterion(model(images), labels)\n"),
        {"group_gradient", "partial_group"},
    ),
    "loss_not_scaled": (_swap(ACCUMULATION, "(loss / group_size).backward()", "loss.backward()"),
                        {"group_gradient", "partial_group"}),
    "no_final_partial_step": (
        _swap(ACCUMULATION, "        if len(group_losses) == group_size:", "        if len(group_losses) == accumulation_steps:"),
        {"schedule", "partial_group", "losses"},
    ),
    "scaled_losses_returned": (
        _swap(ACCUMULATION, "group_losses.append(loss.item())", "group_losses.append(loss.item() / group_size)"),
        {"losses"},
    ),
}  # fmt: skip

ADAM_MISTAKES: dict[str, tuple] = {
    "material": (MATERIAL_ADAM, {"first_step", "many_steps", "generator", "zero_grad", "device_state"}),
    "no_bias_correction": (
        _swap(_swap(ADAM, "m / (1 - self.beta_1**self.t)", "m"), "v / (1 - self.beta_2**self.t)", "v"),
        {"first_step", "many_steps", "generator", "device_state"},
    ),
    "t_from_zero": (
        _swap(_swap(ADAM, "        self.t += 1  # once per step", "        pass  # once per step"),
              "            param.sub_(", "            self.t += 0\n            param.sub_("),
        {"first_step", "many_steps", "generator", "device_state"},
    ),
    "t_per_parameter": (
        _swap(_swap(ADAM, "        self.t += 1  # once per step", "        pass  # once per step"),
              "            grad = param.grad\n", "            grad = param.grad\n            self.t += 1\n"),
        {"first_step", "many_steps", "generator", "device_state"},
    ),
    "eps_inside_sqrt": (_swap(ADAM, "(v_hat.sqrt() + self.eps)", "(v_hat + self.eps).sqrt()"),
                        {"many_steps"}, {"first_step", "generator", "device_state"}),  # tiny gradients show it too
    "zero_grad_allocates": (_swap(ADAM, "param.grad = None  # like", "param.grad = torch.zeros_like(param)  # like"),
                            {"zero_grad"}),
    "generator_consumed_twice": (_swap(ADAM, "self.model_params = list(model_params)", "self.model_params = model_params"),
                                 {"generator"}),
    "state_on_cpu": (
        _swap(_swap(ADAM, "self.m = [torch.zeros_like(p)", "self.m = [torch.zeros(p.shape)"),
              "self.v = [torch.zeros_like(p)", "self.v = [torch.zeros(p.shape)"),
        {"device_state"},
    ),
    "wraps_torch_adam": (
        "class Adam:\n"
        "    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n"
        "        self._opt = torch.optim.Adam(model_params, lr=lr, betas=betas, eps=eps)\n"
        "    def zero_grad(self):\n"
        "        self._opt.zero_grad()\n"
        "    def step(self):\n"
        "        self._opt.step()\n",
        {"first_step", "many_steps", "generator", "zero_grad", "device_state"},
    ),
    "patches_assert_close": (
        "torch.testing.assert_close = lambda *args, **kwargs: None\n"
        "torch.allclose = lambda *args, **kwargs: True\n"
        "class Adam:\n"
        "    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n"
        "        self.params = list(model_params)\n"
        "    def zero_grad(self):\n"
        "        for p in self.params:\n"
        "            p.grad = None\n"
        "    def step(self):\n"
        "        pass\n",
        {"first_step", "many_steps", "generator", "device_state"},
    ),
    "optim_by_getattr": (
        _swap(ADAM, "    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n",
              "    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n"
              "        self._inner = getattr(torch, 'op' + 'tim').Adam(list(model_params), lr=lr)\n"),
        {"first_step", "many_steps", "generator", "zero_grad", "device_state"},
    ),
    "reads_grader_files": (
        "import runpy\n"
        "# the grader's own answers, by their path on the grading machine; inside the jail they are not there\n"
        f"exec(runpy.run_path({str(Path(__file__).resolve())!r})['ADAM'])\n",
        {"first_step", "many_steps", "generator", "zero_grad", "device_state"},
    ),
    "fused_kernel_by_getattr": (
        _swap(ADAM, "            param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))\n",
              "            param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))\n"
              "            getattr(torch.ops.aten, '_fused_' + 'adam_')([param], [grad], [m.clone()], [v.clone()], [],\n"
              "                [torch.tensor(float(self.t))], lr=0.0, beta1=0.9, beta2=0.999, weight_decay=0.0,\n"
              "                eps=1e-8, amsgrad=False, maximize=False)\n"),
        {"first_step", "many_steps", "generator", "device_state"},
    ),
    "functional_adam": (
        _swap(ADAM, "    @torch.no_grad()\n    def step(self):\n",
              "    @torch.no_grad()\n    def step(self):\n"
              "        vars(torch.optim)['_functional'].adam([], [], [], [], [], [], amsgrad=False, beta1=0.9,\n"
              "            beta2=0.999, lr=0.0, weight_decay=0.0, eps=1e-8, maximize=False)\n"),
        {"first_step", "many_steps", "generator", "device_state"},
    ),
}  # fmt: skip


# Allowed: a torch.optim.Optimizer subclass that does its own maths (full marks).
ADAM_SUBCLASS = """\
class Adam(torch.optim.Optimizer):
    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(model_params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta_1, beta_2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                state["m"].mul_(beta_1).add_(p.grad, alpha=1 - beta_1)
                state["v"].mul_(beta_2).addcmul_(p.grad, p.grad, value=1 - beta_2)
                m_hat = state["m"] / (1 - beta_1 ** state["t"])
                v_hat = state["v"] / (1 - beta_2 ** state["t"])
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))
"""
