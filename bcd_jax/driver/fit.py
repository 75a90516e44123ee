"""``fit``: train a network with any registered BCD family, from data to a result.

The host-side driver around the compiled loop (:mod:`bcd_jax.driver.loop`): it checks every
input before anything is traced, draws or takes the initial weights, builds the state,
resumes a checkpoint, shards the samples, compiles once (timed separately), runs the loop in
chunks (for progress, callbacks and checkpoints), reports a divergence, and packages a
:class:`FitResult`. It knows only the algorithm protocol, so a new family gets all of it.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bcd_jax.algorithms.base import make_data
from bcd_jax.config import Config
from bcd_jax.driver import checkpoint as ckpt
from bcd_jax.driver import sharding
from bcd_jax.driver.functional import BCDState, checked_data
from bcd_jax.driver.loop import compiled_loop, init_weights_jit, prepare_and_init_jit, prepare_jit
from bcd_jax.driver.progress import get_progress
from bcd_jax.io import FolderLock, remove_stale_temporaries
from bcd_jax.validation import check_data, check_int, check_weights

__all__ = ["fit", "FitResult", "BCDDivergenceWarning"]


class BCDDivergenceWarning(RuntimeWarning):
    """A run produced non-finite values; the last finite state was returned."""


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: trained ``(W_1, ..., W_L)``; evaluate with ``bcd_jax.predict``.
      state: the final :class:`bcd_jax.BCDState` (the last finite one if the run diverged).
      history: the algorithm's diagnostics with a leading axis of ``sweeps_completed + 1``
        (entry 0 is the initial state), as NumPy arrays.
      config: the configuration used.
      wall_time: seconds of the compiled run (excluding compilation).
      compile_time: seconds spent tracing and compiling.
      diverged_at: the sweep (1-based) whose result was non-finite, or None.
      movement: ``(sweeps_completed + 1,)`` NumPy array aligned with ``history``: entry k is
        ``||x_k - x_{k-1}||^2`` over every block array (NaN at entry 0), the squared step
        lengths :func:`bcd_jax.rates.sufficient_decrease` needs.
    """

    params: tuple[jax.Array, ...]
    state: BCDState
    history: Any
    config: Config
    wall_time: float
    compile_time: float
    diverged_at: int | None
    movement: np.ndarray | None = None

    @property
    def sweeps_completed(self) -> int:
        return int(self.state.sweep)

    @property
    def train_mse(self) -> float:
        return float(self.history.train_mse[-1])

    @property
    def train_loss(self) -> float:
        return float(self.history.train_loss[-1])


def fit(
    X,
    Y,
    config: Config | None = None,
    *,
    key: jax.Array | None = None,
    init_params=None,
    validation: tuple | None = None,
    mesh=None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: Any = "auto",
    callback: Callable[[int, Any], None] | None = None,
) -> FitResult:
    """Trains the network of ``config`` on ``(X, Y)`` with ``config.algorithm``.

    Args:
      X: inputs ``(n, d_in)``.
      Y: targets ``(n,)`` or ``(n, d_out)``; integer labels for a classification loss.
      config: a :class:`bcd_jax.Config` (default: Algorithm 1 with the paper's Figure 1 settings).
      key: PRNG key for the initial weights; default ``jax.random.key(config.seed)``.
      init_params: optional ``(W_1, ..., W_L)`` to start from instead of drawing them.
      validation: optional ``(X_val, Y_val)``; adds validation metrics to the history (NaN without).
      mesh: a 1-D ``jax.sharding.Mesh``: the samples (X, Y and every per-sample block) are
        sharded over its axis and the other blocks replicated. n must be divisible by the
        number of devices. With several processes, each passes its own samples.
      checkpoint_dir: folder for ``checkpoint.npz``, written atomically every
        ``checkpoint_every`` sweeps and at the end. An existing checkpoint there is never
        overwritten unless ``resume=True``.
      checkpoint_every: sweeps between checkpoints (default: only at the end).
      resume: continue from the checkpoint in ``checkpoint_dir``; the continued run is
        bit-identical to one that was never stopped (same ``checkpoint_every``).
      progress: ``"auto"`` (a text line on an interactive stderr once a run has taken ~2 s),
        ``"text"``, ``"tqdm"``, ``None``/``"none"``, or a meter (see ``bcd_jax.driver.progress``).
      callback: called on the host after every chunk as ``callback(sweeps_done, history_chunk)``
        with that chunk's stacked diagnostics (NumPy arrays).

    Returns:
      A :class:`FitResult`. If a sweep produced non-finite values, the run stops there,
      a :class:`BCDDivergenceWarning` names the sweep and the blocks, and the last finite
      state is returned.
    """
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    X, Y = checked_data(X, Y, config, init_params)
    val = _checked_validation(validation, X, Y, config)
    multi_process = mesh is not None and jax.process_count() > 1
    if multi_process:
        if checkpoint_dir is not None:
            raise ValueError("checkpoint_dir: checkpoints of a run spread over several processes are not supported")
        X, Y = sharding.global_samples(mesh, X, Y)  # each process passed its own samples
    _check_options(checkpoint_dir, checkpoint_every, resume, callback, mesh, X.shape[0])
    meter = get_progress(progress)
    lock = None
    if checkpoint_dir is not None:
        ckpt.check_checkpoint_dir(checkpoint_dir)
        config.to_dict()  # a config that cannot be recorded losslessly fails now, not after training
        lock = FolderLock(checkpoint_dir, "checkpoint_dir").acquire()  # two runs never write one checkpoint
        remove_stale_temporaries(checkpoint_dir, ckpt.CHECKPOINT_FILE)  # left by a killed run; we hold the lock
    try:
        return _fit(
            X, Y, val, config, key, init_params, mesh, checkpoint_dir, checkpoint_every, resume, meter, callback
        )
    finally:
        if lock is not None:
            lock.release()


def _fit(
    X, Y, val, config: Config, key, init_params, mesh, checkpoint_dir, checkpoint_every, resume, meter, callback
) -> FitResult:
    algorithm, network = config.algorithm, config.resolved_network
    d_in, d_out = X.shape[1], Y.shape[1]
    if init_params is None:
        key = jax.random.key(config.seed) if key is None else key
        weights = init_weights_jit(key, algorithm=algorithm, network=network, d_in=d_in, d_out=d_out, dtype=X.dtype)
    else:
        check_weights(init_params, network.layer_shapes(d_in, d_out), width=network.width, name="init_params")
        # Copies: the blocks' buffers are donated to the compiled run, the caller's arrays are not.
        weights = tuple(jnp.array(w, dtype=X.dtype, copy=True) for w in init_params)
    key_data = np.asarray(jax.random.key_data(key)) if key is not None else np.zeros((0,), np.uint32)

    fingerprint = ckpt.data_fingerprint(X, Y) if checkpoint_dir is not None else ""
    if mesh is not None:
        X, Y = sharding.shard_samples(mesh, X, Y)
        weights = tuple(sharding.replicate(mesh, w) for w in weights)
        if val is not None:
            val = tuple(sharding.replicate(mesh, a) for a in val)
    data = make_data(X, Y, network, val)
    hyper = config.hyper_arrays(X.dtype)

    past = None
    if resume:
        template = jax.eval_shape(lambda w, d: algorithm.init(w, d, network), weights, data)
        saved = ckpt.load_checkpoint(checkpoint_dir, config=config, fingerprint=fingerprint, template=template)
        if saved.sweep > config.sweeps:
            raise ValueError(
                f"sweeps: the checkpoint in {str(checkpoint_dir)!r} already holds {saved.sweep} sweeps; expected "
                f"sweeps >= {saved.sweep} (a resumed run continues to config.sweeps, it does not cut a run short)"
            )
        blocks, done, key_data, past = saved.blocks, saved.sweep, saved.key_data, saved.history
        moves = [saved.movement]
        if mesh is not None:
            blocks = sharding.shard_blocks(mesh, blocks, algorithm.per_sample(blocks))
        cache = prepare_jit(data, algorithm=algorithm, network=network)
    else:
        if checkpoint_dir is not None and (Path(checkpoint_dir) / ckpt.CHECKPOINT_FILE).exists():
            raise ValueError(
                f"checkpoint_dir: {str(checkpoint_dir)!r} already holds a checkpoint; pass resume=True to continue "
                "it, or choose another folder (it is not overwritten)"
            )
        algorithm.check_initial_weights(weights)
        cache, blocks = prepare_and_init_jit(weights, data, algorithm=algorithm, network=network)
        if mesh is not None:
            blocks = sharding.shard_blocks(mesh, blocks, algorithm.per_sample(blocks))
        done = 0
        moves = [np.full(1, np.nan)]

    remaining = config.sweeps - done
    chunk = _chunk_length(config.sweeps, checkpoint_every, meter.active, callback)
    t0 = time.perf_counter()
    program = compiled_loop(blocks, cache, data, hyper, algorithm=algorithm, network=network, num_sweeps=chunk)
    compile_time = time.perf_counter() - t0

    initial, chunks, diverged_at, wall_time = None, [], None, 0.0
    meter.start(config.sweeps, done)
    try:
        while remaining > 0 and diverged_at is None:
            length = min(chunk, remaining)
            t0 = time.perf_counter()
            out = program(blocks, cache, data, hyper, limit=np.asarray(length, np.int32))
            # The host sync of this chunk: one transfer for everything the host reads.
            first, history, completed, blocks_finite, movement = jax.device_get(
                (out.initial, out.history, out.completed, out.blocks_finite, out.movement)
            )
            wall_time += time.perf_counter() - t0
            blocks = out.blocks
            initial = first if initial is None else initial
            completed = completed[:length]
            n_done = int(completed.sum())
            history = jax.tree.map(lambda h: h[:length], history)
            if n_done < length:
                diverged_at = done + n_done + 1
                _warn_divergence(
                    diverged_at, algorithm, blocks, blocks_finite[n_done], jax.tree.map(lambda h: h[n_done], history)
                )
            kept = jax.tree.map(lambda h: h[:n_done], history)
            chunks.append(kept)
            moves.append(np.asarray(movement[:n_done], np.float64))
            done += n_done
            remaining -= n_done
            if callback is not None and n_done:
                callback(done, kept)
            if checkpoint_dir is not None and (remaining == 0 or diverged_at is not None or checkpoint_every):
                ckpt.save_checkpoint(
                    checkpoint_dir,
                    blocks,
                    done,
                    _join_history(past, initial, chunks),
                    config=config,
                    movement=np.concatenate(moves),
                    key_data=key_data,
                    fingerprint=fingerprint,
                )
            if n_done:
                meter.update(done, jax.tree.map(lambda h: h[-1], kept))
    finally:
        meter.close()

    if initial is None:  # nothing left to run (a resumed, finished checkpoint)
        initial = jax.tree.map(np.asarray, algorithm.info(blocks, data, hyper, network))
    history = _join_history(past, initial, chunks)
    state = BCDState(blocks, cache, jnp.asarray(done, jnp.int32))
    return FitResult(
        algorithm.weights(blocks), state, history, config, wall_time, compile_time, diverged_at, np.concatenate(moves)
    )


def _checked_validation(validation, X, Y, config: Config):
    if validation is None:
        return None
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise ValueError(f"validation: expected a pair (X_val, Y_val), got {type(validation).__name__}")
    X_val, Y_val = check_data(
        *validation,
        d_out=Y.shape[1],
        loss=config.network.loss_fn,
        num_classes=Y.shape[1],
        names=("validation X", "validation Y"),
    )
    if X_val.shape[1] != X.shape[1]:
        raise ValueError(f"validation X: has {X_val.shape[1]} features, X has {X.shape[1]}; expected equal")
    return X_val.astype(X.dtype), Y_val.astype(X.dtype)


def _check_options(checkpoint_dir, checkpoint_every, resume, callback, mesh, n) -> None:
    if checkpoint_every is not None:
        check_int("checkpoint_every", checkpoint_every, low=1)
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every: given without checkpoint_dir; expected both or neither")
    if resume and checkpoint_dir is None:
        raise ValueError("resume: True needs checkpoint_dir, the folder that holds the checkpoint")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: expected a callable(sweeps_done, diagnostics), got {type(callback).__name__}")
    if mesh is not None:
        sharding.check_mesh(mesh, n)


def _chunk_length(sweeps: int, checkpoint_every: int | None, shows_progress: bool, callback) -> int:
    """Sweeps per compiled call: one call for a silent run, else about 20 progress updates."""
    if checkpoint_every is not None:
        return min(checkpoint_every, sweeps)
    if not shows_progress and callback is None:
        return sweeps
    return max(1, -(-sweeps // 20))


def _join_history(past, initial, chunks):
    """Initial diagnostics (or the resumed checkpoint's history) followed by every kept sweep."""
    kind = type(initial)
    parts = [kind(**past)] if past is not None else [jax.tree.map(lambda a: np.asarray(a)[None], initial)]
    parts.extend(chunks)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _warn_divergence(sweep_index: int, algorithm, blocks, blocks_finite, info) -> None:
    which = [name for name, ok in zip(algorithm.block_arrays(blocks), blocks_finite) if not ok]
    which += [name for name in algorithm.finite_info_fields if not np.all(np.isfinite(getattr(info, name)))]
    warnings.warn(
        f"BCD diverged at sweep {sweep_index}: non-finite values in {', '.join(which)}; returning the last finite "
        f"state (after sweep {sweep_index - 1}). Lower the step sizes or the penalty weights in config.hyper.",
        BCDDivergenceWarning,
        stacklevel=4,  # the caller of fit
    )
