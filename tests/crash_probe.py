"""The engine check's child process with a crash injected (tests/test_engine_check.py): in the
weight layouts named by ``TEST_CRASH_LAYOUTS`` it dies as llama.cpp does on some AMX hosts
(a real segfault: a read of address 0) or, with ``TEST_CRASH_SIGNAL=SIGILL``, as a build made
for another CPU does; ``hang`` sleeps past any timeout. Otherwise it is the real probe."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

from assistant.engines import llamacpp_probe

if __name__ == "__main__":
    layout = sys.argv[2]
    if layout in os.environ.get("TEST_CRASH_LAYOUTS", "").split(","):
        how = os.environ.get("TEST_CRASH_SIGNAL", "SIGSEGV")
        if how == "SIGSEGV":
            ctypes.string_at(0)
        elif how == "hang":
            time.sleep(3600)
        os.kill(os.getpid(), getattr(signal, how))
    sys.exit(llamacpp_probe.main(sys.argv[1:]))
