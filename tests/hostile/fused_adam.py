"""Adam that hands the update to torch's fused kernel, its name spelled at run time (disallowed)."""

import torch


class Adam:
    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(model_params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        kernel = getattr(torch.ops.aten, "_fused_" + "adam_")
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        for i in live:
            self.t[i] += 1

        def pick(xs):
            return [xs[i] for i in live]

        kernel(
            pick(self.params),
            [self.params[i].grad for i in live],
            pick(self.m),
            pick(self.v),
            [],
            pick(self.t),
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=0.0,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
        )
