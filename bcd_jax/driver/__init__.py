"""The driver: everything around an algorithm's sweep, written once for every family.

=================== ====================================================================
module              concern
=================== ====================================================================
``functional``      ``BCDState``, ``init_state``, ``sweep``, ``run``, ``diagnostics``, ``predict``
``loop``            the compiled multi-sweep ``lax.scan``, frozen at the first non-finite sweep
``fit``             ``fit``: checks, initial state, chunks, divergence report, ``FitResult``
``checkpoint``      atomic ``.npz`` checkpoints of the blocks pytree; resume checks
``progress``        progress meters: none, text line, tqdm
``sharding``        sample sharding over a device mesh; several processes
``sweeps``          hyperparameter sweeps: many runs in one compiled program
=================== ====================================================================
"""

import jax

from bcd_jax.driver import loop, sweeps
from bcd_jax.driver.fit import BCDDivergenceWarning, FitResult, fit
from bcd_jax.driver.functional import BCDState, diagnostics, init_params, init_state, predict, run, sweep

__all__ = [
    "clear_caches",
    "BCDDivergenceWarning",
    "BCDState",
    "FitResult",
    "diagnostics",
    "fit",
    "init_params",
    "init_state",
    "predict",
    "run",
    "sweep",
]


def clear_caches() -> None:
    """Frees every compiled program that bcd_jax and JAX keep for reuse.

    Each compiled XLA:CPU program holds memory mappings of its own; a process that compiles
    thousands of distinct programs (a long test session, a sweep over many structures) can run
    out of them (Linux allows 65530 per process). The next call of each function compiles again.
    """
    from bcd_jax import baselines  # an optional extra (optax) is imported only when used

    loop.clear_compiled()
    sweeps.clear_compiled()
    baselines.clear_compiled()
    jax.clear_caches()
