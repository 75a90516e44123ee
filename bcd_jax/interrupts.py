"""Ctrl-C as a request to stop at the next sweep boundary (no JAX import: the CLI uses it first).

While :func:`interrupts_stop_runs` is active (main thread only), the first SIGINT only sets an
event: ``fit`` checks it between compiled chunks, stops there with ``status=INTERRUPTED`` and
writes its checkpoint; the command line prints one line with the resume command and exits 130.
A second Ctrl-C raises ``KeyboardInterrupt`` as usual, so a stuck process can still be stopped.
The event is never raised inside XLA's compiler or a running program (Python delivers signals
between bytecodes, and this handler does not raise), which is what made an interrupt during
compilation crash the process before.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["interrupts_stop_runs", "INTERRUPT"]

INTERRUPT = threading.Event()


@contextlib.contextmanager
def interrupts_stop_runs():
    """Installs the handler (re-entrant: an outer holder's event is shared); yields the event."""
    if threading.current_thread() is not threading.main_thread():
        yield INTERRUPT
        return
    previous = signal.getsignal(signal.SIGINT)
    if getattr(previous, "_bcd_jax", False):  # already held by an outer caller (the CLI)
        yield INTERRUPT
        return

    def handler(signum, frame):
        if INTERRUPT.is_set():  # the second Ctrl-C
            signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)
            raise KeyboardInterrupt
        INTERRUPT.set()

    handler._bcd_jax = True
    INTERRUPT.clear()
    signal.signal(signal.SIGINT, handler)
    try:
        yield INTERRUPT
    finally:
        signal.signal(signal.SIGINT, previous)
        INTERRUPT.clear()
