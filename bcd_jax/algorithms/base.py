"""The protocol every BCD family implements.

A family is a frozen dataclass: its fields are its *structure* (variant, inner iteration counts,
inner mode), hashable, so the object is a static argument of every compiled function, and
``__post_init__`` checks them when the object is built. Its traced numbers are a separate
``Hyper`` NamedTuple (gamma, step sizes, proximal weights), so new values never recompile and a
grid can ``vmap`` over them. Its state is a pytree of its own blocks. A family writes:

=================================================== ==========================================
member                                              what
=================================================== ==========================================
dataclass fields                                    the structure (checked in ``__post_init__``)
``Hyper``                                           NamedTuple of traced numbers, each with a default
``init(weights, data, network) -> blocks``          the initial blocks from the network weights
``step(blocks, data, cache, hyper, network)``       ONE sweep: ``-> (blocks, extras)``
``weights(blocks) -> (W_1, ..., W_L)``              the network the blocks hold
=================================================== ==========================================

and may override (defaults in brackets):

* ``objective(blocks, data, hyper, network)`` — the function its sweep descends, as F / n on the
  library's one scale (per-sample losses as written, e.g. ``1/2 ||.||^2`` for the squared loss,
  and penalty terms ``c/2 ||.||^2``) [the network's mean training loss];
* ``prepare(data, network)`` — data-only caches (``X X^T``, a factorisation), once per run [``()``];
* ``init_weights(key, network, d_in, d_out, dtype)`` — the family's initialisation [``N(0, 1/fan_in)``];
* ``resolve(network, hyper) -> network`` — host-side: refuse a network or numbers the family
  cannot train (a ``ValueError`` naming the field), decide what was left open [``skip=False``
  when unset; every hyper field a finite number >= 0];
* ``name`` / ``paper`` — the registry name and a citation [the name it was registered under].

``extras`` is whatever per-sweep diagnostics the family adds (a NamedTuple of arrays, or
``()``): the driver computes the shared ones — the objective, the network's training,
validation and test losses and accuracies, the movement of the blocks — itself, once, and
stacks ``extras`` next to them. Block names (``W_1``, ``V_2``: a tuple field ``W`` gives
``W_1, W_2, ...``) come from the blocks' pytree, and which blocks run over the samples (split by
sample sharding) from their shapes: nothing to declare.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from bcd_jax.network import Network, gaussian_weights, input_features, network_output
from bcd_jax.validation import check_float

__all__ = ["Algorithm", "Data", "make_data", "mean_squared_norm", "mean_network_loss", "refuse_flat_activations"]


class Data(NamedTuple):
    """The arrays a sweep reads: training features (bias column included) and targets ``(n, d_out)``."""

    X: jax.Array
    Y: jax.Array


def make_data(X, Y, network: Network) -> Data:
    """``Data`` from checked arrays: appends the bias column where the network has one."""
    return Data(input_features(X, network.bias), Y)


def mean_squared_norm(r):
    """``mean_i ||r_i||^2`` over the rows of ``r``."""
    return jnp.mean(jnp.sum(r * r, axis=-1))


def mean_network_loss(weights, data: Data, network: Network):
    """``mean_i loss(f(x_i), y_i)`` of the network ``weights`` (per-sample loss as written)."""
    pred = network_output(weights, data.X, network)
    return jnp.mean(jax.vmap(network.loss_fn)(pred, data.Y))


def refuse_flat_activations(activations, family: str) -> None:
    """A ``ValueError`` for a piecewise-constant activation (step, sign, staircases) in a family
    that moves blocks along sigma': there sigma' = 0, so such a block would never move."""
    for j, act in enumerate(activations, start=1):
        if act.piecewise_constant:
            raise ValueError(
                f"activation: layer {j}'s {act.name!r} is piecewise constant (its derivative is 0 almost everywhere), "
                f"so {family!r}'s gradient-based blocks cannot train it; use 'zeng_three_splitting' or "
                "'annealed_three_splitting', whose U blocks "
                "are exact minimisations for any piecewise-linear activation"
            )


# Filled by ``bcd_jax.algorithms.register``: (class, the fields the name fixes, name). One class
# can stand for several names (``Akiyama(variant="monotone")`` is ``"monotone"``).
REGISTERED_CLASSES: list[tuple[type, dict[str, Any], str]] = []


@dataclasses.dataclass(frozen=True)
class Algorithm(abc.ABC):
    """A BCD family: static structure as dataclass fields, numbers in ``Hyper``, pure functions.

    See the module docstring for the protocol; register one with
    :func:`bcd_jax.algorithms.register`.
    """

    Hyper: ClassVar[type]

    # -- required ---------------------------------------------------------------------------
    @abc.abstractmethod
    def init(self, weights, data: Data, network: Network) -> Any:
        """The initial blocks (a pytree) from the initial weights ``(W_1, ..., W_L)``."""

    @abc.abstractmethod
    def step(self, blocks, data: Data, cache, hyper, network: Network) -> tuple[Any, Any]:
        """One sweep over the blocks; returns ``(new_blocks, extras)``."""

    @abc.abstractmethod
    def weights(self, blocks) -> tuple[jax.Array, ...]:
        """The network weights ``(W_1, ..., W_L)`` held in ``blocks``."""

    # -- optional ---------------------------------------------------------------------------
    def objective(self, blocks, data: Data, hyper, network: Network) -> jax.Array:
        """F / n, the function the sweep descends (see the module docstring for the scale)."""
        del hyper
        return mean_network_loss(self.weights(blocks), data, network)

    def prepare(self, data: Data, network: Network) -> Any:
        """Data-only caches, computed once per run. Default: none."""
        del data, network
        return ()

    def init_weights(self, key: jax.Array, network: Network, d_in: int, d_out: int, dtype) -> tuple[jax.Array, ...]:
        """The initial ``(W_1, ..., W_L)``. Default: ``W_j ~ N(0, 1/fan_in)`` entrywise."""
        return tuple(gaussian_weights(key, network.layer_shapes(d_in, d_out), dtype))

    def resolve(self, network: Network, hyper) -> Network:
        """Host side: the network this family trains with ``hyper`` (``skip`` decided), or a ``ValueError``.

        The default refuses a hyper field that is not a finite number >= 0 and trains the plain
        form when ``skip`` is unset. Families that override it call ``super().resolve`` first.
        """
        for field, value in zip(hyper._fields, hyper):
            check_float(f"hyper.{field}", value, low=0)
        return network if network.skip is not None else network.replace(skip=False)

    @property
    def name(self) -> str:
        """The registry name this object stands for (e.g. ``"monotone"``)."""
        for cls, fixed, name in reversed(REGISTERED_CLASSES):
            if type(self) is cls and all(getattr(self, k) == v for k, v in fixed.items()):
                return name
        return type(self).__name__

    @property
    def paper(self) -> str:
        """Where the method is described (for plots and reports)."""
        return self.name

    # -- derived, not overridden --------------------------------------------------------------
    def make_hyper(self, values: dict[str, Any] | None = None):
        """``Hyper`` from a mapping (missing fields take their defaults), each value a plain float."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.Hyper._fields))
        if unknown:
            raise ValueError(
                f"hyper: unknown key(s) {unknown} for {self.name!r}; expected some of {list(self.Hyper._fields)}"
            )
        hyper = self.Hyper(**values)
        return type(hyper)(*(check_float(f"hyper.{k}", v) for k, v in zip(hyper._fields, hyper)))

    def describe(self) -> dict[str, Any]:
        """A lossless, JSON-ready description: the registry name and every structural field
        (but those the name fixes, such as ``Akiyama.variant``)."""
        name = self.name
        implied = {k for cls, fixed, n in REGISTERED_CLASSES if n == name and type(self) is cls for k in fixed}
        out: dict[str, Any] = {"name": name}
        for field in dataclasses.fields(self):
            if field.name in implied:
                continue
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes) -> Algorithm:
        return dataclasses.replace(self, **changes)
