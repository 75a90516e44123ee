"""Backpropagation baselines: the network bcd_jax trains, trained end to end by an optax optimiser.

:func:`fit_backprop` trains exactly the network that :func:`bcd_jax.fit` trains -- the same
parameter layout ``(W_1, ..., W_L)``, the same forward pass as :func:`bcd_jax.predict`, the
same target encoding and, by default, the same initial weights (:func:`bcd_jax.init_params`
with ``jax.random.key(config.seed)``) -- on one of two objectives, plus an optional L2 penalty
``weight_decay/2 sum_j ||W_j||^2`` (Akiyama's and the whole-objective family's ``hyper.weight_decay``,
the same objective; Zeng's is n times it, see :class:`bcd_jax.ZengHyper`):

* ``loss="network"`` (default): the mean of the network's per-sample loss;
* ``loss="squared"``: ``mean_i ||f(x_i) - y_i||^2``, whatever ``config.network.loss`` says.

Full batch (``steps=``) or mini-batch (``epochs=`` and ``batch_size=``: batches reshuffled every
epoch from ``shuffle_seed``, the remainder of each shuffled epoch dropped). The history is a
:class:`bcd_jax.SweepInfo` like ``bcd_jax.fit``'s (one entry per step or epoch, entry 0 the
initial network; ``objective`` is the minimised objective), recorded inside the timed run, so
both can be read the same way (``train_loss``, ``val_accuracy``, ``test_accuracy``). The run is
one compiled ``lax.scan``; with an optimiser factory (``optax.adam``) the learning rate is
traced, so a learning-rate grid compiles once.

Networks whose activations have no useful derivative (step, sign, quantised staircases) train
here only through a surrogate gradient (``activation_grad``): the forward pass stays the true
network, the backward pass uses the straight-through estimator (``"ste"``: slope 1), its clipped
form (``"clipped_ste"``: slope 1 inside the staircase's range), or the slope of a smooth
staircase (``"smooth"``: a sigmoid of slope 1 at every jump).

:func:`tune_backprop` is the baseline a practitioner would run: a learning-rate grid, each
member scored on a validation split (never the test set), the best epoch count read off its
validation curve, and the winner retrained to that count.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bcd_jax.activations import Activation, get_activation
from bcd_jax.algorithms.base import make_data
from bcd_jax.config import Config
from bcd_jax.driver.functional import checked_data, checked_eval_set, eval_sets
from bcd_jax.driver.functional import init_params as draw_init_params
from bcd_jax.driver.loop import EvalSets, SweepInfo, network_metrics
from bcd_jax.network import Network, input_features, network_output
from bcd_jax.validation import check_choice, check_float, check_int, check_weights

__all__ = [
    "ACTIVATION_GRADS",
    "BackpropResult",
    "OBJECTIVES",
    "fit_backprop",
    "objective",
    "surrogate_network",
    "tune_backprop",
]

# "network": the configured per-sample loss (reported in its report_scale); "squared": mean ||f - y||^2.
OBJECTIVES = ("network", "squared")
ACTIVATION_GRADS = ("autodiff", "ste", "clipped_ste", "smooth")


@dataclasses.dataclass(frozen=True, repr=False)
class BackpropResult:
    """What :func:`fit_backprop` returns (named as :class:`bcd_jax.FitResult`).

    Attributes:
      params: trained ``(W_1, ..., W_L)``; evaluate with ``bcd_jax.predict`` / ``bcd_jax.evaluate``.
      history: a :class:`bcd_jax.SweepInfo` of NumPy arrays, one entry per step (full batch) or
        epoch (mini-batch), entry 0 the initial network; ``objective`` is the minimised objective,
        ``movement`` NaN, ``extras`` empty. NaN/inf entries mean divergence.
      config: the configuration whose network was trained.
      wall_time: seconds of the compiled training run (compilation excluded).
      compile_time: seconds it took to trace and compile (0 when the program was reused).
      loss: ``"squared"`` or the name of the network's loss that was minimised.
      per: ``"step"`` or ``"epoch"``: what one history entry is.
      learning_rate: the learning rate given with an optimiser factory, else None.
      activation_grad: the derivative used for the activations in the backward pass.
    """

    params: tuple[jax.Array, ...]
    history: SweepInfo
    config: Config
    wall_time: float
    compile_time: float
    loss: str
    per: str
    learning_rate: float | None
    activation_grad: str = "autodiff"

    @property
    def iterations(self) -> int:
        return len(self.history.train_loss) - 1

    @property
    def seconds_per_iteration(self) -> float:
        return self.wall_time / max(self.iterations, 1)

    @property
    def train_loss(self) -> float:
        return float(self.history.train_loss[-1])

    @property
    def diverged_at(self) -> int | None:
        """The first history entry whose objective is not finite, or None."""
        bad = np.flatnonzero(~np.isfinite(self.history.objective))
        return int(bad[0]) if bad.size else None

    def final(self) -> dict[str, float]:
        return {k: float(np.asarray(getattr(self.history, k))[-1]) for k in SweepInfo._fields if k != "extras"}

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.final().items() if np.isfinite(v) and k.endswith(("loss", "accuracy"))}
        values = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
        return f"BackpropResult({self.iterations} {self.per}s, lr={self.learning_rate}, {values})"


# -- surrogate gradients --------------------------------------------------------------------------


def _jumps(activation: Activation) -> list[tuple[float, float]]:
    """``(position, height)`` of every jump of a piecewise-linear activation."""
    pieces = activation.pieces or ()
    out = []
    for left, right in zip(pieces, pieces[1:]):
        x = right.low
        height = (right.slope * x + right.intercept) - (left.slope * x + left.intercept)
        if height != 0:
            out.append((x, height))
    return out


@functools.lru_cache(maxsize=256)
def _surrogate(activation: Activation, kind: str) -> Activation:
    """``activation`` with its true values and the ``kind`` of derivative (cached: one object per
    pair, so a network built from it stays the same static argument)."""
    if kind == "autodiff":
        return activation
    pieces = activation.pieces
    jumps = _jumps(activation)
    slopes = [p.slope for p in pieces] if pieces else None
    if pieces:
        values = [p.slope * 0 + p.intercept for p in pieces]
        low, high = min(values), max(values)
    fn = activation.fn

    def derivative(z):
        if kind == "ste":
            return jnp.ones_like(z)
        if kind == "clipped_ste":
            if not pieces or not jumps:
                return jnp.ones_like(z)
            first, last = jumps[0][0], jumps[-1][0]
            margin = (last - first) / max(len(jumps) - 1, 1) / 2 if len(jumps) > 1 else (high - low) / 2
            return ((z >= first - margin) & (z <= last + margin)).astype(z.dtype)
        # smooth: every jump of height h at t becomes h * sigmoid(4 (z - t) / h): slope 1 at t
        grad = jnp.zeros_like(z)
        if slopes is not None:
            grad = grad + activation.slope(z)
        for t, h in jumps:
            s = jax.nn.sigmoid(4.0 * (z - t) / abs(h))
            grad = grad + 4.0 * s * (1 - s) * jnp.sign(h)
        return grad

    @jax.custom_jvp
    def surrogate(z):
        return fn(z)

    @surrogate.defjvp
    def _jvp(primals, tangents):
        (z,), (dz,) = primals, tangents
        return fn(z), derivative(z) * dz

    surrogate.__name__ = f"{activation.name}[{kind}]"
    return Activation(f"{activation.name}[{kind}]", surrogate, pieces=activation.pieces)


def surrogate_network(network: Network, activation_grad: str) -> Network:
    """``network`` whose activations keep their values and take ``activation_grad``'s derivative."""
    check_choice("activation_grad", activation_grad, ACTIVATION_GRADS)
    if activation_grad == "autodiff":
        return network
    activations = tuple(
        _surrogate(get_activation(a, network.negative_slope), activation_grad) for a in network.layer_activations
    )
    return network.replace(activation=activations)


# -- the objective ---------------------------------------------------------------------------------


def _objective(params, features, Y, weight_decay, *, network: Network, loss: str):
    """The minimised objective: mean per-sample loss (or mean ||f - y||^2) + weight_decay/2 sum ||W||^2."""
    pred = network_output(params, features, network)
    if loss == "squared":
        residual = pred - Y
        value = jnp.mean(jnp.sum(residual * residual, axis=-1))
    else:
        value = jnp.mean(jax.vmap(network.loss_fn)(pred, Y))
    return value + 0.5 * weight_decay * sum(jnp.sum(w * w) for w in params)


def objective(params, X, Y, config: Config, *, loss: str = "network", weight_decay: float = 0.0) -> jax.Array:
    """The objective :func:`fit_backprop` minimises, at ``params`` (differentiable, traceable).

    ``X`` are the inputs without the bias column and ``Y`` the target rows (one-hot for a
    classification loss).
    """
    network = _config(config).resolved_network
    loss = check_choice("loss", loss, OBJECTIVES)
    return _objective(tuple(params), input_features(X, network.bias), Y, weight_decay, network=network, loss=loss)


def _config(config) -> Config:
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    return config


def _record(params, data, evals: EvalSets, weight_decay, network: Network, loss: str) -> SweepInfo:
    """The history entry of ``params`` (the true network: its own activations, not the surrogate)."""
    dtype = data.X.dtype
    nan = jnp.asarray(jnp.nan, dtype)
    return SweepInfo(
        _objective(params, data.X, data.Y, weight_decay, network=network, loss=loss).astype(dtype),
        *network_metrics(params, data, network, dtype),
        *network_metrics(params, evals.val, network, dtype),
        *network_metrics(params, evals.test, network, dtype),
        nan,
        (),
    )


def _train(
    params,
    data,
    evals,
    learning_rate,
    weight_decay,
    key,
    *,
    network,
    trained,
    loss,
    optimizer,
    factory,
    iterations,
    batch_size,
):
    """``iterations`` steps or epochs under one ``lax.scan``; returns the params and the history.

    ``trained`` is the network the gradients flow through (surrogate activations), ``network``
    the true one every record is computed on."""
    opt = optimizer(learning_rate) if factory else optimizer
    grad = jax.grad(functools.partial(_objective, network=trained, loss=loss))

    def apply(p, state, features, Y):
        updates, state = opt.update(grad(p, features, Y, weight_decay), state, p)
        return jax.tree.map(lambda w, u: w + u, p, updates), state

    def record(p):
        return _record(p, data, evals, weight_decay, network, loss)

    initial = record(params)
    if batch_size is None:

        def step(carry, _):
            p, state = apply(*carry, data.X, data.Y)
            return (p, state), record(p)

        (params, _), trace = lax.scan(step, (params, opt.init(params)), None, length=iterations)
    else:
        n = data.X.shape[0]
        batches = n // batch_size  # the remainder of each shuffled epoch is dropped

        def epoch(carry, epoch_key):
            def step(c, idx):
                return apply(*c, data.X[idx], data.Y[idx]), None

            order = jax.random.permutation(epoch_key, n)[: batches * batch_size].reshape(batches, batch_size)
            carry, _ = lax.scan(step, carry, order)
            return carry, record(carry[0])

        (params, _), trace = lax.scan(epoch, (params, opt.init(params)), jax.random.split(key, iterations))
    history = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), initial, trace)
    return params, history


def _abstract(tree):
    """Shapes and dtypes of a pytree's arrays: what the compiled program fixes (and a cache key)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


@functools.lru_cache(maxsize=32)
def _compiled(network, trained, loss, optimizer, factory, iterations, batch_size, abstract_args):
    """The compiled training program and its compile seconds (one per structure and shapes)."""
    fn = jax.jit(
        functools.partial(
            _train,
            network=network,
            trained=trained,
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
    weight_decay: float = 0.0,
    activation_grad: str = "autodiff",
    shuffle_seed: int = 0,
    key: jax.Array | None = None,
    init_params=None,
    validation: tuple | None = None,
    test: tuple | None = None,
) -> BackpropResult:
    """Trains ``config``'s network by backpropagation with an optax optimiser.

    Args:
      X (array-like): inputs ``(n, d_in)``.
      Y (array-like): targets ``(n,)`` / ``(n, d_out)``; integer labels for a classification loss.
      config: a :class:`bcd_jax.Config`; its network (``config.resolved_network``) and, when no
        weights are given, the initial weights its algorithm draws from ``config.seed``. The
        algorithm's own settings play no part.
      optimizer: an optax ``GradientTransformation`` (e.g. ``optax.adam(1e-3)``), or a factory
        ``learning_rate -> GradientTransformation`` (e.g. ``optax.adam``) with ``learning_rate``;
        the rate is then traced, so runs with other rates reuse the program.
      learning_rate: the rate given to an optimiser factory (None with a transformation).
      steps: full batch: the number of optimiser steps (>= 1); one history entry per step.
      epochs: mini-batch: the number of passes over the shuffled data (>= 1), with ``batch_size``.
      batch_size: mini-batch size (1 <= batch_size <= n); None: full batch.
      loss: ``"network"`` (the configured loss) or ``"squared"`` (``mean_i ||f(x_i) - y_i||^2``).
      weight_decay: lambda of the penalty ``lambda/2 sum_j ||W_j||^2`` added to the objective.
      activation_grad: ``"autodiff"`` (the activations' own derivative), ``"ste"``,
        ``"clipped_ste"`` or ``"smooth"`` (surrogate gradients, see the module docstring).
      shuffle_seed: seed of the mini-batch order (epoch k uses ``split(key(shuffle_seed), epochs)[k]``).
      key: PRNG key of the initial weights; default ``jax.random.key(config.seed)`` (``bcd_jax.fit``'s).
      init_params (tuple of arrays): ``(W_1, ..., W_L)`` to start from instead of drawing them.
      validation (tuple): an optional held-out pair ``(X, y)``, recorded every iteration (``val_*``)
        as ``bcd_jax.fit`` records it.
      test (tuple): the same for a test pair (``test_*``).
    """
    config = _config(config)
    loss = check_choice("loss", loss, OBJECTIVES)
    weight_decay = check_float("weight_decay", weight_decay, low=0)
    network = config.resolved_network
    trained = surrogate_network(network, activation_grad)
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

    X, Y = checked_data(X, Y, config, init_params)
    n, d_in, d_out = X.shape[0], X.shape[1], Y.shape[1]
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, low=1)
        if batch_size > n:
            raise ValueError(f"batch_size: {batch_size} exceeds the n = {n} training samples; expected <= n")
    val = checked_eval_set(validation, X, Y, config, "validation")
    tst = checked_eval_set(test, X, Y, config, "test")
    if init_params is None:
        key = jax.random.key(config.seed) if key is None else key
        params = tuple(draw_init_params(key, config, d_in, d_out, dtype=X.dtype))
    else:
        check_weights(init_params, network.layer_shapes(d_in, d_out), width=network.width, name="init_params")
        params = tuple(jnp.asarray(w, X.dtype) for w in init_params)

    data = make_data(X, Y, network)
    evals = eval_sets(val, tst, network)
    rate = np.asarray(0.0 if learning_rate is None else learning_rate, X.dtype)
    args = (params, data, evals, rate, np.asarray(weight_decay, X.dtype), jax.random.key(shuffle_seed))
    compiled, compile_time = _compiled(
        network, trained, loss, optimizer, factory, iterations, batch_size, _abstract(args)
    )
    t0 = time.perf_counter()
    trained_params, history = jax.block_until_ready(compiled(*args))
    wall_time = time.perf_counter() - t0
    name = "squared" if loss == "squared" else network.loss_fn.name
    return BackpropResult(
        tuple(trained_params),
        jax.device_get(history),
        config,
        wall_time,
        compile_time,
        name,
        per,
        None if learning_rate is None else float(learning_rate),
        activation_grad,
    )


def _score(history: SweepInfo, classification: bool) -> np.ndarray:
    """Per entry: validation accuracy, or minus the validation loss (higher is better; NaN -> -inf)."""
    values = np.asarray(history.val_accuracy if classification else -np.asarray(history.val_loss), np.float64)
    return np.where(np.isfinite(values), values, -np.inf)


class Tuned(NamedTuple):
    """What :func:`tune_backprop` returns.

    Attributes:
      result: the winner, retrained to its chosen number of iterations.
      learning_rate: the chosen rate.
      iterations: the chosen number of steps or epochs (the best entry of its validation curve).
      table: one row per rate: ``{"learning_rate", "best_iteration", "best_val_score", "seconds"}``.
    """

    result: BackpropResult
    learning_rate: float
    iterations: int
    table: list[dict[str, Any]]


def tune_backprop(
    X,
    Y,
    config: Config | None = None,
    *,
    optimizer: Any,
    learning_rates,
    validation,
    epochs: int | None = None,
    steps: int | None = None,
    test=None,
    **kwargs,
) -> Tuned:
    """The baseline a practitioner would run: every learning rate of ``learning_rates`` trained for the
    budget, scored on ``validation`` after every iteration (accuracy, or the loss for regression),
    the best (rate, iteration) kept, and that rate retrained to that iteration count.

    ``validation`` must be carved out of the training data; the test set (``test``) is only
    recorded, never used to choose. ``kwargs`` go to :func:`fit_backprop` (``batch_size``,
    ``loss``, ``weight_decay``, ``activation_grad``, ...).
    """
    if validation is None:
        raise ValueError("validation: tune_backprop chooses on a validation split; pass validation=(X_val, y_val)")
    rates = [check_float("learning_rates", r, low=0, low_open=True) for r in learning_rates]
    if not rates:
        raise ValueError("learning_rates: expected at least one rate")
    classification = _config(config).resolved_network.loss_fn.task != "regression"
    table, best = [], None
    for rate in rates:
        res = fit_backprop(
            X,
            Y,
            config,
            optimizer=optimizer,
            learning_rate=rate,
            epochs=epochs,
            steps=steps,
            validation=validation,
            **kwargs,
        )
        score = _score(res.history, classification)
        k = int(np.argmax(score[1:])) + 1  # at least one iteration
        table.append(
            {"learning_rate": rate, "best_iteration": k, "best_val_score": float(score[k]), "seconds": res.wall_time}
        )
        if best is None or score[k] > best[0]:
            best = (score[k], rate, k)
    _, rate, k = best
    budget = {"epochs": k} if epochs is not None else {"steps": k}
    result = fit_backprop(
        X, Y, config, optimizer=optimizer, learning_rate=rate, validation=validation, test=test, **budget, **kwargs
    )
    return Tuned(result, rate, k, table)


def clear_compiled() -> None:
    """Drops the cached compiled training programs (see ``bcd_jax.clear_caches``)."""
    _compiled.cache_clear()
