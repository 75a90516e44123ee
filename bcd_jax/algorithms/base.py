"""The protocol every BCD family implements, and the data it sees.

An algorithm is a frozen, hashable dataclass: its fields are its *structure* (variant, inner
iteration counts, inner mode, step rule), so it is a static argument of every compiled
function. Its numbers are a separate ``Hyper`` NamedTuple of traced scalars (gamma, step
sizes, proximal weights, ...), so new values never recompile and a sweep can ``vmap`` over
them. Its state is a pytree of its own blocks. Everything else is pure functions::

    cache          = algorithm.prepare(data, network)                # data-only, once per run
    blocks         = algorithm.init(weights, data, network)          # the initial blocks
    blocks, info   = algorithm.step(blocks, data, cache, hyper, network)   # ONE sweep
    info           = algorithm.info(blocks, data, hyper, network)    # diagnostics of any blocks
    weights        = algorithm.weights(blocks)                       # (W_1, ..., W_L) of the network
    named          = algorithm.block_arrays(blocks)                  # {"W_1": ..., "V_1": ...}

``info`` is a NamedTuple of arrays (what the driver stacks into the history); it must have
the fields of :data:`REQUIRED_INFO_FIELDS`, which :func:`network_metrics` computes for every
family in one place. The driver (``bcd_jax.driver``) knows nothing else about a family: it
runs ``step`` under ``lax.scan``, freezes the blocks at the first sweep whose
:meth:`Algorithm.is_finite` is False, and checkpoints ``blocks`` as a pytree.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from bcd_jax.network import Network, input_features, network_output
from bcd_jax.validation import check_float

__all__ = [
    "Algorithm",
    "Data",
    "REQUIRED_INFO_FIELDS",
    "NetworkMetrics",
    "network_metrics",
    "make_data",
    "mean_squared_norm",
]


class Data(NamedTuple):
    """The arrays a sweep reads: training features (bias column included), targets, optional validation pair."""

    X: jax.Array
    Y: jax.Array
    X_val: jax.Array | None = None
    Y_val: jax.Array | None = None


def make_data(X, Y, network: Network, validation=None) -> Data:
    """``Data`` from checked arrays: appends the bias column where the network has one."""
    if validation is None:
        return Data(input_features(X, network.bias), Y)
    return Data(input_features(X, network.bias), Y, input_features(validation[0], network.bias), validation[1])


class NetworkMetrics(NamedTuple):
    """What every family reports about the real network (not its split objective)."""

    train_loss: jax.Array
    train_mse: jax.Array
    train_accuracy: jax.Array
    val_loss: jax.Array
    val_mse: jax.Array
    val_accuracy: jax.Array


# Fields the driver reads from every info: ``objective`` (the family's own objective, which its
# sweep decreases) and the network metrics (progress line, CLI, sweeps' summaries).
REQUIRED_INFO_FIELDS = ("objective", *NetworkMetrics._fields)


def mean_squared_norm(r):
    """``mean_i ||r_i||^2`` over the rows of ``r``."""
    return jnp.mean(jnp.sum(r * r, axis=-1))


def network_metrics(weights, data: Data, network: Network) -> NetworkMetrics:
    """Training (and validation) loss, MSE and accuracy of the network ``weights``.

    Losses are means over samples in the loss's reported scale (squared loss: ``||.||^2``,
    no 1/2); accuracy is NaN for regression, and every validation entry is NaN without a
    validation set.
    """
    loss = network.loss_fn
    dtype = data.X.dtype

    def mean_loss(pred, target):
        return loss.report_scale * jnp.mean(jax.vmap(loss)(pred, target))

    pred = network_output(weights, data.X, network)
    nan = jnp.asarray(jnp.nan, dtype)
    if data.X_val is not None:
        val_pred = network_output(weights, data.X_val, network)
        val = (
            mean_loss(val_pred, data.Y_val),
            mean_squared_norm(val_pred - data.Y_val),
            loss.accuracy(val_pred, data.Y_val).astype(dtype),
        )
    else:
        val = (nan, nan, nan)
    return NetworkMetrics(
        mean_loss(pred, data.Y), mean_squared_norm(pred - data.Y), loss.accuracy(pred, data.Y).astype(dtype), *val
    )


@dataclasses.dataclass(frozen=True)
class Algorithm(abc.ABC):
    """A BCD family: static structure as dataclass fields, numbers in ``Hyper``, pure functions.

    Subclasses are frozen dataclasses (hashable, so they can be static arguments of ``jit``)
    and define ``Hyper`` (a NamedTuple class with a default for every field) and the abstract
    methods below. Register one with :func:`bcd_jax.algorithms.register`.
    """

    Hyper: ClassVar[type]

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The registry name this object stands for (e.g. ``"monotone"``)."""

    @property
    def paper(self) -> str:
        """Where the method is described (for plots and reports)."""
        return self.name

    # -- host side, before tracing ---------------------------------------------------------
    def check(self, network: Network, hyper) -> None:
        """Raises ``ValueError`` if this algorithm cannot train ``network`` with ``hyper``."""

    def resolve_network(self, network: Network) -> Network:
        """``network`` with ``skip`` decided (``None`` -> the form this algorithm is written for)."""
        return network if network.skip is not None else network.replace(skip=False)

    def make_hyper(self, values: dict[str, Any] | None = None):
        """``Hyper`` from a mapping (missing fields take their defaults), each value checked."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.Hyper._fields))
        if unknown:
            raise ValueError(
                f"hyper: unknown key(s) {unknown} for {self.name!r}; expected some of {list(self.Hyper._fields)}"
            )
        return self.check_hyper(self.Hyper(**values))

    # Hyper fields that may be 0 (the rest must be > 0); every one must be a finite number.
    nonnegative_hyper: ClassVar[tuple[str, ...]] = ("weight_decay",)

    def check_hyper(self, hyper):
        """Validates ``hyper`` (a ``Hyper``) and returns it with plain Python floats: every field a
        finite number, ``> 0`` unless it is named in ``nonnegative_hyper`` (then ``>= 0``)."""
        return type(hyper)(
            **{
                name: check_float(f"hyper.{name}", value, low=0, low_open=name not in self.nonnegative_hyper)
                for name, value in hyper._asdict().items()
            }
        )

    @abc.abstractmethod
    def init_weights(self, key: jax.Array, network: Network, d_in: int, d_out: int, dtype) -> tuple[jax.Array, ...]:
        """Draws the initial ``(W_1, ..., W_L)`` the way this method prescribes."""

    def check_initial_weights(self, weights) -> None:
        """Host-side look at the initial weights of ``fit`` (e.g. a warning); default: nothing."""

    # -- pure functions (traceable) --------------------------------------------------------
    def prepare(self, data: Data, network: Network) -> Any:
        """Data-only caches (``X X^T``, a factorisation), computed once per run. Default: none."""
        del data, network
        return ()

    @abc.abstractmethod
    def init(self, weights, data: Data, network: Network) -> Any:
        """The initial blocks (a pytree) from the initial weights."""

    @abc.abstractmethod
    def step(self, blocks, data: Data, cache, hyper, network: Network) -> tuple[Any, Any]:
        """One sweep over the blocks; returns ``(new_blocks, info of new_blocks)``."""

    @abc.abstractmethod
    def info(self, blocks, data: Data, hyper, network: Network) -> Any:
        """The diagnostics NamedTuple of ``blocks`` (fields include :data:`REQUIRED_INFO_FIELDS`)."""

    @abc.abstractmethod
    def weights(self, blocks) -> tuple[jax.Array, ...]:
        """The network weights ``(W_1, ..., W_L)`` held in ``blocks``."""

    @abc.abstractmethod
    def block_arrays(self, blocks) -> dict[str, jax.Array]:
        """Every block by its name (``"W_1"``, ``"V_2"``, ...), in a fixed order."""

    def per_sample(self, blocks) -> Any:
        """A pytree of bools like ``blocks``: True for a block whose leading axis runs over the
        samples (split across devices by sample sharding), False for one shared by all samples."""
        return jax.tree.map(lambda _: False, blocks)

    def is_finite(self, blocks, info) -> jax.Array:
        """Whether a sweep's result counts: every block and the reported losses are finite.

        Blocks can stay finite while the losses overflow: both are checked.
        """
        checks = [jnp.all(jnp.isfinite(a)) for a in self.block_arrays(blocks).values()]
        checks += [jnp.all(jnp.isfinite(getattr(info, name))) for name in self.finite_info_fields]
        return jnp.all(jnp.stack(checks))

    # Info fields that must be finite for a sweep to count (accuracy and val_* are NaN by design).
    finite_info_fields: ClassVar[tuple[str, ...]] = ("objective", "train_loss", "train_mse")

    def describe(self) -> dict[str, Any]:
        """A lossless, JSON-ready description: the registry name and every structural field."""
        out: dict[str, Any] = {"name": self.name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out
