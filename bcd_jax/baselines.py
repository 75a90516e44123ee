"""Backpropagation baseline: the network bcd_jax trains, trained end to end by an optax optimiser.

:func:`fit_backprop` is the one baseline every script compares with. It trains exactly the
network that :func:`bcd_jax.fit` trains -- the same parameter layout ``(W_1, ..., W_L)``, the
same forward pass as :func:`bcd_jax.predict` (:func:`bcd_jax.network.network_output` on
:func:`bcd_jax.network.input_features`, with the skip form and the bias column of
``config.resolved_network``), the same target encoding (integer labels become one-hot rows)
and, by default, the same initial weights (:func:`bcd_jax.init_params` with
``jax.random.key(config.seed)``) -- on one of two objectives:

* ``loss="network"`` (default): the mean over samples of the network's configured per-sample
  loss (``config.network.loss``: any loss of ``bcd_jax.LOSSES`` or a callable); the history
  is reported in that loss's ``report_scale``, so it is bcd_jax's ``train_loss``;
* ``loss="squared"``: ``mean_i ||f(x_i) - y_i||^2`` itself, bcd_jax's ``train_mse``, whatever
  ``config.network.loss`` says.

Full batch (``steps=``: one optimiser step per pass, history per step) or mini-batch
(``epochs=`` and ``batch_size=``: batches reshuffled every epoch from ``shuffle_seed``, the
remainder of each shuffled epoch dropped, history per epoch). The whole run is one compiled
``lax.scan``, compiled ahead of time (its compile time is reported apart from the wall time);
given an optimiser factory such as ``optax.adam`` and a ``learning_rate``, the learning rate is
a traced argument, so a learning-rate grid compiles once.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bcd_jax.algorithms import make_data, network_metrics
from bcd_jax.algorithms.base import NetworkMetrics
from bcd_jax.config import Config
from bcd_jax.driver.functional import checked_data
from bcd_jax.driver.functional import init_params as draw_init_params
from bcd_jax.network import Network, input_features, network_output
from bcd_jax.validation import check_bool, check_int, check_weights

__all__ = ["BackpropResult", "OBJECTIVES", "fit_backprop", "objective"]

# "network": the configured per-sample loss (reported in its report_scale); "squared": mean ||f - y||^2.
OBJECTIVES = ("network", "squared")


class BackpropResult(NamedTuple):
    """What :func:`fit_backprop` returns.

    Attributes:
      params: trained ``(W_1, ..., W_L)``; evaluate with ``bcd_jax.predict``.
      train_loss: ``(iterations + 1,)`` NumPy array: entry k is the training loss after k
        optimiser steps (full batch) or k epochs (mini-batch), entry 0 the initial network; in
        bcd_jax's reported scale (``train_loss``; ``train_mse`` for ``loss="squared"``).
        NaN/inf entries mean divergence.
      metrics: the trained network's :class:`bcd_jax.algorithms.base.NetworkMetrics` as floats,
        computed as ``bcd_jax.fit``'s history computes them (``val_*`` NaN without validation;
        accuracy NaN for regression).
      wall_time: seconds of the compiled training run (compilation excluded).
      compile_time: seconds it took to trace and compile the training program (measured when
        it was compiled; a later call with the same structure and shapes reuses it).
      loss: ``"squared"`` or the name of the network's loss that was minimised.
      per: ``"step"`` (full batch) or ``"epoch"`` (mini-batch): what one history entry is.
      learning_rate: the learning rate given with an optimiser factory, else None.
      val_curve: with ``track_validation=True``, the validation accuracy (classification) or
        MSE (regression) after each iteration, aligned with ``train_loss``; else None.
    """

    params: tuple[jax.Array, ...]
    train_loss: np.ndarray
    metrics: NetworkMetrics
    wall_time: float
    compile_time: float
    loss: str
    per: str
    learning_rate: float | None
    val_curve: np.ndarray | None = None

    @property
    def iterations(self) -> int:
        return len(self.train_loss) - 1

    @property
    def seconds_per_iteration(self) -> float:
        return self.wall_time / max(self.iterations, 1)

    @property
    def diverged_at(self) -> int | None:
        """The first history entry that is not finite, or None."""
        bad = np.flatnonzero(~np.isfinite(self.train_loss))
        return int(bad[0]) if bad.size else None


def _objective(params, features, Y, *, network: Network, loss: str):
    """The minimised objective (not report-scaled): mean per-sample loss, or mean ||f - y||^2."""
    pred = network_output(params, features, network)
    if loss == "squared":
        residual = pred - Y
        return jnp.mean(jnp.sum(residual * residual, axis=-1))
    return jnp.mean(jax.vmap(network.loss_fn)(pred, Y))


def objective(params, X, Y, config: Config, *, loss: str = "network") -> jax.Array:
    """The objective :func:`fit_backprop` minimises, at ``params`` (differentiable, traceable).

    ``X`` are the inputs without the bias column and ``Y`` the target rows (one-hot for a
    classification loss). ``loss="network"``: the mean of the configured per-sample loss
    (``1/2 ||.||^2`` for the squared loss; multiply by ``loss_fn.report_scale`` for bcd_jax's
    ``train_loss``); ``loss="squared"``: ``mean_i ||f(x_i) - y_i||^2``.
    """
    network = _config(config).resolved_network
    loss = _choice(loss)
    return _objective(tuple(params), input_features(X, network.bias), Y, network=network, loss=loss)


def _config(config) -> Config:
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    return config


def _choice(loss) -> str:
    if loss not in OBJECTIVES:
        raise ValueError(f"loss: expected one of {list(OBJECTIVES)}, got {loss!r}")
    return loss


def _add(params, updates):
    return jax.tree.map(lambda w, u: w + u, params, updates)


def _val_metric(params, val, network: Network):
    """Validation accuracy (classification) or mean ||f - y||^2 (regression), as bcd_jax.fit reports them."""
    if val is None:
        return jnp.zeros((), jnp.float32)
    features, Y = val
    pred = network_output(params, features, network)
    if network.loss_fn.task == "regression":
        return jnp.mean(jnp.sum((pred - Y) ** 2, axis=-1))
    return network.loss_fn.accuracy(pred, Y).astype(features.dtype)


def _train(params, features, Y, learning_rate, key, val, *, network, loss, optimizer, factory, iterations, batch_size):
    """``iterations`` steps or epochs under one ``lax.scan``; returns params, the objective trace
    and the validation trace (zeros without ``val``)."""
    opt = optimizer(learning_rate) if factory else optimizer
    value_and_grad = jax.value_and_grad(functools.partial(_objective, network=network, loss=loss))

    if batch_size is None:

        def step(carry, _):
            p, state = carry
            value, grads = value_and_grad(p, features, Y)
            updates, state = opt.update(grads, state, p)
            return (_add(p, updates), state), (value, _val_metric(p, val, network))

        (params, _), (trace, val_trace) = lax.scan(step, (params, opt.init(params)), None, length=iterations)
        final = _objective(params, features, Y, network=network, loss=loss)
        val_final = _val_metric(params, val, network)
        return params, jnp.concatenate([trace, final[None]]), jnp.concatenate([val_trace, val_final[None]])

    n = features.shape[0]
    batches = n // batch_size  # the remainder of each shuffled epoch is dropped

    def epoch(carry, epoch_key):
        def step(c, idx):
            p, state = c
            _, grads = value_and_grad(p, features[idx], Y[idx])
            updates, state = opt.update(grads, state, p)
            return (_add(p, updates), state), None

        order = jax.random.permutation(epoch_key, n)[: batches * batch_size].reshape(batches, batch_size)
        carry, _ = lax.scan(step, carry, order)
        return carry, (
            _objective(carry[0], features, Y, network=network, loss=loss),
            _val_metric(carry[0], val, network),
        )

    initial = _objective(params, features, Y, network=network, loss=loss)
    val_initial = _val_metric(params, val, network)
    (params, _), (trace, val_trace) = lax.scan(epoch, (params, opt.init(params)), jax.random.split(key, iterations))
    return params, jnp.concatenate([initial[None], trace]), jnp.concatenate([val_initial[None], val_trace])


def _abstract(tree):
    """Shapes and dtypes of a pytree's arrays: what the compiled program fixes (and a cache key)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


@functools.lru_cache(maxsize=32)
def _compiled(network, loss, optimizer, factory, iterations, batch_size, abstract_args):
    """The compiled training program and its compile seconds (one per structure and shapes)."""
    fn = jax.jit(
        functools.partial(
            _train,
            network=network,
            loss=loss,
            optimizer=optimizer,
            factory=factory,
            iterations=iterations,
            batch_size=batch_size,
        )
    )
    t0 = time.perf_counter()
    compiled = fn.lower(*abstract_args).compile()
    return compiled, time.perf_counter() - t0


_metrics_jit = jax.jit(network_metrics, static_argnames=("network",))


def _is_optimizer(obj) -> bool:
    return hasattr(obj, "init") and hasattr(obj, "update")


def fit_backprop(
    X,
    Y,
    config: Config | None = None,
    *,
    optimizer: Any,
    learning_rate: float | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    loss: str = "network",
    shuffle_seed: int = 0,
    key: jax.Array | None = None,
    init_params=None,
    validation: tuple | None = None,
    track_validation: bool = False,
) -> BackpropResult:
    """Trains ``config``'s network by backpropagation with an optax optimiser.

    Args:
      X: inputs ``(n, d_in)``.
      Y: targets ``(n,)`` / ``(n, d_out)``; integer labels for a classification loss.
      config: a :class:`bcd_jax.Config`; its network (``config.resolved_network``: depth, width,
        activations, bias, skip form, loss) and, when no weights are given, the initial weights
        its algorithm draws from ``config.seed``. The algorithm's own settings play no part.
      optimizer: an optax ``GradientTransformation`` (e.g. ``optax.adam(1e-3)``), or a factory
        ``learning_rate -> GradientTransformation`` (e.g. ``optax.adam``) together with
        ``learning_rate``; the rate is then traced, so runs with other rates reuse the program.
      learning_rate: the rate given to an optimiser factory (None with a transformation).
      steps: full batch: the number of optimiser steps (>= 1); the history has one entry per step.
      epochs: mini-batch: the number of passes over the shuffled data (>= 1), with ``batch_size``.
      batch_size: mini-batch size (1 <= batch_size <= n); None: full batch.
      loss: ``"network"`` (the configured loss, reported as bcd_jax's ``train_loss``) or
        ``"squared"`` (``mean_i ||f(x_i) - y_i||^2``, bcd_jax's ``train_mse``).
      shuffle_seed: seed of the mini-batch order (epoch k uses ``split(key(shuffle_seed), epochs)[k]``).
      key: PRNG key of the initial weights; default ``jax.random.key(config.seed)`` (``bcd_jax.fit``'s).
      init_params: ``(W_1, ..., W_L)`` to start from instead of drawing them.
      validation: optional ``(X_val, Y_val)`` for the final ``metrics.val_*``.
      track_validation: also record the validation accuracy / MSE after every iteration
        (``val_curve``; for time-to-accuracy comparisons: it is computed inside the timed run,
        as ``bcd_jax.fit`` computes its validation history). Needs ``validation``.

    Returns:
      A :class:`BackpropResult`.
    """
    config = _config(config)
    loss = _choice(loss)
    network = config.resolved_network
    if batch_size is None:
        if steps is None or epochs is not None:
            raise ValueError(
                f"steps: full-batch training needs steps (and no epochs); got steps={steps!r}, "
                f"epochs={epochs!r} (for mini-batches give epochs and batch_size)"
            )
        iterations, per = check_int("steps", steps, low=1), "step"
    else:
        if epochs is None or steps is not None:
            raise ValueError(
                f"epochs: mini-batch training (batch_size={batch_size!r}) needs epochs (and no steps); "
                f"got epochs={epochs!r}, steps={steps!r}"
            )
        iterations, per = check_int("epochs", epochs, low=1), "epoch"
    factory = not _is_optimizer(optimizer)
    if factory and not callable(optimizer):
        raise ValueError(
            f"optimizer: expected an optax GradientTransformation or a factory learning_rate -> "
            f"GradientTransformation (e.g. optax.adam), got {type(optimizer).__name__}"
        )
    if factory and learning_rate is None:
        raise ValueError(
            f"learning_rate: the optimizer factory {getattr(optimizer, '__name__', optimizer)!r} needs a learning_rate"
        )
    if not factory and learning_rate is not None:
        raise ValueError(
            f"learning_rate: got {learning_rate!r} with an optimizer transformation that already holds "
            "its rate; pass a factory such as optax.adam instead, or no learning_rate"
        )
    shuffle_seed = check_int("shuffle_seed", shuffle_seed, low=0)
    track_validation = check_bool("track_validation", track_validation)
    if track_validation and validation is None:
        raise ValueError("track_validation: True needs validation=(X_val, Y_val)")

    X, Y = checked_data(X, Y, config, init_params)
    n, d_in, d_out = X.shape[0], X.shape[1], Y.shape[1]
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, low=1)
        if batch_size > n:
            raise ValueError(f"batch_size: {batch_size} exceeds the n = {n} training samples; expected <= n")
    val = None
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError(f"validation: expected a pair (X_val, Y_val), got {type(validation).__name__}")
        Xv, Yv = checked_data(
            validation[0], validation[1], config, init_params, names=("validation[0]", "validation[1]")
        )
        if Xv.shape[1] != d_in or Yv.shape[1] != d_out:
            raise ValueError(
                f"validation: X_val, Y_val have {Xv.shape[1]} features and {Yv.shape[1]} outputs; "
                f"expected {d_in} and {d_out}, as X and Y"
            )
        val = (Xv.astype(X.dtype), Yv.astype(X.dtype))
    if init_params is None:
        key = jax.random.key(config.seed) if key is None else key
        params = tuple(draw_init_params(key, config, d_in, d_out, dtype=X.dtype))
    else:
        check_weights(init_params, network.layer_shapes(d_in, d_out), width=network.width, name="init_params")
        params = tuple(jnp.asarray(w, X.dtype) for w in init_params)

    features = input_features(X, network.bias)
    rate = np.asarray(0.0 if learning_rate is None else learning_rate, X.dtype)
    shuffle_key = jax.random.key(shuffle_seed)
    tracked = (input_features(val[0], network.bias), val[1]) if track_validation else None
    args = (params, features, Y, rate, shuffle_key, tracked)
    compiled, compile_time = _compiled(network, loss, optimizer, factory, iterations, batch_size, _abstract(args))
    t0 = time.perf_counter()
    trained, trace, val_trace = jax.block_until_ready(compiled(*args))
    wall_time = time.perf_counter() - t0

    scale = 1.0 if loss == "squared" else network.loss_fn.report_scale
    history = np.asarray(trace, np.float64) * scale
    metrics = _metrics_jit(trained, make_data(X, Y, network, val), network=network)
    metrics = NetworkMetrics(*(float(v) for v in jax.device_get(metrics)))
    name = "squared" if loss == "squared" else network.loss_fn.name
    return BackpropResult(
        tuple(trained),
        history,
        metrics,
        wall_time,
        compile_time,
        name,
        per,
        None if learning_rate is None else float(learning_rate),
        np.asarray(val_trace, np.float64) if track_validation else None,
    )


def clear_compiled() -> None:
    """Drops the cached compiled training programs (see ``bcd_jax.clear_caches``)."""
    _compiled.cache_clear()
