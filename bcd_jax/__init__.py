"""bcd_jax: block coordinate descent for neural networks (Akiyama, NeurIPS 2025) in JAX."""

from bcd_jax.activations import ACTIVATIONS, Activation, get_activation
from bcd_jax.algorithms import ALGORITHMS, AlgorithmSpec, get_algorithm
from bcd_jax.config import Config, StepSizes, load_config
from bcd_jax.data import teacher_problem
from bcd_jax.losses import LOSSES, Loss, get_loss
from bcd_jax.model import hidden_forward, init_params, predict, singular_value_bounding
from bcd_jax.solver import (
    BCDDivergenceWarning,
    BCDState,
    Diagnostics,
    FitResult,
    diagnostics,
    fit,
    init_state,
    run,
    sweep,
)

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "Loss",
    "get_loss",
    "ACTIVATIONS",
    "ALGORITHMS",
    "Activation",
    "AlgorithmSpec",
    "BCDDivergenceWarning",
    "BCDState",
    "Config",
    "Diagnostics",
    "FitResult",
    "StepSizes",
    "diagnostics",
    "fit",
    "get_activation",
    "get_algorithm",
    "hidden_forward",
    "init_params",
    "init_state",
    "load_config",
    "predict",
    "run",
    "singular_value_bounding",
    "sweep",
    "teacher_problem",
]
