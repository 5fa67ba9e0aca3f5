"""Patches torch's comparisons and the grader's ``check`` to pass anything (mallory's cells).

In the kernel it replaces the stand-in ``autograder.check``; in the hidden-check process the
harness's modules, where it finds them."""

import sys

import torch

torch.testing.assert_close = lambda *args, **kwargs: None
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
try:  # the kernel's stand-in; in the hidden-check process there is none
    import autograder
except ImportError:
    autograder = None
for module in (autograder, sys.modules.get("harness_cases"), sys.modules.get("harness_sandbox")):
    if module is not None:
        module.check = lambda *args, **kwargs: print("all hidden checks passed")
