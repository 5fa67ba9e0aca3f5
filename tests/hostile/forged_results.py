"""Sends forged results for the running part down the result channel, then ends the process.

The first part gets a result whose "error" is a number (it crashed the judge's error
explanation); every other part a stride-0 tensor that claims 2**31 elements over a storage
of one (a grader that materialises it grows by gigabytes)."""

import base64
import io
import json
import os
import sys

import torch

if "harness_sandbox" in sys.modules:  # the hidden-check process, not the kernel
    forged = {
        "first_step": {"ok": False, "error": 123, "setup_error": None, "tripped": []},
        "huge": {
            "ok": True,
            "error": None,
            "setup_error": None,
            "tripped": [],
            "payload": {
                "params": [torch.zeros(1).expand(2**31)],
                "trajectories": [[[torch.zeros(1).expand(2**31)]]],
            },
        },
    }
    lines = []
    for part in ("first_step", "many_steps", "training_loop", "weight_decay", "device_state"):
        buffer = io.BytesIO()
        torch.save(forged.get(part, forged["huge"]), buffer)
        data = base64.b64encode(buffer.getvalue()).decode()
        lines.append(json.dumps({"part": f"adam:{part}", "event": "done", "data": data}).encode() + b"\n")
    for fd in range(3, 64):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                for line in lines:
                    os.write(fd, line)
        except OSError:
            pass
    os._exit(0)
