"""TensorFlow's native start-up lines, kept off the user's screen.

TensorFlow's C++ code logs through absl before anything can configure it
(``TF_CPP_MIN_LOG_LEVEL`` is read too late for these), so a CPU-only machine
shows lines such as ``E0000 … failed call to cuInit`` on every command.  The
console entry point sends the process's stderr through a filter that drops
exactly those native log lines and passes everything else (facekit's
messages, Python warnings, tracebacks) through at once.  Set
``FACEKIT_TF_LOGS=1`` to see them.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

SHOW_VARIABLE = "FACEKIT_TF_LOGS"
# absl/glog lines: severity, date, time, thread, file:line]
_NATIVE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./+-]+:\d+\] ")
_CHATTER = (b"WARNING: All log messages before absl::InitializeLog() is called",
            b"To enable the following instructions:")


def is_native_log(line: bytes) -> bool:
    return bool(_NATIVE.match(line)) or line.startswith(_CHATTER)


def filter_native_logs() -> None:
    """From now until exit, drop native TensorFlow log lines from stderr (file
    descriptor 2, so that C++ writes are caught too)."""
    if os.environ.get(SHOW_VARIABLE) or not hasattr(os, "pipe"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    screen = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        pending = b""
        while chunk := os.read(read_end, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_native_log(line))
            if kept:
                os.write(screen, kept)
        if pending and not is_native_log(pending):
            os.write(screen, pending)
        os.close(read_end)

    thread = threading.Thread(target=forward, name="facekit-stderr", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(screen, 2)  # closes the pipe's last write end: the thread drains and ends
        thread.join(timeout=5)

    atexit.register(restore)
