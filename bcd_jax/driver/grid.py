"""Hyperparameter grids in one compiled program: many runs of one structure, mapped over their numbers.

:func:`run_grid` runs m members on the same data — member i from the initial weights of
``jax.random.key(seeds[i])`` with the numbers ``hyper[i]`` — in ONE compiled program that draws
each member's weights, builds its blocks and runs the driver's loop (:func:`bcd_jax.driver.loop.run_loop`,
stopping rules included), mapped over the members. Every member's record holds its training
loss and, given a validation (and a test) pair, its metrics there, so a grid can be scored on
a validation split in the same program. The result equals m separate ``bcd_jax.fit`` calls.
Grouping members by structure, grid files, CSV and plots are the experiments layer's
(:mod:`bcd_jax.experiments`).

On CPU the default is one member at a time inside the one program (``batch_size=1``, a
``lax.map``): there ``vmap`` brings no speed (the program is bound by small matrix products
either way), and with jaxlib < 0.11 batched LAPACK calls (SVD, eigh, Cholesky, LU over a batch)
can deadlock XLA:CPU's thread pool when several run at once, so a ``batch_size > 1`` whose
program has them is refused on CPU before compiling.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax import lax

from bcd_jax.algorithms import get_algorithm
from bcd_jax.algorithms.base import Algorithm, Data, make_data
from bcd_jax.config import Config
from bcd_jax.driver.functional import checked_data, checked_eval_set, eval_sets
from bcd_jax.driver.loop import EvalSets, SweepInfo, run_loop
from bcd_jax.network import Network
from bcd_jax.stopping import Status, StopArrays, initial_stop_state, stop_arrays

__all__ = [
    "CPU_BATCHED_LAPACK_MAY_HANG",
    "GridRun",
    "batched_lapack_calls",
    "program_cache_info",
    "run_grid",
    "clear_compiled",
]

# jaxlib < 0.11 runs a batched LAPACK call's batch on XLA:CPU's intra-op pool and blocks on it
# from inside that pool; several such calls at once deadlock it.
CPU_BATCHED_LAPACK_MAY_HANG = tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) < (0, 11)
_LAPACK = ("cholesky", "lu", "svd", "eigh", "qr", "triangular_solve", "householder_product", "schur", "eig")


def batched_lapack_calls(fn, *args, batched_by_map: bool = True) -> list[str]:
    """The LAPACK primitives ``fn(*args)`` calls on a batch (operands of rank > 2), and, with
    ``batched_by_map``, every LAPACK primitive at all (a ``vmap`` over runs batches them all)."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if any(name.startswith(p) for p in _LAPACK):
                ranks = [len(getattr(v.aval, "shape", ())) for v in eqn.invars]
                if batched_by_map or max(ranks, default=0) > 2:
                    found.append(name)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        visit(inner if hasattr(inner, "eqns") else inner.jaxpr)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return sorted(set(found))


class GridRun(NamedTuple):
    """What :func:`run_grid` returns; every array has a leading member axis.

    Attributes:
      blocks: each member's final blocks (the last finite ones if it diverged).
      initial: each member's record of its initial state (:class:`bcd_jax.SweepInfo`).
      history: per-sweep records, ``(members, sweeps, ...)``; NaN where a member did not run.
      completed: ``(members, sweeps)`` bools: which sweeps ran and were kept.
      status: ``(members,)`` :class:`bcd_jax.Status` codes.
      compile_time: seconds spent compiling (0 when the program was cached).
      wall_time: seconds of the compiled run.
    """

    blocks: Any
    initial: SweepInfo
    history: SweepInfo
    completed: np.ndarray
    status: np.ndarray
    compile_time: float
    wall_time: float

    def final(self, name: str) -> np.ndarray:
        """``(members,)``: each member's last kept value of the record field ``name``."""
        values = np.asarray(getattr(self.history, name))
        done = self.completed.sum(axis=1)
        first = np.asarray(getattr(self.initial, name))
        return np.array([values[i, d - 1] if d else first[i] for i, d in enumerate(done)])


def _program(
    seeds,
    hyper,
    data: Data,
    evals: EvalSets,
    stop: StopArrays,
    *,
    algorithm: Algorithm,
    network: Network,
    num_sweeps: int,
    batch_size: int | None,
):
    """Every member: what ``bcd_jax.fit`` does with ``key=jax.random.key(seed)`` and that member's hyper."""
    d_in, d_out = data.X.shape[1] - int(bool(network.bias)), data.Y.shape[1]
    cache = algorithm.prepare(data, network)  # data-only: once, shared by every member
    dtype = data.X.dtype

    def member(args):
        seed, h = args
        weights = algorithm.init_weights(jax.random.key(seed), network, d_in, d_out, dtype)
        blocks = algorithm.init(weights, data, network)
        state = jax.tree.map(jnp.asarray, initial_stop_state(np.nan, dtype))
        out = run_loop(
            blocks, cache, data, evals, h, stop, state, algorithm=algorithm, network=network, num_sweeps=num_sweeps
        )
        return out.blocks, out.initial, out.history, out.completed, out.stop_state.status

    if batch_size is None:
        return jax.vmap(member)((seeds, hyper))
    if batch_size == 1:
        return lax.map(member, (seeds, hyper))
    return lax.map(member, (seeds, hyper), batch_size=batch_size)


_program_jit = jax.jit(_program, static_argnames=("algorithm", "network", "num_sweeps", "batch_size"))


@functools.lru_cache(maxsize=64)
def _compiled(algorithm: Algorithm, network: Network, num_sweeps: int, batch_size, avals, x64: bool):
    """The compiled program for one structure and shape signature (cached: new values never recompile)."""
    del x64  # part of the cache key only
    return _program_jit.lower(
        *avals, algorithm=algorithm, network=network, num_sweeps=num_sweeps, batch_size=batch_size
    ).compile()


def program_cache_info():
    """Hits and misses of the cache of compiled grid programs (``functools.lru_cache`` statistics)."""
    return _compiled.cache_info()


def clear_compiled() -> None:
    """Drops the cached compiled grid programs (see ``bcd_jax.clear_caches``)."""
    _compiled.cache_clear()


def _checked_hyper(hyper, config: Config, m: int, dtype):
    """``hyper`` (the Hyper of 1-D arrays or scalars) as ``(m,)`` arrays of ``dtype``, each member checked."""
    algorithm, network = config.algorithm, config.network
    kind = algorithm.Hyper
    if not isinstance(hyper, kind):
        raise ValueError(
            f"hyper: expected a {kind.__name__} (the numbers of {algorithm.name!r}) of 1-D arrays, one "
            f"value per member, got {type(hyper).__name__}"
        )
    columns = []
    for name, value in zip(kind._fields, hyper):
        column = np.asarray(value, dtype=np.float64)
        if column.shape not in ((m,), ()):
            raise ValueError(
                f"hyper.{name}: expected shape ({m},) (one value per member) or a scalar, got {column.shape}"
            )
        columns.append(np.broadcast_to(column, (m,)))
    for i in range(m):
        try:
            algorithm.resolve(network, algorithm.make_hyper({k: float(c[i]) for k, c in zip(kind._fields, columns)}))
        except ValueError as exc:
            raise ValueError(f"hyper (member {i}): {exc}") from None
    with np.errstate(over="ignore"):
        cast = [c.astype(dtype) for c in columns]
    for name, column, given in zip(kind._fields, cast, columns):
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            raise ValueError(
                f"hyper.{name}: {float(given[bad[0]])!r} (member {bad[0]}) does not fit in "
                f"{np.dtype(dtype).name}; expected a smaller value"
            )
    return kind(*cast)


def _checked_seeds(seeds) -> np.ndarray:
    given = np.asarray(seeds)
    if given.ndim != 1 or given.shape[0] < 1 or not np.issubdtype(given.dtype, np.integer):
        raise ValueError(f"seeds: expected a non-empty 1-D array of ints, got shape {given.shape} dtype {given.dtype}")
    if np.any(given < 0):
        raise ValueError(f"seeds: expected ints >= 0, got {int(given.min())}")
    # The int type jax.random.key gives a Python int (int32 unless x64): the same keys as fit's.
    dtype = jnp.asarray(0).dtype
    seeds = given.astype(dtype)
    if not np.array_equal(seeds, given):
        raise ValueError(
            f"seeds: expected ints that fit in {dtype.name} (enable jax x64 for larger ones), got {int(given.max())}"
        )
    return seeds


def run_grid(
    X, Y, config: Config, hyper, seeds, *, validation=None, test=None, batch_size: int | None = None
) -> GridRun:
    """Runs m BCD runs on ``(X, Y)`` in one compiled program, one per entry of ``hyper`` and ``seeds``.

    Member i starts from ``config.algorithm.init_weights(jax.random.key(seeds[i]), ...)`` and uses
    the numbers ``Hyper(*(f[i] for f in hyper))``; ``config``'s own hyper and seed are ignored, its
    stopping rules apply to every member.

    Args:
      X (array-like): the training inputs, as for ``bcd_jax.fit``.
      Y (array-like): the training targets, as for ``bcd_jax.fit``.
      config: the shared structure (network, algorithm, sweeps, stopping rules).
      hyper (NamedTuple): the algorithm's ``Hyper`` of 1-D arrays of length m (a scalar field is shared).
      seeds (array-like of int): m integer seeds of the initial weights.
      validation (tuple): an optional held-out pair, as for ``bcd_jax.fit`` (``val_*`` entries of
        every member's record).
      test (tuple): the same for a test pair (``test_*`` entries).
      batch_size: run at most this many members at once (``jax.lax.map`` over chunks, each chunk
        ``vmap``ped). ``None``: all m at once on an accelerator, one at a time on CPU.
    """
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    X, Y = checked_data(X, Y, config)
    val = checked_eval_set(validation, X, Y, config, "validation")
    tst = checked_eval_set(test, X, Y, config, "test")
    if config.stop.needs_validation and val is None:
        raise ValueError("validation: config.stop uses the validation metric; pass validation=(X_val, y_val)")
    seeds = _checked_seeds(seeds)
    m = seeds.shape[0]
    hyper = _checked_hyper(hyper, config, m, X.dtype)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: expected None or an int >= 1, got {batch_size!r}")
    on_cpu = {d.platform for d in X.devices()} == {"cpu"}
    if batch_size is None and on_cpu:
        batch_size = 1
    batch_size = None if batch_size is None or batch_size >= m else batch_size

    network = config.resolved_network
    data = make_data(X, Y, network)
    evals = eval_sets(val, tst, network)
    stop = stop_arrays(config.stop, X.dtype)
    if on_cpu and CPU_BATCHED_LAPACK_MAY_HANG and (batch_size or m) > 1:
        one = jax.tree.map(lambda a: a[:1], hyper)

        def lapack_calls(algorithm):
            program = functools.partial(_program, algorithm=algorithm, network=network, num_sweeps=1, batch_size=None)
            return batched_lapack_calls(program, seeds[:1], one, data, evals, stop)

        calls = lapack_calls(config.algorithm)
        if calls:
            # Turning the spectral diagnostics off is advice only where it removes every batched LAPACK call
            # (Akiyama's singular value bounding, for one, still needs an SVD).
            hint = ""
            if getattr(config.algorithm, "spectral_diagnostics", False):
                quiet = get_algorithm({**config.algorithm.describe(), "spectral_diagnostics": False})
                hint = "" if lapack_calls(quiet) else " or algorithm.spectral_diagnostics = false"
            raise ValueError(
                f"batch_size: {batch_size or m} members at once on CPU would run batched LAPACK calls "
                f"({', '.join(calls)}) concurrently, which deadlocks XLA:CPU's thread pool with jaxlib "
                f"{jaxlib.__version__} (< 0.11); "
                "use batch_size=1 (the CPU default, about as fast on CPU)" + hint
            )
    avals = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (seeds, hyper, data, evals, stop))
    x64 = jnp.result_type(float) == jnp.float64
    t0 = time.perf_counter()
    compiled = _compiled(config.algorithm, network, config.sweeps, batch_size, avals, x64)
    compile_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(seeds, hyper, data, evals, stop))
    wall_time = time.perf_counter() - t0
    blocks, initial, history, completed, status = out
    initial, history, completed, status = jax.device_get((initial, history, completed, status))
    status = np.where(status == Status.RUNNING, int(Status.BUDGET), status).astype(np.int32)
    return GridRun(blocks, initial, history, np.asarray(completed), status, compile_time, wall_time)
