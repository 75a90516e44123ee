"""The compiled multi-sweep loop, and the record the driver keeps of every sweep.

Knows only the algorithm protocol (:mod:`bcd_jax.algorithms.base`). One compiled program runs
up to ``num_sweeps`` sweeps under ``lax.scan``; ``limit`` (traced) skips the positions
``>= limit``, so one program serves chunks of any length. After each sweep the driver computes
the shared record (:class:`SweepInfo`: the family's objective, the network's metrics on the
training, validation and test sets, the blocks' movement) next to the family's own extras,
freezes the blocks at the first sweep that is not finite, and applies the stopping rules
(:mod:`bcd_jax.stopping`); once the status is not ``RUNNING`` the remaining positions are
skipped (``lax.cond``: not run).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bcd_jax.algorithms.base import Algorithm, Data, make_data
from bcd_jax.driver.blocks import floating_leaves
from bcd_jax.network import Network, network_output
from bcd_jax.stopping import Status, StopArrays, StopState, stop_update

__all__ = [
    "EvalSets",
    "SweepInfo",
    "LoopOutput",
    "network_metrics",
    "sweep_record",
    "state_record",
    "run_loop",
    "prepare_and_init",
    "abstract_problem",
    "compiled_loop",
    "clear_compiled",
    "FINITE_FIELDS",
]


class EvalSets(NamedTuple):
    """Held-out sets the driver reports metrics on (each a :class:`Data`, or None).

    ``val`` may drive stopping rules (patience, a target); ``test`` is only reported.
    """

    val: Data | None = None
    test: Data | None = None


class SweepInfo(NamedTuple):
    """What the driver records after every sweep (entry 0 of a history: the initial state).

    Losses of the network use the loss's reported scale (squared: ``||f(x) - y||^2``, the MSE);
    ``objective`` is the family's F / n on the library's scale (see :mod:`bcd_jax.algorithms.base`).
    Accuracies are NaN for a regression loss, and a held-out set's entries NaN without it.

    Attributes:
      objective: the family's objective, which its sweep decreases.
      train_loss, train_mse, train_accuracy: the network ``f`` on the training set.
      val_loss, val_mse, val_accuracy: on the validation set.
      test_loss, test_mse, test_accuracy: on the test set.
      movement: ``||x_k - x_{k-1}||^2`` summed over every block array (NaN at entry 0), the squared
        step length the sufficient-decrease checks of :mod:`bcd_jax.rates` need.
      extras: the family's own diagnostics (NaN at entry 0: they describe a sweep).
    """

    objective: jax.Array
    train_loss: jax.Array
    train_mse: jax.Array
    train_accuracy: jax.Array
    val_loss: jax.Array
    val_mse: jax.Array
    val_accuracy: jax.Array
    test_loss: jax.Array
    test_mse: jax.Array
    test_accuracy: jax.Array
    movement: jax.Array
    extras: Any


# Entries of a record that must be finite for a sweep to count (accuracies and held-out sets may be NaN).
FINITE_FIELDS = ("objective", "train_loss", "train_mse")


def network_metrics(weights, data: Data | None, network: Network, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(loss, mse, accuracy)`` of the network on ``data`` (means over samples; NaN without data)."""
    nan = jnp.asarray(jnp.nan, dtype)
    if data is None:
        return nan, nan, nan
    loss = network.loss_fn
    pred = network_output(weights, data.X, network)
    r = pred - data.Y
    return (
        loss.report_scale * jnp.mean(jax.vmap(loss)(pred, data.Y)),
        jnp.mean(jnp.sum(r * r, axis=-1)),
        loss.accuracy(pred, data.Y).astype(dtype),
    )


def sweep_record(algorithm: Algorithm, blocks, extras, data: Data, evals: EvalSets, hyper, network: Network, movement):
    """The :class:`SweepInfo` of ``blocks`` (traceable)."""
    dtype = data.X.dtype
    weights = algorithm.weights(blocks)
    return SweepInfo(
        algorithm.objective(blocks, data, hyper, network).astype(dtype),
        *network_metrics(weights, data, network, dtype),
        *network_metrics(weights, evals.val, network, dtype),
        *network_metrics(weights, evals.test, network, dtype),
        jnp.asarray(movement, dtype),
        extras,
    )


def state_record(blocks, data: Data, evals: EvalSets, hyper, *, algorithm: Algorithm, network: Network) -> SweepInfo:
    """The :class:`SweepInfo` of a state that no sweep produced (the initial one): extras NaN."""
    cache = algorithm.prepare(data, network)
    extras = jax.eval_shape(lambda b: algorithm.step(b, data, cache, hyper, network)[1], blocks)
    blank = jax.tree.map(_nan_like, extras)
    return sweep_record(algorithm, blocks, blank, data, evals, hyper, network, jnp.nan)


def _all_finite(a):
    return jnp.all(jnp.isfinite(a)) if jnp.issubdtype(a.dtype, jnp.inexact) else jnp.asarray(True)


def _nan_like(a):
    if jnp.issubdtype(a.dtype, jnp.floating):
        return jnp.full(a.shape, jnp.nan, a.dtype)
    return jnp.zeros(a.shape, a.dtype)


class LoopOutput(NamedTuple):
    """What :func:`run_loop` returns.

    Attributes:
      blocks: the final blocks (the last finite ones if a sweep diverged).
      stop_state: the stopping rules' state after the last position (its ``status``).
      initial: the record of the input blocks.
      history: the stacked record of every position (NaN where skipped).
      completed: ``(num_sweeps,)`` bools: which positions ran and were kept.
      blocks_finite: ``(num_sweeps, number of leaves)`` bools: which blocks each sweep left
        finite (tells where a divergence happened).
    """

    blocks: Any
    stop_state: StopState
    initial: SweepInfo
    history: SweepInfo
    completed: jax.Array
    blocks_finite: jax.Array


def run_loop(
    blocks,
    cache,
    data: Data,
    evals: EvalSets,
    hyper,
    stop: StopArrays,
    state: StopState,
    *,
    algorithm: Algorithm,
    network: Network,
    num_sweeps: int,
    limit=None,
    first=True,
) -> LoopOutput:
    """Up to ``num_sweeps`` sweeps of ``algorithm`` under one ``lax.scan`` (traceable, pure).

    ``limit`` (traced) skips the positions ``>= limit``; ``first`` (traced) says whether to record
    the input blocks (``initial``; NaN otherwise), which a later chunk of a run does not need.
    """
    limit = num_sweeps if limit is None else limit
    classification = network.loss_fn.task != "regression"

    def advance(b):
        new, extras = algorithm.step(b, data, cache, hyper, network)
        moved = sum(jnp.sum(jnp.square(x - y)) for x, y in zip(floating_leaves(new), floating_leaves(b)))
        size = sum(jnp.sum(jnp.square(y)) for y in floating_leaves(b))
        return new, sweep_record(algorithm, new, extras, data, evals, hyper, network, moved), size

    blank = jax.tree.map(_nan_like, jax.eval_shape(advance, blocks))
    initial = lax.cond(
        first,
        lambda b: sweep_record(algorithm, b, blank[1].extras, data, evals, hyper, network, jnp.nan),
        lambda b: blank[1],
        blocks,
    )
    state = state._replace(objective=jnp.where(jnp.isnan(state.objective), initial.objective, state.objective))

    def body(carry, position):
        current, st = carry
        active = jnp.logical_and(st.status == Status.RUNNING, position < limit)
        new, info, size = lax.cond(active, advance, lambda _: blank, current)
        finite_leaves = jnp.stack([_all_finite(a) for a in jax.tree_util.tree_leaves(new)])
        finite = jnp.all(finite_leaves)
        for name in FINITE_FIELDS:
            finite = jnp.logical_and(finite, jnp.all(jnp.isfinite(getattr(info, name))))
        good = jnp.logical_and(active, finite)
        kept = jax.tree.map(lambda a, b: jnp.where(good, a, b), new, current)
        after = stop_update(st, info, size, stop, classification=classification)
        st = jax.tree.map(lambda a, b: jnp.where(good, a, b), after, st)
        failed = jnp.logical_and(active, jnp.logical_not(finite))
        st = st._replace(status=jnp.where(failed, jnp.int32(Status.DIVERGED), st.status))
        return (kept, st), (info, good, finite_leaves)

    positions = jnp.arange(num_sweeps, dtype=jnp.int32)
    (blocks, state), (history, completed, finite) = lax.scan(body, (blocks, state), positions)
    return LoopOutput(blocks, state, initial, history, completed, finite)


def prepare_and_init(weights, data: Data, *, algorithm: Algorithm, network: Network):
    """The data-only cache and the initial blocks (traceable)."""
    return algorithm.prepare(data, network), algorithm.init(weights, data, network)


def abstract_problem(algorithm: Algorithm, network: Network, n: int, d_in: int, d_out: int, dtype=jnp.float32):
    """``(data, cache, blocks)`` of a run on n samples as shapes only (``jax.ShapeDtypeStruct``s):
    with :func:`compiled_loop` they give the compiled loop's memory need before any array exists."""
    sds = jax.ShapeDtypeStruct
    weights = tuple(sds(shape, dtype) for shape in network.layer_shapes(d_in, d_out))
    data = jax.eval_shape(lambda X, Y: make_data(X, Y, network), sds((n, d_in), dtype), sds((n, d_out), dtype))
    cache, blocks = jax.eval_shape(
        lambda w, d: prepare_and_init(w, d, algorithm=algorithm, network=network), weights, data
    )
    return data, cache, blocks


_STATIC = ("algorithm", "network", "num_sweeps")
run_loop_jit = jax.jit(run_loop, static_argnames=_STATIC)
# fit() owns its blocks, so it can hand their buffers to XLA for reuse.
_run_loop_donating = jax.jit(run_loop, static_argnames=_STATIC, donate_argnames=("blocks",))
prepare_and_init_jit = jax.jit(prepare_and_init, static_argnames=("algorithm", "network"))
# One compiled call instead of a dispatch per random draw and SVD.
init_weights_jit = jax.jit(
    lambda key, algorithm, network, d_in, d_out, dtype: algorithm.init_weights(key, network, d_in, d_out, dtype),
    static_argnames=("algorithm", "network", "d_in", "d_out", "dtype"),
)
state_record_jit = jax.jit(state_record, static_argnames=("algorithm", "network"))
prepare_jit = jax.jit(
    lambda data, algorithm, network: algorithm.prepare(data, network), static_argnames=("algorithm", "network")
)


def _abstract(tree):
    """Shapes, dtypes, weak types and shardings of a pytree's arrays: what a compiled program fixes."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=getattr(a, "sharding", None), weak_type=getattr(a, "weak_type", False)
        ),
        tree,
    )


@functools.lru_cache(maxsize=32)
def _compile(algorithm: Algorithm, network: Network, num_sweeps: int, treedef, abstract_leaves):
    # Keyed on the flattened arguments: a pytree node such as a dict of blocks is not hashable.
    abstract_args = jax.tree_util.tree_unflatten(treedef, abstract_leaves)
    blocks, cache, data, evals, hyper, stop, state, limit, first = abstract_args
    return _run_loop_donating.lower(
        blocks,
        cache,
        data,
        evals,
        hyper,
        stop,
        state,
        algorithm=algorithm,
        network=network,
        num_sweeps=num_sweeps,
        limit=limit,
        first=first,
    ).compile()


def compiled_loop(
    blocks,
    cache,
    data: Data,
    evals: EvalSets,
    hyper,
    stop,
    state,
    *,
    algorithm: Algorithm,
    network: Network,
    num_sweeps: int,
):
    """The compiled, buffer-donating loop for these arguments' shapes (compiled once per signature).

    ``fit`` reports compile and run time separately, so it compiles ahead of time; this cache
    keeps a second ``fit`` of the same shapes from tracing and lowering again. Call the result
    as ``program(blocks, cache, data, evals, hyper, stop, state, limit=np.asarray(k, np.int32),
    first=np.asarray(True))``.
    """
    # A host scalar, like the limit of each call: a committed device array would pin the program to
    # one device and refuse sample-sharded arguments.
    abstract = _abstract(
        (blocks, cache, data, evals, hyper, stop, state, np.asarray(num_sweeps, np.int32), np.asarray(True))
    )
    leaves, treedef = jax.tree_util.tree_flatten(abstract)
    return _compile(algorithm, network, num_sweeps, treedef, tuple(leaves))


def clear_compiled() -> None:
    """Drops the cached ahead-of-time compiled loops (see ``bcd_jax.clear_caches``)."""
    _compile.cache_clear()
