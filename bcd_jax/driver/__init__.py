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

from bcd_jax.driver.fit import BCDDivergenceWarning, FitResult, fit
from bcd_jax.driver.functional import BCDState, diagnostics, init_params, init_state, predict, run, sweep

__all__ = ["BCDDivergenceWarning", "BCDState", "FitResult", "diagnostics", "fit", "init_params", "init_state",
           "predict", "run", "sweep"]
