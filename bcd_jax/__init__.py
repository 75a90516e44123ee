"""bcd_jax: block coordinate descent for neural networks in JAX.

Akiyama's Algorithms 1-3 (NeurIPS 2025) and the BCD families around them, behind one
algorithm protocol (:mod:`bcd_jax.algorithms`) and one driver (:mod:`bcd_jax.driver`).

The names below are imported on first use (PEP 562), so ``import bcd_jax`` and ``bcd-jax --help``
do not pay for importing JAX until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.3.0"

# name -> the module that defines it
_LAZY = {
    "ACTIVATIONS": "bcd_jax.activations",
    "ALGORITHMS": "bcd_jax.algorithms",
    "LOSSES": "bcd_jax.losses",
    "Activation": "bcd_jax.activations",
    "Akiyama": "bcd_jax.algorithms",
    "AkiyamaHyper": "bcd_jax.algorithms",
    "Algorithm": "bcd_jax.algorithms",
    "BCDDivergenceWarning": "bcd_jax.driver",
    "BCDState": "bcd_jax.driver",
    "Config": "bcd_jax.config",
    "FitResult": "bcd_jax.driver",
    "GridRun": "bcd_jax.driver",
    "LayerBlocks": "bcd_jax.algorithms",
    "Loss": "bcd_jax.losses",
    "Network": "bcd_jax.network",
    "RunOutput": "bcd_jax.driver",
    "Status": "bcd_jax.stopping",
    "Stop": "bcd_jax.stopping",
    "SweepInfo": "bcd_jax.driver",
    "WholeObjective": "bcd_jax.algorithms",
    "WholeObjectiveHyper": "bcd_jax.algorithms",
    "Zeng": "bcd_jax.algorithms",
    "ZengBlocks": "bcd_jax.algorithms",
    "ZengHyper": "bcd_jax.algorithms",
    "clear_caches": "bcd_jax.driver",
    "evaluate": "bcd_jax.driver",
    "fit": "bcd_jax.driver",
    "get_activation": "bcd_jax.activations",
    "get_algorithm": "bcd_jax.algorithms",
    "get_loss": "bcd_jax.losses",
    "hidden_forward": "bcd_jax.network",
    "init_params": "bcd_jax.driver",
    "init_state": "bcd_jax.driver",
    "load_config": "bcd_jax.config",
    "predict": "bcd_jax.driver",
    "record": "bcd_jax.driver",
    "register": "bcd_jax.algorithms",
    "register_activation": "bcd_jax.activations",
    "register_loss": "bcd_jax.losses",
    "run": "bcd_jax.driver",
    "run_grid": "bcd_jax.driver",
    "sweep": "bcd_jax.driver",
    "teacher_problem": "bcd_jax.data",
}

__all__ = sorted(_LAZY)


_SUBMODULES = (
    "activations", "algorithms", "baselines", "benchmarking", "cli", "config", "data", "datasets", "driver",
    "experiments", "interrupts", "io", "losses", "network", "rates", "registry", "stopping", "testing", "theory",
    "validation",
)  # fmt: skip


def __getattr__(name: str):
    if name in _SUBMODULES:  # ``bcd_jax.algorithms.register`` works without importing the module first
        return importlib.import_module(f"bcd_jax.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bcd_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from bcd_jax.activations import ACTIVATIONS, Activation, get_activation, register_activation  # noqa: F401
    from bcd_jax.algorithms import (
        ALGORITHMS,
        Akiyama,
        AkiyamaHyper,
        Algorithm,
        LayerBlocks,
        WholeObjective,
        WholeObjectiveHyper,
        Zeng,
        ZengBlocks,
        ZengHyper,
        get_algorithm,
        register,
    )  # noqa: F401
    from bcd_jax.config import Config, load_config  # noqa: F401
    from bcd_jax.data import teacher_problem  # noqa: F401
    from bcd_jax.driver import (
        BCDDivergenceWarning,
        BCDState,
        FitResult,
        GridRun,
        RunOutput,
        SweepInfo,
        clear_caches,
        evaluate,
        fit,
        init_params,
        init_state,
        predict,
        record,
        run,
        run_grid,
        sweep,
    )  # noqa: F401
    from bcd_jax.losses import LOSSES, Loss, get_loss, register_loss  # noqa: F401
    from bcd_jax.network import Network, hidden_forward  # noqa: F401
    from bcd_jax.stopping import Status, Stop  # noqa: F401
