"""``make gpu-check`` says plainly when there is no GPU, and checks nothing."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(gpu_check.gpu() is not None, reason="a GPU is here: run `make gpu-check` itself")
def test_without_a_gpu_it_says_so_and_fails() -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout.startswith("NO GPU") and "UNVERIFIED" in proc.stdout, proc.stdout
    assert not torch.cuda.is_available() or not list(Path("/dev").glob("nvidia*"))
