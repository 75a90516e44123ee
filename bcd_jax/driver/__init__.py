"""The driver: everything around an algorithm's sweep, written once for every family.

=================== ====================================================================
module              concern
=================== ====================================================================
``functional``      ``BCDState``, ``init_state``, ``sweep``, ``run``, ``record``, ``predict``, ``evaluate``
``loop``            the compiled multi-sweep ``lax.scan``: records, divergence freeze, stopping rules
``fit``             ``fit``: checks, initial state, chunks, interrupts, ``FitResult``
``grid``            hyperparameter grids: many runs of one structure in one compiled program
``checkpoint``      atomic ``.npz`` checkpoints of the blocks pytree; resume checks
``blocks``          block names and per-sample blocks, read off the blocks pytree
``memory``          a compiled program's memory need against the device's free memory
``progress``        progress meters: none, text line, tqdm
``sharding``        sample sharding over a device mesh; several processes
=================== ====================================================================
"""

import jax

from bcd_jax.driver import grid, loop
from bcd_jax.driver.fit import BCDDivergenceWarning, FitResult, fit
from bcd_jax.driver.functional import (
    BCDState,
    RunOutput,
    evaluate,
    init_params,
    init_state,
    predict,
    record,
    run,
    sweep,
)
from bcd_jax.driver.grid import GridRun, run_grid
from bcd_jax.driver.loop import SweepInfo

__all__ = [
    "clear_caches",
    "BCDDivergenceWarning",
    "BCDState",
    "FitResult",
    "GridRun",
    "RunOutput",
    "SweepInfo",
    "evaluate",
    "fit",
    "init_params",
    "init_state",
    "predict",
    "record",
    "run",
    "run_grid",
    "sweep",
]


def clear_caches() -> None:
    """Frees every compiled program that bcd_jax and JAX keep for reuse.

    Each compiled XLA:CPU program holds memory mappings of its own; a process that compiles
    thousands of distinct programs (a long test session, a grid over many structures) can run
    out of them (Linux allows 65530 per process). The next call of each function compiles again.
    """
    import sys

    loop.clear_compiled()
    grid.clear_compiled()
    baselines = sys.modules.get("bcd_jax.baselines")  # an optional extra (optax): only if it was used
    if baselines is not None:
        baselines.clear_compiled()
    jax.clear_caches()
