"""BCD algorithm families behind one protocol, and their registry.

Each family is one module with a frozen, hashable :class:`Algorithm` subclass (see
:mod:`bcd_jax.algorithms.base` for the protocol). ``ALGORITHMS`` maps a name to a factory
``(**structure) -> Algorithm``; a family registers each of its variants here, and the tests
run over this dict, so a new entry is tested automatically.

======================== ============================================= ==========================
name                     what                                          module
======================== ============================================= ==========================
monotone                 Akiyama, Algorithm 1 (strictly monotone sigma) ``akiyama.py``
relu_skip                Akiyama, Algorithm 3 (ReLU, skips, projection) ``akiyama.py``
relu_noskip              Algorithm 3 without skips (Figure 2 ablation)  ``akiyama.py``
whole_objective          Akiyama's sweep descending the whole F         ``whole_objective.py``
zeng_three_splitting     Zeng et al. 2019: blocks W, V, U, closed forms ``zeng.py``
zeng_two_splitting       Zeng et al. 2019: blocks W, V, prox-linear     ``zeng.py``
======================== ============================================= ==========================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bcd_jax.algorithms.akiyama import Akiyama, AkiyamaHyper
from bcd_jax.algorithms.base import REQUIRED_INFO_FIELDS, Algorithm, Data, make_data, network_metrics
from bcd_jax.algorithms.whole_objective import WholeObjective, WholeObjectiveHyper
from bcd_jax.algorithms.zeng import Zeng, ZengHyper

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Akiyama",
    "AkiyamaHyper",
    "WholeObjective",
    "WholeObjectiveHyper",
    "Zeng",
    "ZengHyper",
    "Data",
    "REQUIRED_INFO_FIELDS",
    "get_algorithm",
    "make_data",
    "network_metrics",
    "register",
]

ALGORITHMS: dict[str, Callable[..., Algorithm]] = {}


def register(name: str, factory: Callable[..., Algorithm], *, overwrite: bool = False) -> None:
    """Adds ``factory`` (``(**structure) -> Algorithm``) to the registry under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if name in ALGORITHMS and not overwrite:
        raise ValueError(f"name: {name!r} is already registered; pass overwrite=True to replace it")
    if not callable(factory):
        raise ValueError(f"factory: expected a callable returning an Algorithm, got {type(factory).__name__}")
    ALGORITHMS[name] = factory


for _variant in ("monotone", "relu_skip", "relu_noskip"):
    register(_variant, functools.partial(Akiyama, variant=_variant))
for _splitting in ("three", "two"):
    register(f"zeng_{_splitting}_splitting", functools.partial(Zeng, splitting=_splitting))
register("whole_objective", WholeObjective)


def get_algorithm(algorithm: str | Algorithm | dict[str, Any], **structure) -> Algorithm:
    """An :class:`Algorithm` from a registry name (with structural options), a description
    (``{"name": ..., **options}``, as TOML's ``[algorithm]`` table) or an Algorithm itself."""
    if isinstance(algorithm, Algorithm):
        if structure:
            raise ValueError(f"algorithm: options {sorted(structure)} given with an Algorithm object; set its fields")
        return algorithm
    if isinstance(algorithm, dict):
        options = dict(algorithm)
        if "name" not in options:
            raise ValueError(
                f"algorithm: a table needs a 'name' (one of {sorted(ALGORITHMS)}), got keys {sorted(options)}"
            )
        name = options.pop("name")
        return get_algorithm(name, **options, **structure)
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown name {algorithm!r}; expected one of {sorted(ALGORITHMS)}")
    try:
        return ALGORITHMS[algorithm](**structure)
    except TypeError as exc:
        raise ValueError(f"algorithm: bad option for {algorithm!r}: {exc}") from None
