"""Adam through torch.optim._functional.adam, module and function names spelled at run time (disallowed)."""

import importlib

import torch


class Adam:
    def __init__(self, model_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(model_params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = [torch.zeros(()) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        functional = importlib.import_module("torch.optim." + "_functional")
        getattr(functional, "ad" + "am")(
            self.params,
            [p.grad for p in self.params],
            self.m,
            self.v,
            [],
            self.t,
            foreach=False,
            amsgrad=False,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
        )
