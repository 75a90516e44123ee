"""The functional API: a state pytree, one sweep, many sweeps, diagnostics.

These compose with your own JAX code (``jit``, ``vmap``, optax pipelines)::

    state = bcd_jax.init_state(weights, X, Y, config)        # blocks + data-only cache
    state, info = bcd_jax.sweep(state, X, Y, config)          # ONE sweep, pure, jit-compiled
    state, initial, history, completed = bcd_jax.run(state, X, Y, config, num_sweeps=10)

The structure (network, algorithm) is static; the hyperparameters are traced, so new values
never recompile. ``state.cache`` holds the data-only work (``X X^T``, a factorisation) that
``init_state`` did once: ``sweep`` reuses it on every call, also inside your own ``jit``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bcd_jax.algorithms.base import Data, make_data
from bcd_jax.config import Config
from bcd_jax.driver.loop import init_weights_jit, prepare_and_init_jit, run_loop_jit
from bcd_jax.network import input_features, network_output
from bcd_jax.validation import check_data, check_inputs, check_int, check_weights

__all__ = [
    "BCDState",
    "init_state",
    "sweep",
    "run",
    "diagnostics",
    "init_params",
    "predict",
    "checked_data",
    "check_state",
]


class BCDState(NamedTuple):
    """The whole state of a BCD run, a pytree.

    Attributes:
      blocks: the algorithm's blocks (Akiyama: ``AkiyamaBlocks(weights, hidden)``).
      cache: data-only arrays the algorithm prepared from the training inputs (not checkpointed).
      sweep: the number of sweeps completed (int32 scalar).
    """

    blocks: Any
    cache: Any
    sweep: jax.Array


def _default(config: Config | None) -> Config:
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    return config


def _output_rows(params) -> int | None:
    if isinstance(params, (tuple, list)) and params:
        shape = np.shape(params[-1])
        return shape[0] if len(shape) == 2 else None
    return None


def checked_data(X, Y, config: Config, weights=None, names=("X", "Y")):
    """Host-side checks of a data pair for ``config``; classification labels become target rows.

    ``weights`` (if given) only tell how many classes integer labels range over; their shapes
    are checked separately, with a message about the weights.
    """
    network = config.network
    loss = network.loss_fn
    classes = network.num_classes or (_output_rows(weights) if loss.task != "regression" else None)
    return check_data(X, Y, loss=loss, num_classes=classes, names=names)


def _check_weights(weights, config: Config, d_in: int, d_out: int, name="params") -> None:
    network = config.network
    check_weights(weights, network.layer_shapes(d_in, d_out), width=network.width, name=name)


def check_state(state, X, Y, config: Config) -> None:
    """Checks that ``state`` has the blocks ``config.algorithm`` builds for data of these shapes."""
    if not isinstance(state, BCDState):
        raise ValueError(f"state: expected a BCDState (see bcd_jax.init_state), got {type(state).__name__}")
    want = _expected_block_shapes(
        config.algorithm,
        config.resolved_network,
        jax.ShapeDtypeStruct(X.shape, X.dtype),
        jax.ShapeDtypeStruct(Y.shape, Y.dtype),
    )
    try:
        got = config.algorithm.block_arrays(state.blocks)
    except (AttributeError, TypeError, IndexError) as exc:
        raise ValueError(f"state: its blocks are not those of {config.algorithm.name!r} ({exc})") from None
    if sorted(got) != sorted(want):
        raise ValueError(f"state: expected the blocks {sorted(want)}, got {sorted(got)}")
    for name, a in got.items():
        if tuple(np.shape(a)) != want[name]:
            raise ValueError(f"state: {name} has shape {tuple(np.shape(a))}; expected {want[name]}")


@functools.lru_cache(maxsize=64)
def _expected_block_shapes(algorithm, network, X, Y) -> dict[str, tuple[int, ...]]:
    """``{block name: shape}`` that ``algorithm.init`` builds for data of these shapes.

    Cached: ``sweep`` checks its state on every call, and tracing ``init`` each time would be
    host work on that path."""
    weights = tuple(jax.ShapeDtypeStruct(s, X.dtype) for s in network.layer_shapes(X.shape[1], Y.shape[1]))
    expected = jax.eval_shape(lambda w, x, y: algorithm.init(w, make_data(x, y, network), network), weights, X, Y)
    named = jax.eval_shape(algorithm.block_arrays, expected)  # block_arrays may compute (e.g. concatenate)
    return {name: tuple(a.shape) for name, a in named.items()}


def init_params(key: jax.Array, config: Config | None, d_in: int, d_out: int = 1, dtype=jnp.float32):
    """The initial weights ``(W_1, ..., W_L)`` that ``config.algorithm`` prescribes (Akiyama:
    Gaussian, then singular value bounding, Algorithm 2)."""
    config = _default(config)
    d_in = check_int("d_in", d_in, low=1)
    d_out = check_int("d_out", d_out, low=1)
    return init_weights_jit(
        key, algorithm=config.algorithm, network=config.resolved_network, d_in=d_in, d_out=d_out, dtype=jnp.dtype(dtype)
    )


def _data(X, Y, config: Config, weights=None) -> tuple[Data, jax.Array, jax.Array]:
    X, Y = checked_data(X, Y, config, weights)
    return make_data(X, Y, config.resolved_network), X, Y


def init_state(params, X, Y, config: Config | None = None) -> BCDState:
    """The initial state: ``config.algorithm``'s blocks from the weights ``params`` (Akiyama: the
    exact V initialisation ``V_j = h_j``) and its data-only cache."""
    config = _default(config)
    data, X, Y = _data(X, Y, config, params)
    _check_weights(params, config, X.shape[1], Y.shape[1])
    weights = tuple(jnp.asarray(w, X.dtype) for w in params)
    cache, blocks = prepare_and_init_jit(weights, data, algorithm=config.algorithm, network=config.resolved_network)
    return BCDState(blocks, cache, jnp.zeros((), jnp.int32))


def _checked(state, X, Y, config):
    config = _default(config)
    try:  # only a hint of the class count; check_state reports blocks of another layout
        weights = config.algorithm.weights(state.blocks) if isinstance(state, BCDState) else None
    except (AttributeError, TypeError, IndexError):
        weights = None
    data, X, Y = _data(X, Y, config, weights)
    check_state(state, X, Y, config)
    return config, data


def sweep(state: BCDState, X, Y, config: Config | None = None) -> tuple[BCDState, Any]:
    """One sweep of ``config.algorithm``: a pure, jit-compiled function.

    Returns the new state and the algorithm's diagnostics of it (returned as computed, even if
    non-finite; :func:`run` is the one that freezes). Can be called inside your own
    ``jit``/``vmap``; it reuses ``state.cache``, and new hyperparameter values do not recompile.
    """
    config, data = _checked(state, X, Y, config)
    return _sweep_jit(
        state, data, config.hyper_arrays(data.X.dtype), algorithm=config.algorithm, network=config.resolved_network
    )


def diagnostics(state: BCDState, X, Y, config: Config | None = None) -> Any:
    """The algorithm's diagnostics of a state (for example the initial one)."""
    config, data = _checked(state, X, Y, config)
    return _info_jit(
        state.blocks,
        data,
        config.hyper_arrays(data.X.dtype),
        algorithm=config.algorithm,
        network=config.resolved_network,
    )


def run(state: BCDState, X, Y, config: Config | None = None, num_sweeps: int | None = None):
    """Runs ``num_sweeps`` (default ``config.sweeps``) sweeps in one compiled ``lax.scan``.

    Returns ``(state, initial, history, completed)``: the final state (the last finite one if
    the run diverged), the diagnostics of the input state, the stacked per-sweep diagnostics
    (leading axis ``num_sweeps``) and a boolean per sweep that is False from the first sweep
    whose result was non-finite (the state is frozen from there on).
    """
    config = _default(config)
    num_sweeps = config.sweeps if num_sweeps is None else check_int("num_sweeps", num_sweeps, low=1)
    config, data = _checked(state, X, Y, config)
    out = run_loop_jit(
        state.blocks,
        state.cache,
        data,
        config.hyper_arrays(data.X.dtype),
        algorithm=config.algorithm,
        network=config.resolved_network,
        num_sweeps=num_sweeps,
    )
    done = state.sweep + jnp.sum(out.completed).astype(jnp.int32)
    return BCDState(out.blocks, state.cache, done), out.initial, out.history, out.completed


def predict(params, X, config: Config | None = None) -> jax.Array:
    """Evaluates ``f(X)`` for a batch ``X: (n, d_in)``; returns ``(n, d_out)``.

    For a classification loss these are the class scores (logits); ``argmax`` gives the class.
    """
    config = _default(config)
    network = config.resolved_network
    X = check_inputs(X, "X")
    try:
        d_in, d_out = np.shape(params[0])[1] - int(network.bias), np.shape(params[-1])[0]
    except (TypeError, IndexError, KeyError):
        d_in, d_out = X.shape[1], 1  # not a tuple of matrices: check_weights says so
    _check_weights(params, config, d_in, d_out)
    if X.shape[1] != d_in:
        raise ValueError(f"X: has {X.shape[1]} columns; the weights expect d_in = {d_in}")
    weights = tuple(jnp.asarray(w, X.dtype) for w in params)
    return network_output(weights, input_features(X, network.bias), network)


def _sweep(state: BCDState, data: Data, hyper, algorithm, network):
    blocks, info = algorithm.step(state.blocks, data, state.cache, hyper, network)
    return BCDState(blocks, state.cache, state.sweep + 1), info


_sweep_jit = jax.jit(_sweep, static_argnames=("algorithm", "network"))
_info_jit = jax.jit(
    lambda blocks, data, hyper, algorithm, network: algorithm.info(blocks, data, hyper, network),
    static_argnames=("algorithm", "network"),
)
