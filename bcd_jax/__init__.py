"""bcd_jax: block coordinate descent for neural networks in JAX.

Akiyama's Algorithms 1-3 (NeurIPS 2025) and the BCD families around them, behind one
algorithm protocol (:mod:`bcd_jax.algorithms`) and one driver (:mod:`bcd_jax.driver`).
"""

from bcd_jax.activations import ACTIVATIONS, Activation, get_activation, register_activation
from bcd_jax.algorithms import ALGORITHMS, Algorithm, get_algorithm, register
from bcd_jax.algorithms.akiyama import Akiyama, AkiyamaBlocks, AkiyamaHyper, Diagnostics
from bcd_jax.algorithms.whole_objective import WholeObjective, WholeObjectiveHyper
from bcd_jax.algorithms.zeng import Zeng, ZengBlocks, ZengHyper
from bcd_jax.config import Config, load_config
from bcd_jax.data import teacher_problem
from bcd_jax.driver import (
    BCDDivergenceWarning,
    BCDState,
    FitResult,
    clear_caches,
    diagnostics,
    fit,
    init_params,
    init_state,
    predict,
    run,
    sweep,
)
from bcd_jax.losses import LOSSES, Loss, get_loss, register_loss
from bcd_jax.network import Network, hidden_forward

__version__ = "0.2.0"

__all__ = [
    "ACTIVATIONS",
    "ALGORITHMS",
    "LOSSES",
    "Activation",
    "Akiyama",
    "AkiyamaBlocks",
    "AkiyamaHyper",
    "Algorithm",
    "BCDDivergenceWarning",
    "BCDState",
    "Config",
    "Diagnostics",
    "FitResult",
    "Loss",
    "Network",
    "WholeObjective",
    "WholeObjectiveHyper",
    "Zeng",
    "ZengBlocks",
    "ZengHyper",
    "clear_caches",
    "diagnostics",
    "fit",
    "get_activation",
    "get_algorithm",
    "get_loss",
    "hidden_forward",
    "init_params",
    "init_state",
    "load_config",
    "predict",
    "register",
    "register_activation",
    "register_loss",
    "run",
    "sweep",
    "teacher_problem",
]
