"""In the kernel, fills the folder of its ZeroMQ sockets (it used to be bound in from the grader's disk).

It writes files of 1 MiB there until the folder is full, and prints how far it got."""

import json
import os
import sys

if "-f" in sys.argv:  # the kernel: its connection file names the sockets' folder
    with open(sys.argv[sys.argv.index("-f") + 1]) as fh:
        folder = os.path.dirname(json.load(fh)["ip"])
    written = 0
    try:
        for i in range(8192):  # at most 8 GiB
            with open(os.path.join(folder, f"fill{i}"), "wb") as fh:
                fh.write(bytes(2**20))
            written += 1
    except OSError as exc:
        print(f"SOCKET-FOLDER-FULL after {written} MiB: {type(exc).__name__} {exc.errno}")
    else:
        print(f"SOCKET-FOLDER-NOT-FULL after {written} MiB")
