"""Wall-clock timing on a shared machine: wait for idle CPUs, time calls, account for contention.

Other processes inflate a timing; these helpers let a script wait until the CPUs are (nearly)
idle, take the best of several calls, and record how much CPU other processes used while it
measured, so a report can say how far to trust its numbers::

    from bcd_jax.benchmarking import timing

    meter = timing.Contention(wait_idle=20.0)      # before each measurement wait up to 20 s for idle CPUs
    seconds = timing.time_calls(lambda: f(x), repeats=5, contention=meter)
    print(min(seconds), meter.others_fraction)      # best of 5; share of the CPUs others took meanwhile

The CPU counters come from ``/proc/stat`` (Linux); elsewhere the contention figures are None
and :func:`wait_for_idle` returns at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

__all__ = ["Contention", "best_of", "busy_fraction", "cpu_ticks", "load_average", "time_calls", "wait_for_idle"]


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (rounded to 0.01), or None where unavailable."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_ticks() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of all CPUs since boot from ``/proc/stat``, or None where unavailable."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_fraction(interval: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over the next ``interval`` seconds (this process sleeps meanwhile)."""
    a = cpu_ticks()
    time.sleep(interval)
    b = cpu_ticks()
    if a is None or b is None or b[1] == a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])


def wait_for_idle(
    max_wait: float, *, interval: float = 0.5, threshold: float = 0.25, on_wait: Callable[[float], None] | None = None
) -> tuple[float, float | None]:
    """Waits up to ``max_wait`` seconds until less than ``threshold`` of the CPUs are busy.

    ``on_wait(busy)`` is called once if it has to wait (e.g. to log it). Returns ``(seconds
    waited, the last busy fraction)``; the fraction is None where the counters are unavailable.
    """
    waited, busy = 0.0, busy_fraction(interval)
    while busy is not None and busy > threshold and waited < max_wait:
        if on_wait is not None and waited == 0:
            on_wait(busy)
        time.sleep(1.0)
        waited += 1.0 + interval
        busy = busy_fraction(interval)
    return waited, busy


def _own_cpu_seconds() -> float:
    return sum(os.times()[:2])


class Contention:
    """Accumulates the CPU time OTHER processes use while measurements run.

    ``with meter.measure(): ...`` first waits up to ``wait_idle`` seconds for idle CPUs (0: no
    waiting), then adds the interval's wall seconds and the CPU seconds used by everything but
    this process. :attr:`others_fraction` is their share of all CPUs over the measured time.
    """

    def __init__(self, wait_idle: float = 0.0):
        self.wait_idle = float(wait_idle)
        self.reset()

    def reset(self) -> None:
        self.others_cpu_s = 0.0
        self.wall_s = 0.0

    @property
    def others_fraction(self) -> float | None:
        """CPU seconds of other processes / (measured wall seconds x CPUs); None before any measurement."""
        if self.wall_s <= 0:
            return None
        return self.others_cpu_s / (self.wall_s * (os.cpu_count() or 1))

    def measure(self) -> _Measurement:
        return _Measurement(self)


class _Measurement:
    def __init__(self, meter: Contention):
        self.meter = meter

    def __enter__(self):
        if self.meter.wait_idle > 0:
            wait_for_idle(self.meter.wait_idle, interval=0.25)
        self.t0, self.own0, self.ticks0 = time.perf_counter(), _own_cpu_seconds(), cpu_ticks()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        ticks = cpu_ticks()
        if ticks is not None and self.ticks0 is not None:
            busy_s = (ticks[0] - self.ticks0[0]) / os.sysconf("SC_CLK_TCK")
            self.meter.others_cpu_s += max(busy_s - (_own_cpu_seconds() - self.own0), 0.0)
            self.meter.wall_s += wall
        return False


def time_calls(fn: Callable[[], Any], repeats: int, *, contention: Contention | None = None) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``, each blocked until its (JAX) result is ready.

    With ``contention``, each call is one of its measurements (idle wait first, if set).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected an int >= 1, got {repeats!r}")
    out = []
    for _ in range(repeats):
        if contention is None:
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            out.append(time.perf_counter() - t0)
            continue
        with contention.measure():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            out.append(time.perf_counter() - t0)
    return out


def best_of(fn: Callable[[], Any], repeats: int, *, contention: Contention | None = None) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (the one least disturbed by other processes)."""
    return min(time_calls(fn, repeats, contention=contention))
