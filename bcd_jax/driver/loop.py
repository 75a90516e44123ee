"""The compiled multi-sweep loop: ``lax.scan`` over sweeps, frozen at the first non-finite one.

Knows only the algorithm protocol (:mod:`bcd_jax.algorithms.base`). One compiled program
runs up to ``num_sweeps`` sweeps; ``limit`` (traced) skips the positions ``>= limit``, so one
program serves chunks of any length up to ``num_sweeps``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bcd_jax.algorithms.base import Algorithm, Data
from bcd_jax.network import Network

__all__ = ["LoopOutput", "run_loop", "prepare_and_init", "compiled_loop", "clear_compiled"]


class LoopOutput(NamedTuple):
    """What :func:`run_loop` returns.

    Attributes:
      blocks: the final blocks (the last finite ones if a sweep diverged).
      initial: the info of the input blocks.
      history: the stacked info of every position (NaN where skipped).
      completed: ``(num_sweeps,)`` bools; False from the first skipped or non-finite sweep on.
      blocks_finite: ``(num_sweeps, number of blocks)`` bools: which blocks each sweep left finite
        (tells where a divergence happened).
      movement: ``(num_sweeps,)``: ``||x_k - x_{k-1}||^2`` summed over every block array (W, V and
        any other block), the squared step length the sufficient-decrease conditions of
        :mod:`bcd_jax.rates` need; NaN where a position was skipped or diverged.
    """

    blocks: Any
    initial: Any
    history: Any
    completed: jax.Array
    blocks_finite: jax.Array
    movement: jax.Array


def run_loop(
    blocks, cache, data: Data, hyper, *, algorithm: Algorithm, network: Network, num_sweeps: int, limit=None
) -> LoopOutput:
    """Up to ``num_sweeps`` sweeps of ``algorithm`` under one ``lax.scan`` (traceable, pure)."""
    initial = algorithm.info(blocks, data, hyper, network)
    limit = num_sweeps if limit is None else limit

    def advance(b):
        return algorithm.step(b, data, cache, hyper, network)

    def nan_like(a):
        if jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.full(a.shape, jnp.nan, a.dtype)
        return jnp.zeros(a.shape, a.dtype)

    blank = jax.tree.map(nan_like, jax.eval_shape(advance, blocks))

    def body(carry, position):
        current, halted = carry
        skip = jnp.logical_or(halted, position >= limit)
        new, info = lax.cond(skip, lambda _: blank, advance, current)
        good = jnp.logical_and(jnp.logical_not(skip), algorithm.is_finite(new, info))
        kept = jax.tree.map(lambda a, b: jnp.where(good, a, b), new, current)
        failed = jnp.logical_and(jnp.logical_not(skip), jnp.logical_not(good))
        finite = jnp.stack([jnp.all(jnp.isfinite(a)) for a in algorithm.block_arrays(new).values()])
        moved = sum(jnp.sum(jnp.square(a - b)) for a, b in zip(_arrays(algorithm, kept), _arrays(algorithm, current)))
        moved = jnp.where(good, moved, jnp.nan)
        return (kept, jnp.logical_or(halted, failed)), (info, good, finite, moved)

    positions = jnp.arange(num_sweeps, dtype=jnp.int32)
    (blocks, _), (history, completed, finite, movement) = lax.scan(body, (blocks, jnp.asarray(False)), positions)
    return LoopOutput(blocks, initial, history, completed, finite, movement)


def _arrays(algorithm: Algorithm, blocks):
    return [a for a in algorithm.block_arrays(blocks).values() if jnp.issubdtype(a.dtype, jnp.floating)]


def prepare_and_init(weights, data: Data, *, algorithm: Algorithm, network: Network):
    """The data-only cache and the initial blocks (traceable)."""
    return algorithm.prepare(data, network), algorithm.init(weights, data, network)


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
def _compile(algorithm: Algorithm, network: Network, num_sweeps: int, abstract_args):
    blocks, cache, data, hyper, limit = abstract_args
    return _run_loop_donating.lower(
        blocks, cache, data, hyper, algorithm=algorithm, network=network, num_sweeps=num_sweeps, limit=limit
    ).compile()


def compiled_loop(blocks, cache, data: Data, hyper, *, algorithm: Algorithm, network: Network, num_sweeps: int):
    """The compiled, buffer-donating loop for these arguments' shapes (compiled once per signature).

    ``fit`` reports compile and run time separately, so it compiles ahead of time; this cache
    keeps a second ``fit`` of the same shapes from tracing and lowering again. Call the result
    as ``program(blocks, cache, data, hyper, limit=np.asarray(k, np.int32))``.
    """
    # A host scalar, like the limit of each call: a committed device array would pin the program to
    # one device and refuse sample-sharded arguments.
    abstract = _abstract((blocks, cache, data, hyper, np.asarray(num_sweeps, np.int32)))
    return _compile(algorithm, network, num_sweeps, abstract)


def clear_compiled() -> None:
    """Drops the cached ahead-of-time compiled loops (see ``bcd_jax.clear_caches``)."""
    _compile.cache_clear()
