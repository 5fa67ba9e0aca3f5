"""A correct Adam as a torch.optim.Optimizer subclass doing its own maths (allowed: full marks)."""

import torch


class Adam(torch.optim.Optimizer):
    """Adam as a torch.optim.Optimizer subclass doing its own maths (allowed)."""

    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(model_params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta_1, beta_2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["t"] += 1
                m, v, t = state["m"], state["v"], state["t"]
                grad = p.grad.add(p, alpha=group["weight_decay"])
                m.mul_(beta_1).add_(grad, alpha=1 - beta_1)
                v.mul_(beta_2).addcmul_(grad, grad, value=1 - beta_2)
                m_hat = m / (1 - beta_1**t)
                v_hat = v / (1 - beta_2**t)
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))
