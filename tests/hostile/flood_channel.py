"""Keeps writing protocol-looking lines into every pipe it holds, forever, in the hidden-check process.

Only silence used to count against a part's time limit, so a steady trickle kept a part
running without end. In the notebook's kernel it does nothing: the notebook passes its tests."""

import os
import sys
import time

if "harness_sandbox" in sys.modules:  # the hidden-check process, not the kernel
    pipes = []
    for fd in range(3, 64):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                pipes.append(fd)
        except OSError:
            pass
    lines = [b'{"event": "start", "part": "accumulation:plain"}\n', b'{"event": "tick"}\n', b"not json\n"]
    while True:
        for fd in pipes:
            for line in lines:
                try:
                    os.write(fd, line)
                except OSError:
                    pass
        time.sleep(0.01)
