"""The functional API: a state pytree, one sweep, many sweeps, predictions and metrics.

These compose with your own JAX code (``jit``, ``vmap``, optax pipelines)::

    state = bcd_jax.init_state(weights, X, Y, config)        # blocks + data-only cache
    state, info = bcd_jax.sweep(state, X, Y, config)          # ONE sweep, pure, jit-compiled
    out = bcd_jax.run(state, X, Y, config, num_sweeps=10)     # many, in one compiled scan

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
from bcd_jax.driver.blocks import block_arrays, floating_leaves
from bcd_jax.driver.loop import (
    EvalSets,
    SweepInfo,
    init_weights_jit,
    network_metrics,
    prepare_and_init_jit,
    run_loop_jit,
    state_record_jit,
    sweep_record,
)
from bcd_jax.network import input_features, network_output
from bcd_jax.stopping import initial_stop_state, stop_arrays
from bcd_jax.validation import check_data, check_inputs, check_int, check_weights

__all__ = [
    "BCDState",
    "RunOutput",
    "init_state",
    "sweep",
    "run",
    "record",
    "init_params",
    "predict",
    "evaluate",
    "checked_data",
    "checked_eval_set",
    "check_state",
    "default_config",
]


class BCDState(NamedTuple):
    """The whole state of a BCD run, a pytree.

    Attributes:
      blocks: the algorithm's blocks (Akiyama: ``LayerBlocks(W, V)``).
      cache: data-only arrays the algorithm prepared from the training inputs (not checkpointed).
      sweep: the number of sweeps completed (int32 scalar).
    """

    blocks: Any
    cache: Any
    sweep: jax.Array


class RunOutput(NamedTuple):
    """What :func:`run` returns.

    Attributes:
      state: the final state (the last finite one if the run diverged).
      initial: the :class:`bcd_jax.SweepInfo` of the input state.
      history: the stacked records of the ``num_sweeps`` positions (NaN where not run).
      completed: ``(num_sweeps,)`` bools: which positions ran and were kept.
      status: the run's :class:`bcd_jax.Status` code (``RUNNING`` if the budget was not used up
        by a rule: the caller decides whether that is the end).
    """

    state: BCDState
    initial: SweepInfo
    history: SweepInfo
    completed: jax.Array
    status: jax.Array


def default_config(config: Config | None) -> Config:
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


def checked_eval_set(pair, X, Y, config: Config, name: str):
    """A held-out pair ``(X, y)`` checked against the training arrays (features, classes, dtype)."""
    if pair is None:
        return None
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name}: expected a pair (X, y), got {type(pair).__name__}")
    X_e, Y_e = check_data(
        *pair, d_out=Y.shape[1], loss=config.network.loss_fn, num_classes=Y.shape[1], names=(f"{name} X", f"{name} y")
    )
    if X_e.shape[1] != X.shape[1]:
        raise ValueError(f"{name} X: has {X_e.shape[1]} features, X has {X.shape[1]}; expected equal")
    return X_e.astype(X.dtype), Y_e.astype(X.dtype)


def eval_sets(validation, test, network) -> EvalSets:
    """Checked pairs -> :class:`EvalSets` of :class:`Data` (bias column appended)."""
    return EvalSets(
        None if validation is None else make_data(*validation, network),
        None if test is None else make_data(*test, network),
    )


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
        got = block_arrays(state.blocks)
    except (AttributeError, TypeError, IndexError) as exc:  # pragma: no cover - any pytree has leaves
        raise ValueError(f"state: its blocks are not those of {config.algorithm.name!r} ({exc})") from None
    if list(got) != list(want):
        raise ValueError(f"state: expected the blocks {list(want)} of {config.algorithm.name!r}, got {list(got)}")
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
    return {name: tuple(a.shape) for name, a in block_arrays(expected).items()}


def init_params(key: jax.Array, config: Config | None, d_in: int, d_out: int = 1, dtype=jnp.float32):
    """The initial weights ``(W_1, ..., W_L)`` that ``config.algorithm`` prescribes (Akiyama:
    Gaussian, then singular value bounding, Algorithm 2)."""
    config = default_config(config)
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
    config = default_config(config)
    data, X, Y = _data(X, Y, config, params)
    _check_weights(params, config, X.shape[1], Y.shape[1])
    weights = tuple(jnp.asarray(w, X.dtype) for w in params)
    cache, blocks = prepare_and_init_jit(weights, data, algorithm=config.algorithm, network=config.resolved_network)
    return BCDState(blocks, cache, jnp.zeros((), jnp.int32))


def _checked(state, X, Y, config, validation=None, test=None):
    config = default_config(config)
    try:  # only a hint of the class count; check_state reports blocks of another layout
        weights = config.algorithm.weights(state.blocks) if isinstance(state, BCDState) else None
    except (AttributeError, TypeError, IndexError):
        weights = None
    data, X, Y = _data(X, Y, config, weights)
    check_state(state, X, Y, config)
    val = checked_eval_set(validation, X, Y, config, "validation")
    tst = checked_eval_set(test, X, Y, config, "test")
    return config, data, eval_sets(val, tst, config.resolved_network)


def sweep(state: BCDState, X, Y, config: Config | None = None) -> tuple[BCDState, SweepInfo]:
    """One sweep of ``config.algorithm``: a pure, jit-compiled function.

    Returns the new state and its :class:`bcd_jax.SweepInfo` (as computed, even if non-finite;
    :func:`run` is the one that freezes). Can be called inside your own ``jit``/``vmap``; it
    reuses ``state.cache``, and new hyperparameter values do not recompile.
    """
    config, data, evals = _checked(state, X, Y, config)
    return _sweep_jit(
        state,
        data,
        evals,
        config.hyper_arrays(data.X.dtype),
        algorithm=config.algorithm,
        network=config.resolved_network,
    )


def record(state: BCDState, X, Y, config: Config | None = None, *, validation=None, test=None) -> SweepInfo:
    """The :class:`bcd_jax.SweepInfo` of a state (for example the initial one); extras are NaN."""
    config, data, evals = _checked(state, X, Y, config, validation, test)
    return state_record_jit(
        state.blocks,
        data,
        evals,
        config.hyper_arrays(data.X.dtype),
        algorithm=config.algorithm,
        network=config.resolved_network,
    )


def run(
    state: BCDState, X, Y, config: Config | None = None, num_sweeps: int | None = None, *, validation=None, test=None
) -> RunOutput:
    """Runs up to ``num_sweeps`` (default ``config.sweeps``) sweeps in one compiled ``lax.scan``.

    The run freezes at the first non-finite sweep and stops early by ``config.stop``; see
    :class:`RunOutput`.
    """
    config = default_config(config)
    num_sweeps = config.sweeps if num_sweeps is None else check_int("num_sweeps", num_sweeps, low=1)
    config, data, evals = _checked(state, X, Y, config, validation, test)
    dtype = data.X.dtype
    out = run_loop_jit(
        state.blocks,
        state.cache,
        data,
        evals,
        config.hyper_arrays(dtype),
        stop_arrays(config.stop, dtype),
        initial_stop_state(np.nan, dtype),
        algorithm=config.algorithm,
        network=config.resolved_network,
        num_sweeps=num_sweeps,
    )
    done = state.sweep + jnp.sum(out.completed).astype(jnp.int32)
    return RunOutput(
        BCDState(out.blocks, state.cache, done), out.initial, out.history, out.completed, out.stop_state.status
    )


def predict(params, X, config: Config | None = None) -> jax.Array:
    """Evaluates ``f(X)`` for a batch ``X: (n, d_in)``; returns ``(n, d_out)``.

    For a classification loss these are the class scores (logits); ``argmax`` gives the class.
    """
    config = default_config(config)
    network = config.resolved_network
    X = check_inputs(X, "X")
    try:
        d_in, d_out = np.shape(params[0])[1] - int(bool(network.bias)), np.shape(params[-1])[0]
    except (TypeError, IndexError, KeyError):
        d_in, d_out = X.shape[1], 1  # not a tuple of matrices: check_weights says so
    _check_weights(params, config, d_in, d_out)
    if X.shape[1] != d_in:
        raise ValueError(f"X: has {X.shape[1]} columns; the weights expect d_in = {d_in}")
    weights = tuple(jnp.asarray(w, X.dtype) for w in params)
    return network_output(weights, input_features(X, network.bias), network)


def evaluate(params, X, y, config: Config | None = None) -> dict[str, float]:
    """The network's ``loss``, ``mse`` and ``accuracy`` (NaN for regression) on ``(X, y)``.

    The same numbers the training history reports (loss in its reported scale: the MSE for the
    squared loss), for a set the run never saw.
    """
    config = default_config(config)
    network = config.resolved_network
    X, Y = checked_data(X, y, config, params, names=("X", "y"))
    _check_weights(params, config, X.shape[1], Y.shape[1])
    weights = tuple(jnp.asarray(w, X.dtype) for w in params)
    loss, mse, accuracy = _metrics_jit(weights, make_data(X, Y, network), network=network)
    return {"loss": float(loss), "mse": float(mse), "accuracy": float(accuracy)}


def _sweep(state: BCDState, data: Data, evals: EvalSets, hyper, algorithm, network):
    blocks, extras = algorithm.step(state.blocks, data, state.cache, hyper, network)
    moved = sum(jnp.sum(jnp.square(a - b)) for a, b in zip(floating_leaves(blocks), floating_leaves(state.blocks)))
    info = sweep_record(algorithm, blocks, extras, data, evals, hyper, network, moved)
    return BCDState(blocks, state.cache, state.sweep + 1), info


_sweep_jit = jax.jit(_sweep, static_argnames=("algorithm", "network"))
_metrics_jit = jax.jit(
    lambda w, data, network: network_metrics(w, data, network, data.X.dtype), static_argnames=("network",)
)
