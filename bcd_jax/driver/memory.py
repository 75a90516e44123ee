"""Will a compiled program fit in memory? Checked before it runs, from the program itself.

XLA reports what a compiled program needs (its arguments, outputs and temporaries:
``Compiled.memory_analysis()``); that is compared with what the device has free (on CPU the
machine's available memory, on an accelerator the device's limit less what is in use). A
program that cannot fit is refused with a message that says how much it needs and which
options make it smaller, instead of failing after minutes with a traceback — or being killed.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import jax

__all__ = ["MemoryNeedError", "program_bytes", "available_bytes", "check_memory", "memory_advice"]

# Headroom for what the estimate does not see (the Python process, JAX's own buffers).
_MARGIN = 0.9


class MemoryNeedError(ValueError):
    """A compiled program needs more memory than the device has free."""


# program -> its need: XLA's memory_analysis() costs 5-30 ms a call on a 2-core CPU (more than a whole short
# fit), and fit() asks it of the same cached program on every call.
_NEEDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def program_bytes(program) -> int | None:
    """Bytes a compiled program needs (arguments + outputs + temporaries - aliased), or None if unknown.

    Remembered per program object (the analysis of a compiled program never changes).
    """
    try:
        return _NEEDS[program]
    except (KeyError, TypeError):  # not asked yet, or an object that takes no weak reference
        pass
    try:
        stats = program.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if stats is None:
        return None
    total = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    need = int(total - stats.alias_size_in_bytes)
    try:
        _NEEDS[program] = need
    except TypeError:
        pass
    return need


def available_bytes(device=None) -> int | None:
    """Free memory of ``device`` (default: the first one), or None if unknown."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001
        return None
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return None


def memory_advice(config) -> str:
    """Options that make a run of ``config`` smaller (one sentence)."""
    algorithm = config.algorithm
    tips = []
    if getattr(algorithm, "spectral_diagnostics", False):
        tips.append("algorithm.spectral_diagnostics = false (SVDs of every weight)")
    if getattr(algorithm, "inner", None) == "exact":
        tips.append("algorithm.inner = 'gd' (no per-row Newton systems)")
    tips.append(f"a narrower network (network.width = {config.network.width})")
    tips.append("fewer samples, or sample sharding over more devices (fit(mesh=...))")
    return "Options that need less: " + "; ".join(tips) + "."


def check_memory(program, X, config) -> None:
    """Raises :class:`MemoryNeedError` if ``program`` needs more than the device of ``X`` has free."""
    need = program_bytes(program)
    devices = list(getattr(X, "devices", lambda: [])()) or [jax.devices()[0]]
    free = available_bytes(devices[0])
    if need is None or free is None:
        return
    per_device = need  # a sharded program's analysis is per device
    if per_device > _MARGIN * free:
        raise MemoryNeedError(
            f"memory: this run needs about {per_device / 2**30:.1f} GiB on {devices[0].platform} but "
            f"{free / 2**30:.1f} GiB is free (estimated from the compiled program before running). "
            + memory_advice(config)
        )
