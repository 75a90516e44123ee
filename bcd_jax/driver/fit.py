"""``fit``: train a network with any registered BCD family, from data to a result.

The host-side driver around the compiled loop (:mod:`bcd_jax.driver.loop`): it checks every
input before anything is traced, draws or takes the initial weights, builds the state,
resumes a checkpoint, shards the samples, compiles once (timed separately; the program's memory
need is checked against the machine before it runs), runs the loop in chunks (for progress,
callbacks, checkpoints and interrupts) until the budget, a stopping rule, a divergence or Ctrl-C
ends it, and packages a :class:`FitResult`. It knows only the algorithm protocol, so a new
family gets all of it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
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
from bcd_jax.driver.blocks import block_names, mask_like, per_sample_mask
from bcd_jax.driver.functional import BCDState, checked_data, checked_eval_set, eval_sets
from bcd_jax.driver.grid import CPU_BATCHED_LAPACK_MAY_HANG, batched_lapack_calls
from bcd_jax.driver.loop import (
    FINITE_FIELDS,
    SweepInfo,
    compiled_loop,
    init_weights_jit,
    prepare_and_init_jit,
    prepare_jit,
    state_record_jit,
    sweep_record,
)
from bcd_jax.driver.memory import MemoryNeedError, check_memory, memory_advice
from bcd_jax.driver.progress import get_progress
from bcd_jax.interrupts import interrupts_stop_runs
from bcd_jax.io import FolderLock, remove_stale_temporaries
from bcd_jax.stopping import Status, initial_stop_state, stop_arrays
from bcd_jax.validation import check_int, check_weights

__all__ = ["fit", "FitResult", "BCDDivergenceWarning", "divergence_advice"]


class BCDDivergenceWarning(RuntimeWarning):
    """A run produced non-finite values; the last finite state was returned."""


@dataclasses.dataclass(frozen=True, repr=False)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: trained ``(W_1, ..., W_L)``; evaluate with ``bcd_jax.predict`` / ``bcd_jax.evaluate``.
      state: the final :class:`bcd_jax.BCDState` (the last finite one if the run diverged).
      history: a :class:`bcd_jax.SweepInfo` of NumPy arrays with a leading axis of
        ``sweeps_completed + 1`` (entry 0 is the initial state).
      config: the configuration used.
      status: how the run ended (:class:`bcd_jax.Status`).
      wall_time: seconds of the compiled run (excluding compilation).
      compile_time: seconds spent tracing and compiling.
      run_id: an identifier of the run, kept in its checkpoint and its output files.
    """

    params: tuple[jax.Array, ...]
    state: BCDState
    history: SweepInfo
    config: Config
    status: Status
    wall_time: float
    compile_time: float
    run_id: str = ""

    @property
    def sweeps_completed(self) -> int:
        return int(self.state.sweep)

    @property
    def diverged_at(self) -> int | None:
        """The sweep (1-based) whose result was non-finite, or None."""
        return self.sweeps_completed + 1 if self.status == Status.DIVERGED else None

    @property
    def train_loss(self) -> float:
        """The final training loss of the network (reported scale)."""
        return float(self.history.train_loss[-1])

    @property
    def train_mse(self) -> float:
        return float(self.history.train_mse[-1])

    def final(self) -> dict[str, float]:
        """The last entry of every scalar history field (``{"train_loss": ..., "val_accuracy": ...}``)."""
        return {
            name: float(np.asarray(getattr(self.history, name))[-1]) for name in SweepInfo._fields if name != "extras"
        }

    def __repr__(self) -> str:
        final = ", ".join(
            f"{k}={v:.4g}"
            for k, v in self.final().items()
            if np.isfinite(v) and k in ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "objective")
        )
        return (
            f"FitResult({self.config.algorithm.name}, {self.sweeps_completed} sweeps, status={self.status.name}, "
            f"{final}, wall_time={self.wall_time:.3g}s)"
        )


# -- fit -----------------------------------------------------------------------------------------


def fit(
    X,
    Y,
    config: Config | None = None,
    *,
    key: jax.Array | None = None,
    init_params=None,
    validation: tuple | None = None,
    test: tuple | None = None,
    mesh=None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: Any = "auto",
    callback: Callable[[int, Any], None] | None = None,
    overwrite: bool = False,
    checkpoint_metadata: dict | None = None,
    check_memory_need: bool = True,
) -> FitResult:
    """Trains the network of ``config`` on ``(X, Y)`` with ``config.algorithm``.

    Args:
      X (array-like): inputs ``(n, d_in)``.
      Y (array-like): targets ``(n,)`` or ``(n, d_out)``; integer labels ``0..C-1`` for a classification loss.
      config: a :class:`bcd_jax.Config` (default: Algorithm 1 with the paper's Figure 1 settings).
      key: PRNG key for the initial weights; default ``jax.random.key(config.seed)``.
      init_params (tuple of arrays): optional ``(W_1, ..., W_L)`` to start from instead of drawing them.
      validation: optional ``(X_val, y_val)``: its metrics are recorded every sweep (``val_*``)
        and the stopping rules ``stop.target_val`` and ``stop.patience`` read them.
      test: optional ``(X_test, y_test)``: its metrics are recorded every sweep (``test_*``) and
        never used for any decision.
      mesh (jax.sharding.Mesh): a 1-D ``jax.sharding.Mesh``: the samples (X, Y and every per-sample block) are
        sharded over its axis and the other blocks replicated. n must be divisible by the
        number of devices. With several processes, each passes its own samples.
      checkpoint_dir (str | Path): folder for ``checkpoint.npz``, written atomically every
        ``checkpoint_every`` sweeps, at the end and on an interrupt. An existing checkpoint there
        is never overwritten unless ``resume=True`` (continued) or ``overwrite=True`` (replaced).
      checkpoint_every: sweeps between checkpoints (default: only at the end, or on an interrupt).
      resume: continue from the checkpoint in ``checkpoint_dir``; the continued run is
        bit-identical to one that was never stopped (same ``checkpoint_every``).
      progress: ``"auto"`` (a text line on an interactive stderr once a run has taken ~2 s),
        ``"text"``, ``"tqdm"``, ``None``/``"none"``, or a meter (see ``bcd_jax.driver.progress``).
      callback: called on the host after every chunk as ``callback(sweeps_done, history_chunk)``
        with that chunk's stacked :class:`bcd_jax.SweepInfo` (NumPy arrays).
      overwrite: start afresh in a ``checkpoint_dir`` that holds a checkpoint; the old one is
        replaced only when this run writes its first checkpoint, so a run that fails before
        that leaves it intact.
      checkpoint_metadata: a JSON-ready dict kept in the checkpoint (``read_checkpoint_meta``);
        the command line keeps the experiment's data there.
      check_memory_need: refuse, before running, a compiled program that needs more memory than
        the device has free (the message names what would fit).

    Returns:
      A :class:`FitResult` whose ``status`` says how the run ended. If a sweep produced
      non-finite values the run stops there, a :class:`BCDDivergenceWarning` names the sweep and
      what went non-finite, and the last finite state is returned. A first Ctrl-C stops the run when
      the running chunk ends (a twentieth of the run, or ``checkpoint_every`` sweeps;
      ``status=INTERRUPTED``, checkpoint written); a second one raises ``KeyboardInterrupt``.
    """
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    X, Y = checked_data(X, Y, config, init_params)
    val = checked_eval_set(validation, X, Y, config, "validation")
    tst = checked_eval_set(test, X, Y, config, "test")
    if config.stop.needs_validation and val is None:
        raise ValueError(
            "validation: config.stop uses the validation metric (target_val or patience) but fit got no validation "
            "set; pass validation=(X_val, y_val) (carved from the training data, never the test set)"
        )
    multi_process = mesh is not None and jax.process_count() > 1
    if multi_process:
        if checkpoint_dir is not None:
            raise ValueError("checkpoint_dir: checkpoints of a run spread over several processes are not supported")
        X, Y = sharding.global_samples(mesh, X, Y)  # each process passed its own samples
    _check_options(checkpoint_dir, checkpoint_every, resume, callback, mesh, X.shape[0])
    if overwrite and resume:
        raise ValueError("overwrite: True starts afresh, resume: True continues; expected at most one of them")
    meter = get_progress(progress)
    lock = None
    if checkpoint_dir is not None:
        ckpt.check_checkpoint_dir(checkpoint_dir)
        config.to_dict()  # a config that cannot be recorded losslessly fails now, not after training
        lock = FolderLock(checkpoint_dir, "checkpoint_dir").acquire()  # two runs never write one checkpoint
        remove_stale_temporaries(checkpoint_dir, ckpt.CHECKPOINT_FILE)  # left by a killed run; we hold the lock
    try:
        with interrupts_stop_runs() as interrupted:
            return _fit(
                X,
                Y,
                val,
                tst,
                config,
                key,
                init_params,
                mesh,
                checkpoint_dir,
                checkpoint_every,
                resume,
                meter,
                callback,
                interrupted,
                check_memory_need,
                overwrite,
                checkpoint_metadata,
            )
    finally:
        if lock is not None:
            lock.release()


def _fit(
    X,
    Y,
    val,
    tst,
    config: Config,
    key,
    init_params,
    mesh,
    checkpoint_dir,
    checkpoint_every,
    resume,
    meter,
    callback,
    interrupted,
    check_memory_need,
    overwrite=False,
    metadata=None,
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
    mask = per_sample_mask(algorithm, network, X.shape[0], d_in + int(bool(network.bias)), d_out, X.dtype)
    if mesh is not None:
        X, Y = sharding.shard_samples(mesh, X, Y)
        weights = tuple(sharding.replicate(mesh, w) for w in weights)
        val = None if val is None else tuple(sharding.replicate(mesh, a) for a in val)
        tst = None if tst is None else tuple(sharding.replicate(mesh, a) for a in tst)
    data = make_data(X, Y, network)
    evals = eval_sets(val, tst, network)
    hyper = config.hyper_arrays(X.dtype)
    stop = stop_arrays(config.stop, X.dtype)

    past = None
    run_id = uuid.uuid4().hex[:12]
    if resume:
        cache = prepare_jit(data, algorithm=algorithm, network=network)
        template = jax.eval_shape(lambda w, d: algorithm.init(w, d, network), weights, data)
        record = jax.eval_shape(
            lambda b: sweep_record(
                algorithm, b, algorithm.step(b, data, cache, hyper, network)[1], data, evals, hyper, network, 0.0
            ),
            template,
        )
        saved = ckpt.load_checkpoint(
            checkpoint_dir, config=config, fingerprint=fingerprint, template=template, history_template=record
        )
        if saved.sweep > config.sweeps:
            raise ValueError(
                f"sweeps: the checkpoint in {str(checkpoint_dir)!r} already holds {saved.sweep} sweeps; expected "
                f"sweeps >= {saved.sweep} (a resumed run continues to config.sweeps, it does not cut a run short)"
            )
        blocks, done, key_data, past, run_id = saved.blocks, saved.sweep, saved.key_data, saved.history, saved.run_id
        state = saved.stop_state
        if saved.status != Status.DIVERGED and (saved.stop != config.stop.to_dict() or saved.status == Status.BUDGET):
            state = state._replace(status=np.asarray(Status.RUNNING, np.int32))  # new rules, or a larger budget
        if mesh is not None:
            blocks = sharding.shard_blocks(mesh, blocks, mask_like(blocks, mask))
        else:  # on the device, as a fresh run's blocks: the program compiled for those serves (no recompile)
            blocks = jax.device_put(blocks)
    else:
        if checkpoint_dir is not None and not overwrite and (Path(checkpoint_dir) / ckpt.CHECKPOINT_FILE).exists():
            raise ValueError(
                f"checkpoint_dir: {str(checkpoint_dir)!r} already holds a checkpoint; pass resume=True to continue "
                "it, overwrite=True to replace it, or choose another folder"
            )
        cache, blocks = prepare_and_init_jit(weights, data, algorithm=algorithm, network=network)
        if mesh is not None:
            blocks = sharding.shard_blocks(mesh, blocks, mask_like(blocks, mask))
        done = 0
        state = initial_stop_state(np.nan, X.dtype)

    if mesh is not None:
        _refuse_batched_lapack_on_cpu_devices(mesh, algorithm, blocks, data, cache, hyper, network)
    remaining = config.sweeps - done
    chunk = _chunk_length(config.sweeps, checkpoint_every, meter.active, callback)
    t0 = time.perf_counter()
    program = compiled_loop(
        blocks, cache, data, evals, hyper, stop, state, algorithm=algorithm, network=network, num_sweeps=chunk
    )
    compile_time = time.perf_counter() - t0
    if check_memory_need:
        check_memory(program, X, config)

    initial, chunks, wall_time = None, [], 0.0
    saved = None  # (sweep, status) of the last checkpoint this call wrote

    def write_checkpoint():
        """Saves the run as it stands now; returns ``(sweep, status)`` of what was written."""
        ckpt.save_checkpoint(
            checkpoint_dir,
            blocks,
            done,
            _join_history(past, initial, chunks),
            config=config,
            key_data=key_data,
            fingerprint=fingerprint,
            stop_state=state,
            status=status,
            run_id=run_id,
            metadata=metadata,
        )
        return done, status

    status = Status(int(state.status)) if int(state.status) != Status.RUNNING else Status.RUNNING
    meter.start(config.sweeps, done)
    try:
        while remaining > 0 and status == Status.RUNNING:
            if interrupted.is_set():
                status = Status.INTERRUPTED
                break
            length = min(chunk, remaining)
            t0 = time.perf_counter()
            first_chunk = np.asarray(initial is None and past is None)
            try:
                out = program(
                    blocks,
                    cache,
                    data,
                    evals,
                    hyper,
                    stop,
                    state,
                    limit=np.asarray(length, np.int32),
                    first=first_chunk,
                )
                # The host sync of this chunk: one transfer for everything the host reads.
                first, history, completed, blocks_finite, state = jax.device_get(
                    (out.initial, out.history, out.completed, out.blocks_finite, out.stop_state)
                )
            except jax.errors.JaxRuntimeError as exc:
                if "RESOURCE_EXHAUSTED" not in str(exc) and "out of memory" not in str(exc).lower():
                    raise
                raise MemoryNeedError(
                    f"memory: the run ran out of device memory at sweep {done + 1} ({str(exc).splitlines()[0]}). "
                    + memory_advice(config)
                ) from None
            wall_time += time.perf_counter() - t0
            blocks = out.blocks
            initial = first if initial is None and past is None else initial
            n_done = int(completed[:length].sum())
            status = Status(int(state.status))
            if status == Status.DIVERGED:
                _warn_divergence(done + n_done + 1, blocks, blocks_finite[n_done], _entry(history, n_done), config)
            kept = jax.tree.map(lambda h: h[:n_done], history)
            chunks.append(kept)
            done += n_done
            remaining -= n_done
            if remaining == 0 and status == Status.RUNNING:
                status = Status.BUDGET
            if callback is not None and n_done:
                callback(done, kept)
            if interrupted.is_set() and status == Status.RUNNING:
                status = Status.INTERRUPTED
            if checkpoint_dir is not None and (status != Status.RUNNING or checkpoint_every):
                saved = write_checkpoint()
            if n_done:
                meter.update(done, _entry(kept, -1))
    finally:
        meter.close()

    if status == Status.RUNNING:  # nothing left to run (a resumed, finished checkpoint)
        status = Status.BUDGET if remaining == 0 else status
    if initial is None and past is None:
        initial = _initial_record(algorithm, blocks, data, evals, hyper, network)
    if status == Status.INTERRUPTED and checkpoint_dir is not None and saved != (done, status):
        # Ctrl-C seen between chunks (during a checkpoint write or the progress update), or before the
        # first sweep: the checkpoint records where the run stopped, as the caller is told to resume it.
        saved = write_checkpoint()
    history = _join_history(past, initial, chunks)
    state_out = BCDState(blocks, cache, jnp.asarray(done, jnp.int32))
    return FitResult(algorithm.weights(blocks), state_out, history, config, status, wall_time, compile_time, run_id)


def _refuse_batched_lapack_on_cpu_devices(mesh, algorithm, blocks, data, cache, hyper, network) -> None:
    """Sample sharding runs one copy of the sweep per device at once; on CPU with jaxlib < 0.11 two
    batched LAPACK calls at once deadlock XLA's thread pool (seen with 2 and 4 devices). Such a
    sweep is refused before it compiles, never left to hang."""
    if mesh.size < 2 or {d.platform for d in mesh.devices.flat} != {"cpu"} or not CPU_BATCHED_LAPACK_MAY_HANG:
        return
    calls = batched_lapack_calls(lambda b: algorithm.step(b, data, cache, hyper, network), blocks, batched_by_map=False)
    if calls:
        raise ValueError(
            f"mesh: {algorithm.name!r}'s sweep runs batched LAPACK calls ({', '.join(calls)}), and {mesh.size} CPU "
            "devices running them at once deadlock XLA:CPU's thread pool (jaxlib < 0.11); run it on one device "
            "(mesh=None) or on an accelerator"
        )


def _initial_record(algorithm, blocks, data, evals, hyper, network):
    return jax.device_get(state_record_jit(blocks, data, evals, hyper, algorithm=algorithm, network=network))


def _entry(history, index):
    return jax.tree.map(lambda h: h[index], history)


def _check_options(checkpoint_dir, checkpoint_every, resume, callback, mesh, n) -> None:
    if checkpoint_every is not None:
        check_int("checkpoint_every", checkpoint_every, low=1)
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every: given without checkpoint_dir; expected both or neither")
    if resume and checkpoint_dir is None:
        raise ValueError("resume: True needs checkpoint_dir, the folder that holds the checkpoint")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: expected a callable(sweeps_done, history), got {type(callback).__name__}")
    if mesh is not None:
        sharding.check_mesh(mesh, n)


def _chunk_length(sweeps: int, checkpoint_every: int | None, shows_progress: bool, callback) -> int:
    """Sweeps per compiled call: ``checkpoint_every``, else about 20 chunks, so that progress,
    callbacks and Ctrl-C are handled within a twentieth of a run (a chunk costs one host
    synchronisation). A stopping rule skips the rest of its chunk: not run."""
    del shows_progress, callback
    if checkpoint_every is not None:
        return min(checkpoint_every, sweeps)
    return max(1, -(-sweeps // 20))


def _join_history(past, initial, chunks) -> SweepInfo:
    """Initial record (or the resumed checkpoint's history) followed by every kept sweep."""
    parts = [past] if past is not None else [jax.tree.map(lambda a: np.asarray(a)[None], initial)]
    parts.extend(chunks)
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)


def _warn_divergence(sweep_index: int, blocks, blocks_finite, info, config: Config) -> None:
    which = [name for name, ok in zip(block_names(blocks), blocks_finite) if not ok]
    which += [name for name in FINITE_FIELDS if not np.all(np.isfinite(getattr(info, name)))]
    warnings.warn(
        f"BCD diverged at sweep {sweep_index}: non-finite values in {', '.join(which)}; returning the last finite "
        f"state (after sweep {sweep_index - 1}). {divergence_advice(config)}",
        BCDDivergenceWarning,
        stacklevel=4,  # the caller of fit
    )


def divergence_advice(config: Config) -> str:
    """What usually helps, for this configuration (one sentence)."""
    hyper = config.hyper._asdict()
    tips = []
    if "weight_decay" in hyper and hyper["weight_decay"] == 0:
        tips.append("hyper.weight_decay > 0 (regularises singular solves)")
    tips.append("standardised features (real data)")
    if config.network.width > 64:
        tips.append("a narrower network")
    steps = [k for k in hyper if k.startswith("eta")]
    if steps:
        tips.append(f"smaller step sizes ({', '.join('hyper.' + s for s in steps)})")
    return "Try " + ", ".join(tips) + "."
