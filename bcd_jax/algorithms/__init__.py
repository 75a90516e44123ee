"""BCD algorithm families behind one protocol, and their registry.

Each family is one module with a frozen, hashable :class:`Algorithm` subclass (see
:mod:`bcd_jax.algorithms.base` for the protocol). ``ALGORITHMS`` maps a name to a factory
``(**structure) -> Algorithm``; the common test suite runs over it, so a registered family is
tested without new test code. Families of other packages join through the ``bcd_jax.algorithms``
entry-point group or a module that calls :func:`register` (``bcd-jax run --import MODULE``).

======================== ============================================= ==========================
name                     what                                          module
======================== ============================================= ==========================
monotone                 Akiyama, Algorithm 1 (strictly monotone sigma) ``akiyama.py``
relu_skip                Akiyama, Algorithm 3 (ReLU, skips, projection) ``akiyama.py``
relu_noskip              Algorithm 3 without skips (Figure 2 ablation)  ``akiyama.py``
whole_objective          Akiyama's sweep descending the whole F         ``whole_objective.py``
zeng_three_splitting     Zeng et al. 2019: blocks W, V, U, closed forms ``zeng.py``
zeng_two_splitting       Zeng et al. 2019: blocks W, V, prox-linear     ``zeng.py``
annealed_three_splitting the three-splitting, staircase jumps annealed ``annealed.py``
                         from ramps (step, sign, quantised networks)
======================== ============================================= ==========================
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from bcd_jax.algorithms.akiyama import Akiyama, AkiyamaHyper
from bcd_jax.algorithms.annealed import AnnealedBlocks, AnnealedHyper, AnnealedThreeSplitting
from bcd_jax.algorithms.base import REGISTERED_CLASSES, Algorithm, Data, make_data
from bcd_jax.algorithms.layered import LayerBlocks
from bcd_jax.algorithms.whole_objective import WholeObjective, WholeObjectiveHyper
from bcd_jax.algorithms.zeng import Zeng, ZengBlocks, ZengHyper
from bcd_jax.registry import Registry

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Akiyama",
    "AkiyamaHyper",
    "AnnealedBlocks",
    "AnnealedHyper",
    "AnnealedThreeSplitting",
    "Data",
    "LayerBlocks",
    "WholeObjective",
    "WholeObjectiveHyper",
    "Zeng",
    "ZengBlocks",
    "ZengHyper",
    "get_algorithm",
    "make_data",
    "register",
]


def _check_factory(name: str, factory) -> None:
    if not callable(factory):
        raise ValueError(f"factory: expected a callable returning an Algorithm, got {type(factory).__name__}")


def _record_class(name: str, factory) -> None:
    """Keeps ``REGISTERED_CLASSES`` (which class, with which fixed fields, a name stands for) in step
    with the registry, whichever way an entry arrives (``register``, an entry point) or leaves."""
    REGISTERED_CLASSES[:] = [entry for entry in REGISTERED_CLASSES if entry[2] != name]
    cls = _class_of(factory) if factory is not None else None
    if isinstance(cls, type):
        REGISTERED_CLASSES.append((cls, dict(getattr(factory, "keywords", {}) or {}), name))


ALGORITHMS: Registry[Callable[..., Algorithm]] = Registry(
    "algorithm", group="bcd_jax.algorithms", check=_check_factory, on_change=_record_class
)


def register(name: str, factory: Callable[..., Algorithm] | None = None, *, overwrite: bool = False):
    """Adds a family to the registry under ``name``; usable as a class decorator.

    ``factory`` is an :class:`Algorithm` subclass or ``functools.partial(cls, **fixed)`` (one
    class serving several names, as ``Akiyama`` does for its variants: the fixed fields are then
    implied by the name and left out of :meth:`Algorithm.describe`)::

        @bcd_jax.algorithms.register("toy_gd")
        @dataclasses.dataclass(frozen=True)
        class ToyGD(bcd_jax.Algorithm): ...

    An installed package can instead declare the class (or a module that registers it) in the
    ``bcd_jax.algorithms`` entry-point group; it is loaded the first time its name is looked up.
    """
    if factory is None:
        return lambda cls: register(name, cls, overwrite=overwrite)
    ALGORITHMS.register(name, factory, overwrite=overwrite, module=getattr(_class_of(factory), "__module__", None))
    return factory


def _class_of(factory):
    return factory.func if isinstance(factory, functools.partial) else factory


for _variant in ("monotone", "relu_skip", "relu_noskip"):
    register(_variant, functools.partial(Akiyama, variant=_variant))
for _splitting in ("three", "two"):
    register(f"zeng_{_splitting}_splitting", functools.partial(Zeng, splitting=_splitting))
register("whole_objective", WholeObjective)
register("annealed_three_splitting", functools.partial(AnnealedThreeSplitting, splitting="three"))


def get_algorithm(algorithm: str | Algorithm | dict[str, Any], *, module: str | None = None, **structure) -> Algorithm:
    """An :class:`Algorithm` from a registry name (with structural options), a description
    (``{"name": ..., **options}``, as TOML's ``[algorithm]`` table) or an Algorithm itself.

    ``module``: the module that registered the name when it was recorded (a checkpoint's), named
    in the error if the name is unknown here.
    """
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
        return get_algorithm(name, module=module, **options, **structure)
    factory = ALGORITHMS.get_entry(algorithm, where="algorithm", module=module)
    cls = _class_of(factory)
    fields = _fields(cls)
    unknown = sorted(set(structure) - set(fields)) if fields is not None else []
    if unknown:
        raise ValueError(f"algorithm: unknown option(s) {unknown} for {algorithm!r}; expected some of {sorted(fields)}")
    try:
        return factory(**structure)
    except TypeError as exc:
        raise ValueError(f"algorithm: bad option for {algorithm!r}: {exc}") from None


def _fields(cls) -> list[str] | None:
    """The structural options a family class takes (its dataclass fields), or None if unknown."""
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        fixed = {k for c, f, _ in REGISTERED_CLASSES if c is cls for k in f}
        return [f.name for f in dataclasses.fields(cls) if f.name not in fixed]
    return None
