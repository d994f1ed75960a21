"""SIGINT/SIGTERM handling shared by the worker and replay commands."""

from __future__ import annotations

import signal
import threading
from typing import Callable

from .logs import get_logger


def install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """Call ``stop()`` on SIGINT/SIGTERM (main thread only); returns a function restoring the old
    handlers. A second signal restores the defaults, so a third one kills the process."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hits = {"n": 0}

    def handler(signum, frame):
        hits["n"] += 1
        get_logger("fusewatch.stream.worker").warning(
            "signal received, stopping", extra={"fields": {"signal": signal.Signals(signum).name}}
        )
        stop()
        if hits["n"] >= 2:
            for s, h in old.items():
                signal.signal(s, h)

    for s in old:
        signal.signal(s, handler)

    def restore():
        for s, h in old.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):
                pass

    return restore
