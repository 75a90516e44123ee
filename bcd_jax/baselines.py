"""Backpropagation baseline: the same network, trained end to end by an optax optimiser.

``fit_backprop`` trains exactly the network that :func:`bcd_jax.fit` trains — the same
parameter layout ``(W_1, ..., W_L)``, the same forward pass as ``bcd_jax.predict``
(``bcd_jax.model.hidden_forward``, including the skip form ``sigma(W_j h) + h`` of
Algorithm 3 and the bias column) and, by default, the same initial weights (``bcd_jax.init_params`` with ``jax.random.key(config.seed)``) — by
full-batch gradient steps on the training error

    mse(W) = mean_i ||f(x_i) - y_i||^2,

which is the ``train_mse`` that :class:`bcd_jax.Diagnostics` reports, so the two histories
are directly comparable (whatever ``config.loss`` says; this baseline always fits the squared
error). All ``steps`` updates run in one jitted ``lax.scan``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bcd_jax.config import Config
from bcd_jax.model import hidden_forward, init_params as _init_params
from bcd_jax.validation import check_data, check_params

__all__ = ["BackpropResult", "fit_backprop", "mse_loss"]


class BackpropResult(NamedTuple):
    """What :func:`fit_backprop` returns.

    Attributes:
      params: trained ``(W_1, ..., W_L)``; evaluate with ``bcd_jax.predict``.
      train_mse: ``(steps + 1,)`` NumPy array; entry k is the training MSE after k
        optimiser steps (entry 0 is the initial network). NaN/inf entries mean divergence.
      wall_time: seconds of the compiled training loop (excluding compilation).
      compile_time: seconds spent tracing and compiling it.
    """

    params: tuple[jax.Array, ...]
    train_mse: np.ndarray
    wall_time: float
    compile_time: float

    @property
    def seconds_per_step(self) -> float:
        return self.wall_time / max(len(self.train_mse) - 1, 1)


def mse_loss(params, X, Y, config: Config) -> jax.Array:
    """``mean_i ||f(x_i) - y_i||^2`` of the network ``params`` (no 1/2, as in ``Diagnostics``).

    ``f`` is ``bcd_jax.predict``'s network: ``hidden_forward(params, X, config)[-1] @ W_L^T``.
    """
    residual = hidden_forward(params, X, config)[-1] @ params[-1].T - Y
    return jnp.mean(jnp.sum(residual * residual, axis=-1))


def _train(params, X, Y, *, optimizer, steps: int, config: Config):
    """``steps`` optimiser updates under one ``lax.scan``; returns params and the MSE trace."""
    loss_and_grad = jax.value_and_grad(mse_loss)

    def step(carry, _):
        p, opt_state = carry
        loss, grads = loss_and_grad(p, X, Y, config)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        p = jax.tree.map(lambda w, u: w + u, p, updates)
        return (p, opt_state), loss

    (params, _), losses = lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    final = mse_loss(params, X, Y, config)
    return params, jnp.concatenate([losses, final[None]])


def fit_backprop(
    X,
    Y,
    config: Config | None = None,
    *,
    optimizer: Any,
    steps: int,
    key: jax.Array | None = None,
    init_params=None,
) -> BackpropResult:
    """Trains the BCD network by full-batch backpropagation with an optax optimiser.

    Args:
      X: inputs ``(n, d_in)``.
      Y: targets ``(n,)`` or ``(n, d_out)``.
      config: a :class:`bcd_jax.Config`; only the network is used (``depth``, ``width``,
        the activations, ``bias``, the algorithm's skip flag) and, when no weights are
        given, its ``seed``/``svb`` initialisation. The loss is always the squared error.
      optimizer: an ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-3)``).
      steps: number of full-batch optimiser steps (>= 1).
      key: PRNG key for ``bcd_jax.init_params``; default ``jax.random.key(config.seed)``
        (the same weights ``bcd_jax.fit`` starts from).
      init_params: optional ``(W_1, ..., W_L)`` to start from instead.

    Returns:
      A :class:`BackpropResult`.
    """
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(f"optimizer: expected an optax GradientTransformation, got {type(optimizer).__name__}")
    X, Y = check_data(X, Y)
    if init_params is None:
        key = jax.random.key(config.seed) if key is None else key
        params = _init_params(key, config, X.shape[1], Y.shape[1], dtype=X.dtype)
    else:
        params = tuple(jnp.asarray(w, X.dtype) for w in init_params)
    check_params(params, config, X.shape[1], Y.shape[1])

    train = jax.jit(lambda p, x, y: _train(p, x, y, optimizer=optimizer, steps=steps, config=config))
    t0 = time.perf_counter()
    compiled = train.lower(params, X, Y).compile()
    compile_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, losses = jax.block_until_ready(compiled(params, X, Y))
    wall_time = time.perf_counter() - t0
    return BackpropResult(tuple(params), np.asarray(losses), wall_time, compile_time)
