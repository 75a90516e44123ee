"""The BCD solver: state, one sweep (Algorithms 1 and 3), the compiled run loop, and ``fit``.

One sweep, in the paper's backward order (Algorithm 1; Algorithm 3 differs only by the
switches of :class:`bcd_jax.AlgorithmSpec`), for the squared loss and fixed step sizes::

    W_L      <- W_L - eta_w * mean_i (W_L v_i - y_i) v_i^T                (v_i = V_{L-1,i})
    V_{L-1,i}<- V_{L-1,i} - eta_v * W_L^T (W_L V_{L-1,i} - y_i)             (one step)
    for j = L-1 .. 2:
        e_i  = sigma(W_j V_{j-1,i}) - V_{j,i}        (+ V_{j-1,i} with skips)
        W_j  <- W_j - gamma*eta_w * mean_i [sigma'(W_j V_{j-1,i}) * e_i] V_{j-1,i}^T   (one step)
        K_V times:  V_{j-1,i} <- V_{j-1,i} - gamma*eta_v * (W_j^T [sigma' * e_i] (+ e_i))
    K_W times:  W_1 <- W_1 - gamma*eta_w1 * mean_i [sigma'(W_1 x_i) * (sigma(W_1 x_i) - V_{1,i})] x_i^T

Every gradient is that of the per-sample loss 1/2 ||.||^2; weight gradients average the n
per-sample gradients. V updates are written for ONE sample and ``vmap``ped.

Extensions (the paper's Appendix A-B), all off by default: another output loss replaces
``W_L v - y`` by ``grad_pred loss(W_L v, y)`` in the two output-layer steps; ``weight_decay``
adds ``lambda W`` to every weight block's gradient (the block objective gains
``lambda/2 ||W||^2``); ``step_size="auto"`` divides each eta by its block's Lipschitz constant.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from bcd_jax.algorithms import get_algorithm
from bcd_jax.config import Config, StepSizes, layer_activations
from bcd_jax.losses import get_loss
from bcd_jax.model import hidden_forward, init_params as _init_params, input_features, propagate
from bcd_jax.validation import check_data, check_params, is_concrete

__all__ = [
    "BCDState",
    "Diagnostics",
    "FitResult",
    "Structure",
    "BCDDivergenceWarning",
    "init_state",
    "sweep",
    "run",
    "diagnostics",
    "fit",
]


class BCDState(NamedTuple):
    """The whole BCD state, a pytree.

    Attributes:
      weights: ``(W_1, ..., W_L)``; ``W_1: (r, d_in)``, ``W_j: (r, r)``, ``W_L: (d_out, r)``.
      hidden: ``(V_1, ..., V_{L-1})``, each ``(n, r)``; row i is the paper's ``V_{j,i}``.
      sweep: number of sweeps completed (int32 scalar).
    """

    weights: tuple[jax.Array, ...]
    hidden: tuple[jax.Array, ...]
    sweep: jax.Array


class Diagnostics(NamedTuple):
    """Per-sweep diagnostics, computed on the state after the sweep.

    Losses use the paper's squared norms (no 1/2) averaged over the n samples, so
    ``objective`` is the paper's F divided by n.

    Attributes:
      objective: ``output_loss + gamma * sum(layer_losses)``.
      output_loss: ``mean_i ||W_L V_{L-1,i} - y_i||^2``.
      layer_losses: ``(L-1,)``; entry j-1 is ``mean_i ||sigma(W_j V_{j-1,i}) (+V_{j-1,i}) - V_{j,i}||^2``
        (j = 1 never has a skip; for Algorithm 3 it is the true ReLU layer loss).
      train_mse: training error of the real network, ``mean_i ||f(x_i) - y_i||^2``.
      sv_min, sv_max: ``(L,)`` smallest / largest singular value of each ``W_j``.
      v_gram_max: ``(L-1,)`` ``lambda_max(V_j V_j^T)``, the C_V of Theorem 4.1.
      blocks_finite: ``(2L-1,)`` whether ``W_1..W_L, V_1..V_{L-1}`` are all finite.
      train_loss: the output loss of the real network, ``mean_i loss(f(x_i), y_i)`` (reported
        scale: equals ``train_mse`` for the squared loss).
      train_accuracy: classification accuracy of the real network (NaN for regression).
      val_loss, val_mse, val_accuracy: the same on the validation set (NaN without one).
    """

    objective: jax.Array
    output_loss: jax.Array
    layer_losses: jax.Array
    train_mse: jax.Array
    sv_min: jax.Array
    sv_max: jax.Array
    v_gram_max: jax.Array
    blocks_finite: jax.Array
    train_loss: jax.Array
    train_accuracy: jax.Array
    val_loss: jax.Array
    val_mse: jax.Array
    val_accuracy: jax.Array


class Structure(NamedTuple):
    """The static part of a Config: everything that shapes the compiled program."""

    algorithm: str
    activation: Any
    negative_slope: float
    depth: int
    k_v: int
    k_w: int
    inner: str = "gd"
    first_layer_form: str = "auto"
    loss: Any = "squared"
    step_size: str = "fixed"
    spectral_diagnostics: bool = True

    @classmethod
    def of(cls, config: Config) -> Structure:
        return cls(
            config.algorithm,
            config.activation,
            float(config.negative_slope),
            config.depth,
            config.k_v,
            config.k_w,
            config.inner,
            config.first_layer_form,
            config.loss,
            config.step_size,
            config.spectral_diagnostics,
        )

    @property
    def sigmas(self):
        """The activation of hidden layers 1 .. L-1 (``sigmas[j-1]`` is layer j's)."""
        return layer_activations(self.activation, self.negative_slope, self.depth)


class BCDDivergenceWarning(RuntimeWarning):
    """A run produced non-finite values; the last finite state was returned."""


# --------------------------------------------------------------------------------------
# Per-sample maths (one sample; vmapped below)
# --------------------------------------------------------------------------------------


def _layer_residual(w, v_prev, v, *, sigma, skip):
    """``e = sigma(W v_prev) (+ v_prev) - v`` and ``sigma'(W v_prev)`` for one sample."""
    s, ds = sigma.value_and_derivative(w @ v_prev)
    e = s + v_prev - v if skip else s - v
    return e, ds


def _hidden_v_block(v_prev, v, w, step, *, sigma, skip, project, k_v):
    """K_V gradient steps on ``V_{j-1,i}`` for ``1/2 ||sigma(W_j V_{j-1,i}) (+V_{j-1,i}) - V_{j,i}||^2``."""

    def body(_, u):
        e, ds = _layer_residual(w, u, v, sigma=sigma, skip=skip)
        grad = w.T @ (ds * e)
        if skip:
            grad = grad + e
        return u - step * grad

    u = lax.fori_loop(0, k_v, body, v_prev)
    return jnp.maximum(u, 0) if project else u


def _output_v_block(v, y, w_out, step, *, loss, project):
    """One gradient step on ``V_{L-1,i}`` for ``loss(W_L V_{L-1,i}, y_i)`` (squared: ``1/2 ||.||^2``)."""
    u = v - step * (w_out.T @ jax.grad(loss)(w_out @ v, y))
    return jnp.maximum(u, 0) if project else u


# --------------------------------------------------------------------------------------
# One sweep
# --------------------------------------------------------------------------------------


class _DataAux(NamedTuple):
    """Data-only matrices computed once per compiled call (not per sweep)."""

    gram: jax.Array | None  # X X^T, (n, n), for the Gram form of the K_W loop
    x_pinv: jax.Array | None  # pinv(X), (d_in, n), for the exact W_1 block
    x_curvature: jax.Array | None  # lambda_max(X^T X / n), for step_size="auto"


def _use_gram_form(structure: Structure, n: int, d_in: int) -> bool:
    """Whether the K_W loop runs in the Gram form (it gives the same iterates as the primal form).

    Per sweep the primal form costs ``K_W * 4 n d r`` FLOPs and the Gram form
    ``4 n d r + K_W * 2 n^2 r`` (plus ``X X^T`` once per call), so "auto" picks Gram when that is smaller.
    """
    if structure.inner == "exact" or structure.k_w == 0:
        return False
    if structure.first_layer_form != "auto":
        return structure.first_layer_form == "gram"
    return 4 * n * d_in + structure.k_w * 2 * n * n < structure.k_w * 4 * n * d_in


def _prepare(X, structure: Structure) -> _DataAux:
    n, d_in = X.shape
    gram = X @ X.T if _use_gram_form(structure, n, d_in) else None
    x_pinv = _pseudo_inverse(X) if structure.inner == "exact" else None
    x_curvature = _top_gram_eigenvalue(X) if structure.step_size == "auto" else None
    return _DataAux(gram, x_pinv, x_curvature)


def _pseudo_inverse(X):
    """``pinv(X)``, ``(d_in, n)``, through a Cholesky factor of the smaller Gram matrix.

    ``X^T (X X^T)^-1`` for n <= d_in, ``(X^T X)^-1 X^T`` otherwise: about ten times cheaper than
    the SVD behind ``jnp.linalg.pinv`` at the paper's sizes. A ridge of ``10 eps mean(diag G)``
    keeps the factorisation finite when X is rank deficient (constant features); it moves the
    result by a relative ``~10 eps cond(G)``.
    """
    n, d = X.shape
    gram = X @ X.T if n <= d else X.T @ X
    ridge = 10 * jnp.finfo(X.dtype).eps * jnp.trace(gram) / gram.shape[0]
    factor = jax.scipy.linalg.cho_factor(gram + ridge * jnp.eye(gram.shape[0], dtype=X.dtype))
    return jax.scipy.linalg.cho_solve(factor, X).T if n <= d else jax.scipy.linalg.cho_solve(factor, X.T)


def _top_gram_eigenvalue(A, iterations: int = 64):
    """``lambda_max(A^T A / n)`` for ``A: (n, k)`` by power iteration on the smaller Gram matrix.

    Matmuls only, on purpose: LAPACK calls (eigh, svd) batched by ``vmap`` inside the compiled
    loop can deadlock XLA:CPU with jaxlib 0.10. The estimate approaches the eigenvalue from below.
    """
    n, k = A.shape
    gram = A.T @ A if k <= n else A @ A.T

    def body(_, v):
        w = gram @ v
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(A.dtype).tiny)

    v = lax.fori_loop(0, iterations, body, jnp.ones((gram.shape[0],), A.dtype) / jnp.sqrt(gram.shape[0]))
    return jnp.dot(v, gram @ v) / n


def _first_layer_target_gradient(z, v1, sigma, linear):
    """Gradient of ``1/2 ||sigma(z) - v1||^2`` (or ``1/2 ||z - v1||^2``) with respect to z, per entry."""
    if linear:
        return z - v1
    s, ds = sigma.value_and_derivative(z)
    return ds * (s - v1)


def _first_layer_gd(w1, X, v1, step, gamma, weight_decay, aux: _DataAux, *, sigma, linear, k_w):
    """K_W gradient steps on W_1 for ``gamma mean_i 1/2 ||sigma(W_1 x_i) - V_{1,i}||^2 + lambda/2 ||W_1||^2``.

    (Algorithm 3: the linear surrogate ``W_1 x_i - V_{1,i}``.) Each step is
    ``W_1 <- W_1 - step * (gamma * grad + lambda * W_1)``.
    """
    n = X.shape[0]
    if aux.gram is None:

        def body(_, w):
            g = _first_layer_target_gradient(X @ w.T, v1, sigma, linear)
            return w - step * (gamma * (g.T @ X) / n + weight_decay * w)

        return lax.fori_loop(0, k_w, body, w1)

    # Gram form: every iterate lies in c W_1^0 + span of the rows of X, W_1 = c W_1^0 + B X
    # (c = (1 - step lambda)^k shrinks the start under weight decay), so X W_1^T = c Z_0 + (X X^T) B^T
    # and the step above is  c <- (1 - step lambda) c,  B <- (1 - step lambda) B - step gamma g^T / n.
    # The loop works on transposes, (r, n): B G is about twice as fast on CPU as G B^T (G = G^T).
    z0_t, v1_t = w1 @ X.T, v1.T
    shrink = 1.0 - step * weight_decay

    def gram_body(_, carry):
        c, b = carry
        g_t = _first_layer_target_gradient(c * z0_t + b @ aux.gram, v1_t, sigma, linear)
        return shrink * c, shrink * b - step * gamma * g_t / n

    c, b = lax.fori_loop(0, k_w, gram_body, (jnp.ones((), w1.dtype), jnp.zeros((w1.shape[0], n), w1.dtype)))
    return c * w1 + b @ X


def _first_layer_exact(w1, X, v1, aux: _DataAux, *, sigma, linear):
    """The K_W -> infinity limit of ``_first_layer_gd`` (see the module docstring)."""
    target = v1 if linear else sigma.inverse(v1)
    return w1 + (aux.x_pinv @ (target - X @ w1.T)).T


def _hidden_v_exact(v, w_lu, *, sigma):
    """The K_V -> infinity limit for an invertible sigma and regular W_j: ``W_j^{-1} sigma^{-1}(V_{j,i})``."""
    return jax.scipy.linalg.lu_solve(w_lu, sigma.inverse(v))


class _BlockSteps(NamedTuple):
    """The step size of each block in one sweep (see ``_block_steps``)."""

    output_w: Any
    output_v: Any
    hidden_w: Any  # callable(j, V_{j-1}) -> step
    hidden_v: Any  # callable(j, W_j) -> step
    first_w: Any


def _block_steps(steps: StepSizes, structure: Structure, aux: _DataAux, loss) -> _BlockSteps:
    """Fixed: the etas themselves. Auto: eta / (the block objective's gradient Lipschitz constant).

    The constants, for the block objectives ``loss`` (output), ``gamma/2 ||sigma(W_j v) (+v) - t||^2``
    (hidden, averaged over samples for W_j) and ``+ lambda/2 ||W||^2`` for weights:
    ``W_L: beta lambda_max(V^T V / n) + lambda``, ``V_{L-1}: beta ||W_L||^2``,
    ``W_j: gamma l_j^2 lambda_max(V_{j-1}^T V_{j-1} / n) + lambda``, ``V_{j-1}: gamma (l_j ||W_j|| (+1))^2``,
    ``W_1: gamma l_1^2 lambda_max(X^T X / n) + lambda``, with beta the loss's smoothness and
    l_j layer j's Lipschitz constant.
    """
    if structure.step_size == "fixed":
        return _BlockSteps(
            output_w=lambda v: steps.eta_w,
            output_v=lambda w: steps.eta_v,
            hidden_w=lambda j, v: steps.eta_w,
            hidden_v=lambda j, w: steps.eta_v,
            first_w=steps.eta_w1,
        )
    spec = get_algorithm(structure.algorithm)
    sigmas = structure.sigmas
    beta = 1.0 if loss.smoothness is None else loss.smoothness
    lip = [s.lipschitz for s in sigmas]
    lam = steps.weight_decay

    def spectral_norm(w):
        return jnp.sqrt(w.shape[0] * _top_gram_eigenvalue(w))  # ||W||_2^2 = lambda_max(W^T W)

    def hidden_v(j, w):
        scale = lip[j - 1] * spectral_norm(w) + (1.0 if spec.skip else 0.0)
        return steps.eta_v / (steps.gamma * scale**2)

    l1 = 1.0 if spec.linear_first_layer_fit else lip[0]
    return _BlockSteps(
        output_w=lambda v: steps.eta_w / (beta * _top_gram_eigenvalue(v) + lam),
        output_v=lambda w: steps.eta_v / (beta * spectral_norm(w) ** 2),
        hidden_w=lambda j, v: steps.eta_w / (steps.gamma * lip[j - 1] ** 2 * _top_gram_eigenvalue(v) + lam),
        hidden_v=hidden_v,
        first_w=steps.eta_w1 / (steps.gamma * l1**2 * aux.x_curvature + lam),
    )


class _Data(NamedTuple):
    """Training inputs (features incl. the bias column), targets, optional validation pair."""

    X: jax.Array
    Y: jax.Array
    X_val: jax.Array | None = None
    Y_val: jax.Array | None = None


def _sweep_impl(state: BCDState, data: _Data, steps: StepSizes, structure: Structure, aux: _DataAux | None = None):
    spec = get_algorithm(structure.algorithm)
    sigmas = structure.sigmas
    loss = get_loss(structure.loss)
    X, Y = data.X, data.Y
    aux = _prepare(X, structure) if aux is None else aux
    block_steps = _block_steps(steps, structure, aux, loss)
    lam = steps.weight_decay
    W, V = list(state.weights), list(state.hidden)
    L = len(W)
    n = X.shape[0]
    inputs = [X] + V  # inputs[j-1] is V_{j-1} (V_0 = X) in the paper's 1-based layer index
    exact_v = structure.inner == "exact" and not (spec.skip or spec.project_nonneg)

    # Output layer: W_L (Algorithm 1 only), then one step on every V_{L-1,i}.
    if spec.train_output_weight:
        output_grad = jax.vmap(jax.grad(loss))(V[-1] @ W[-1].T, Y)  # (n, d_out): W_L v_i - y_i when squared
        W[-1] = W[-1] - block_steps.output_w(V[-1]) * ((output_grad.T @ V[-1]) / n + lam * W[-1])
    output_v_block = functools.partial(_output_v_block, loss=loss, project=spec.project_nonneg)
    V[-1] = jax.vmap(output_v_block, in_axes=(0, 0, None, None))(V[-1], Y, W[-1], block_steps.output_v(W[-1]))
    inputs[-1] = V[-1]

    # Hidden layers j = L-1 .. 2: one step on W_j, then K_V steps on V_{j-1} (or their limit).
    for j in range(L - 1, 1, -1):
        sigma = sigmas[j - 1]
        w, v_prev, v = W[j - 1], inputs[j - 1], inputs[j]
        residual_batch = jax.vmap(functools.partial(_layer_residual, sigma=sigma, skip=spec.skip), in_axes=(None, 0, 0))
        e, ds = residual_batch(w, v_prev, v)
        W[j - 1] = w - block_steps.hidden_w(j, v_prev) * (steps.gamma * ((ds * e).T @ v_prev) / n + lam * w)
        if exact_v:
            solve = jax.vmap(functools.partial(_hidden_v_exact, sigma=sigma), in_axes=(0, None))
            new_v_prev = solve(v, jax.scipy.linalg.lu_factor(W[j - 1]))
        else:
            v_block = functools.partial(
                _hidden_v_block, sigma=sigma, skip=spec.skip, project=spec.project_nonneg, k_v=structure.k_v
            )
            step = steps.gamma * block_steps.hidden_v(j, W[j - 1])
            new_v_prev = jax.vmap(v_block, in_axes=(0, 0, None, None))(v_prev, v, W[j - 1], step)
        V[j - 2] = new_v_prev
        inputs[j - 1] = new_v_prev

    # First layer: K_W full-batch gradient steps on W_1 (its input X is fixed), or their limit.
    if structure.inner == "exact":
        W[0] = _first_layer_exact(W[0], X, V[0], aux, sigma=sigmas[0], linear=spec.linear_first_layer_fit)
    else:
        W[0] = _first_layer_gd(
            W[0], X, V[0], block_steps.first_w, steps.gamma, lam, aux,
            sigma=sigmas[0], linear=spec.linear_first_layer_fit, k_w=structure.k_w,
        )

    new_state = BCDState(tuple(W), tuple(V), state.sweep + 1)
    return new_state, _diagnostics_impl(new_state, data, steps, structure)


def _diagnostics_impl(state: BCDState, data: _Data, steps: StepSizes, structure: Structure) -> Diagnostics:
    spec = get_algorithm(structure.algorithm)
    sigmas = structure.sigmas
    loss = get_loss(structure.loss)
    X, Y = data.X, data.Y
    W, V = state.weights, state.hidden
    inputs = (X,) + V

    def sq_mean(r):
        return jnp.mean(jnp.sum(r * r, axis=-1))

    def mean_loss(pred, target):
        return loss.report_scale * jnp.mean(jax.vmap(loss)(pred, target))

    def network(features):
        return propagate(W, features, sigmas, spec.skip)[-1] @ W[-1].T

    output_loss = mean_loss(V[-1] @ W[-1].T, Y)
    layer_losses = []
    for j in range(1, len(W)):
        pre = sigmas[j - 1](inputs[j - 1] @ W[j - 1].T)
        if spec.skip and j >= 2:
            pre = pre + inputs[j - 1]
        layer_losses.append(sq_mean(pre - V[j - 1]))
    layer_losses = jnp.stack(layer_losses)
    penalty = steps.weight_decay * sum(jnp.sum(w * w) for w in W)  # lambda ||W||^2: reported scale

    pred = network(X)
    nan = jnp.asarray(jnp.nan, X.dtype)
    if data.X_val is not None:
        val_pred = network(data.X_val)
        val = (mean_loss(val_pred, data.Y_val), sq_mean(val_pred - data.Y_val), loss.accuracy(val_pred, data.Y_val))
    else:
        val = (nan, nan, nan)

    if structure.spectral_diagnostics:
        svals = [jnp.linalg.svd(w, compute_uv=False) for w in W]
        sv_min, sv_max = jnp.stack([s[-1] for s in svals]), jnp.stack([s[0] for s in svals])
        v_gram_max = jnp.stack([jnp.linalg.eigvalsh(v.T @ v)[-1] for v in V])
    else:  # see Config.spectral_diagnostics
        sv_min = sv_max = jnp.full((len(W),), jnp.nan, X.dtype)
        v_gram_max = jnp.full((len(V),), jnp.nan, X.dtype)
    return Diagnostics(
        objective=output_loss + steps.gamma * jnp.sum(layer_losses) + penalty,
        output_loss=output_loss,
        layer_losses=layer_losses,
        train_mse=sq_mean(pred - Y),
        sv_min=sv_min,
        sv_max=sv_max,
        v_gram_max=v_gram_max,
        blocks_finite=jnp.stack([jnp.all(jnp.isfinite(a)) for a in W + V]),
        train_loss=mean_loss(pred, Y),
        train_accuracy=loss.accuracy(pred, Y).astype(X.dtype),
        val_loss=val[0],
        val_mse=val[1],
        val_accuracy=jnp.asarray(val[2], X.dtype),
    )


# Diagnostics that must stay finite for a sweep to count (accuracy and val_* are NaN by design
# when they do not apply). Blocks can stay finite while the losses overflow: both count.
_MUST_BE_FINITE = ("objective", "output_loss", "layer_losses", "train_mse", "train_loss", "sv_min", "sv_max", "v_gram_max")
_SPECTRAL = ("sv_min", "sv_max", "v_gram_max")


def _is_finite(info: Diagnostics, structure: Structure) -> jax.Array:
    names = [n for n in _MUST_BE_FINITE if structure.spectral_diagnostics or n not in _SPECTRAL]
    checks = [jnp.all(info.blocks_finite)] + [jnp.all(jnp.isfinite(getattr(info, name))) for name in names]
    return jnp.all(jnp.stack(checks))


def _run_impl(
    state: BCDState,
    data: _Data,
    steps: StepSizes,
    structure: Structure,
    num_sweeps: int,
    aux: _DataAux | None = None,
    limit=None,
):
    """Up to ``num_sweeps`` sweeps under one ``lax.scan``.

    The loop stops (freezes the state with ``lax.cond``) at the first sweep whose result is
    non-finite, and skips the sweeps at positions ``>= limit`` (a traced count, so one compiled
    program serves chunks of any length up to ``num_sweeps``). Returns ``(state, initial
    diagnostics, stacked diagnostics, completed)``, ``completed[k]`` telling whether sweep k ran
    and was kept.
    """
    initial = _diagnostics_impl(state, data, steps, structure)
    aux = _prepare(data.X, structure) if aux is None else aux  # data-only work: once per call
    limit = num_sweeps if limit is None else limit

    def advance(s):
        return _sweep_impl(s, data, steps, structure, aux)

    blank = jax.tree.map(
        lambda a: jnp.full(a.shape, jnp.nan, a.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else jnp.zeros(a.shape, a.dtype),
        jax.eval_shape(advance, state),
    )

    def step(carry, position):
        s, halted = carry
        skip = jnp.logical_or(halted, position >= limit)
        new_s, info = lax.cond(skip, lambda s_: blank, advance, s)
        good = jnp.logical_and(jnp.logical_not(skip), _is_finite(info, structure))
        s = jax.tree.map(lambda a, b: jnp.where(good, a, b), new_s, s)
        return (s, jnp.logical_or(halted, jnp.logical_and(jnp.logical_not(skip), jnp.logical_not(good)))), (info, good)

    positions = jnp.arange(num_sweeps, dtype=jnp.int32)
    (state, _), (history, completed) = lax.scan(step, (state, jnp.asarray(False)), positions)
    return state, initial, history, completed


_sweep_jit = jax.jit(_sweep_impl, static_argnames=("structure",))
_diagnostics_jit = jax.jit(_diagnostics_impl, static_argnames=("structure",))
_prepare_jit = jax.jit(_prepare, static_argnames=("structure",))
_run_jit = jax.jit(_run_impl, static_argnames=("structure", "num_sweeps"))
# fit() owns its state, so it can hand the state's buffers to XLA for reuse.
_run_jit_donating = jax.jit(_run_impl, static_argnames=("structure", "num_sweeps"), donate_argnames=("state",))


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _check_state(state: BCDState, X, Y, config: Config) -> None:
    if not isinstance(state, BCDState):
        raise ValueError(f"state: expected a BCDState (see bcd_jax.init_state), got {type(state).__name__}")
    check_params(state.weights, config, X.shape[1], Y.shape[1])
    expected = (X.shape[0], config.width)
    if len(state.hidden) != config.depth - 1:
        raise ValueError(f"state: expected {config.depth - 1} hidden blocks V_1..V_(L-1), got {len(state.hidden)}")
    for j, v in enumerate(state.hidden, start=1):
        if tuple(v.shape) != expected:
            raise ValueError(f"state: V_{j} has shape {tuple(v.shape)}; expected (n, r) = {expected}")


def _checked_data(X, Y, config: Config, params=None, names=("X", "Y")):
    """Host-side checks of a data pair; classification labels become target rows.

    ``params`` (if given) only tells how many classes integer labels range over; its shapes
    are checked separately, by ``check_params``, with a message about the params.
    """
    classes = None
    if config.loss_fn.task != "regression" and isinstance(params, (tuple, list)) and params:
        shape = np.shape(params[-1])
        classes = shape[0] if len(shape) == 2 else None
    return check_data(X, Y, loss=config.loss_fn, num_classes=config.num_classes or classes, names=names)


def init_state(params, X, Y, config: Config | None = None) -> BCDState:
    """Builds the BCD state with the paper's exact V initialisation.

    ``V_1 = sigma(W_1 x)``, ``V_j = sigma(W_j V_{j-1})`` (``+ V_{j-1}`` for Algorithm 3).
    """
    config = Config() if config is None else config
    X, Y = _checked_data(X, Y, config, params)
    check_params(params, config, X.shape[1], Y.shape[1])
    params = tuple(jnp.asarray(w, X.dtype) for w in params)
    hidden = hidden_forward(params, X, config)
    return BCDState(params, hidden, jnp.zeros((), jnp.int32))


def _data(state, X, Y, config: Config) -> _Data:
    X, Y = _checked_data(X, Y, config, state.weights if isinstance(state, BCDState) else None)
    _check_state(state, X, Y, config)
    return _Data(input_features(X, config.bias), Y)


def sweep(state: BCDState, X, Y, config: Config | None = None) -> tuple[BCDState, Diagnostics]:
    """One BCD sweep (Algorithm 1 or 3); a pure, jit-compiled function.

    Returns the new state and the :class:`Diagnostics` of that state. Can be called inside
    the caller's own ``jit``/``vmap``; the step sizes are traced, so changing them does not
    recompile.
    """
    config = Config() if config is None else config
    data = _data(state, X, Y, config)
    return _sweep_jit(state, data, config.step_sizes(data.X.dtype), structure=Structure.of(config))


def diagnostics(state: BCDState, X, Y, config: Config | None = None) -> Diagnostics:
    """The :class:`Diagnostics` of a state (for example the initial one)."""
    config = Config() if config is None else config
    data = _data(state, X, Y, config)
    return _diagnostics_jit(state, data, config.step_sizes(data.X.dtype), structure=Structure.of(config))


def run(state: BCDState, X, Y, config: Config | None = None, num_sweeps: int | None = None):
    """Runs ``num_sweeps`` (default ``config.sweeps``) sweeps in one compiled ``lax.scan``.

    Returns ``(state, initial, history, completed)``: the final state (the last finite one if
    the run diverged), the diagnostics of the input state, the stacked per-sweep diagnostics
    (leading axis ``num_sweeps``) and a boolean per sweep that is False from the first sweep
    whose result was non-finite (the state is frozen from there on).
    """
    config = Config() if config is None else config
    num_sweeps = config.sweeps if num_sweeps is None else num_sweeps
    if isinstance(num_sweeps, bool) or not isinstance(num_sweeps, int) or num_sweeps < 1:
        raise ValueError(f"num_sweeps: expected an int >= 1, got {num_sweeps!r}")
    data = _data(state, X, Y, config)
    return _run_jit(state, data, config.step_sizes(data.X.dtype), structure=Structure.of(config), num_sweeps=num_sweeps)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: trained ``(W_1, ..., W_L)``; evaluate with ``bcd_jax.predict``.
      state: final :class:`BCDState` (the last finite one if the run diverged).
      history: :class:`Diagnostics` with a leading axis of ``sweeps_completed + 1``
        (entry 0 is the initial state), as NumPy arrays.
      config: the configuration used.
      wall_time: seconds of the compiled run (excluding compilation).
      compile_time: seconds spent tracing and compiling.
      diverged_at: the sweep (1-based) whose result was non-finite, or None.
    """

    params: tuple[jax.Array, ...]
    state: BCDState
    history: Diagnostics
    config: Config
    wall_time: float
    compile_time: float
    diverged_at: int | None

    @property
    def sweeps_completed(self) -> int:
        return int(self.state.sweep)

    @property
    def train_mse(self) -> float:
        return float(self.history.train_mse[-1])


def fit(
    X,
    Y,
    config: Config | None = None,
    *,
    key: jax.Array | None = None,
    init_params=None,
    validation: tuple | None = None,
    mesh: Mesh | None = None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    quiet: bool = False,
    callback: Callable[[int, Diagnostics], None] | None = None,
) -> FitResult:
    """Trains the network ``f(x) = W_L sigma(... sigma(W_1 x))`` on ``(X, Y)`` by BCD.

    Args:
      X: inputs ``(n, d_in)``.
      Y: targets ``(n,)`` or ``(n, d_out)``.
      config: a :class:`Config` (default: Algorithm 1 with the paper's Figure 1 settings).
      key: PRNG key for the initial weights; default ``jax.random.key(config.seed)``.
      init_params: optional ``(W_1, ..., W_L)`` to start from instead of drawing them.
      validation: optional ``(X_val, Y_val)``; adds ``val_loss``, ``val_mse`` and
        ``val_accuracy`` to the history (they are NaN without it).
      mesh: a 1-D ``jax.sharding.Mesh``: the samples (X, Y and every V_j) are sharded over its
        axis and the weights replicated, so the weight gradients' sums become all-reduces.
        n must be divisible by the number of devices.
      checkpoint_dir: folder for ``checkpoint.npz``, written atomically every
        ``checkpoint_every`` sweeps and at the end. An existing checkpoint there is never
        overwritten unless ``resume=True``.
      checkpoint_every: sweeps between checkpoints (default: only at the end).
      resume: continue from the checkpoint in ``checkpoint_dir``; the continued run is
        bit-identical to one that was never stopped (same ``checkpoint_every``).
      quiet: no progress line. Otherwise runs longer than about two seconds show one on
        stderr (when it is a terminal), updated between chunks of compiled sweeps, with the
        training error.
      callback: called on the host after every chunk as ``callback(sweeps_done, diagnostics)``
        with that chunk's stacked diagnostics (NumPy arrays).

    Returns:
      A :class:`FitResult`. If a sweep produced non-finite values, the run stops there,
      a :class:`BCDDivergenceWarning` names the sweep and the blocks, and the last finite
      state is returned.
    """
    config = Config() if config is None else config
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    X, Y = _checked_data(X, Y, config, init_params)
    val = None
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError(f"validation: expected a pair (X_val, Y_val), got {type(validation).__name__}")
        val = check_data(*validation, d_out=Y.shape[1], loss=config.loss_fn, num_classes=Y.shape[1],
                         names=("validation X", "validation Y"))
        if val[0].shape[1] != X.shape[1]:
            raise ValueError(f"validation X: has {val[0].shape[1]} features, X has {X.shape[1]}; expected equal")
        val = (val[0].astype(X.dtype), val[1].astype(X.dtype))
    multi_process = mesh is not None and jax.process_count() > 1
    if multi_process:
        if checkpoint_dir is not None:
            raise ValueError("checkpoint_dir: checkpoints of a run spread over several processes are not supported")
        X, Y = _global_samples(mesh, X, Y)  # each process passed its own samples
    _check_fit_options(checkpoint_dir, checkpoint_every, resume, callback, mesh, X.shape[0])
    if init_params is None:
        key = jax.random.key(config.seed) if key is None else key
        params = _init_params(key, config, X.shape[1], Y.shape[1], dtype=X.dtype)
    else:
        check_params(init_params, config, X.shape[1], Y.shape[1])
        params = tuple(jnp.asarray(w, X.dtype) for w in init_params)
    check_params(params, config, X.shape[1], Y.shape[1])
    key_data = np.asarray(jax.random.key_data(key)) if key is not None else np.zeros((0,), np.uint32)

    from bcd_jax import checkpoint as ckpt  # local: checkpoint imports config only, kept off the import path

    fingerprint = ckpt.data_fingerprint(X, Y) if checkpoint_dir is not None else ""
    past: dict[str, np.ndarray] | None = None
    if resume:
        weights, hidden, done, key_data, past = ckpt.load_checkpoint(checkpoint_dir, config=config, fingerprint=fingerprint)
        state = BCDState(tuple(w.astype(X.dtype) for w in weights), tuple(v.astype(X.dtype) for v in hidden), jnp.asarray(done, jnp.int32))
        _check_state(state, X, Y, config)
    else:
        if checkpoint_dir is not None and (Path(checkpoint_dir) / ckpt.CHECKPOINT_FILE).exists():
            raise ValueError(
                f"checkpoint_dir: {str(checkpoint_dir)!r} already holds a checkpoint; pass resume=True to continue "
                "it, or choose another folder (it is not overwritten)"
            )
        _warn_if_output_weight_one_signed(params[-1], config)
        # Copies: the state's buffers are donated to the compiled run, the caller's arrays are not.
        # (X, Y and params were checked above; init_state would check them again.)
        params = tuple(jnp.array(w, copy=True) for w in params)
        state = BCDState(params, hidden_forward(params, X, config), jnp.zeros((), jnp.int32))

    if mesh is not None:
        X, Y, state = _shard(mesh, X, Y, state)
        if val is not None:
            val = tuple(_replicate(_auto_mesh(mesh), a) for a in val)
    bias = config.bias
    data = _Data(input_features(X, bias), Y, *((input_features(val[0], bias), val[1]) if val is not None else ()))
    steps = config.step_sizes(X.dtype)
    structure = Structure.of(config)
    done = int(state.sweep)
    remaining = config.sweeps - done
    chunk = _chunk_length(config.sweeps, checkpoint_every, quiet, callback)

    t0 = time.perf_counter()
    aux = _prepare_jit(data.X, structure=structure)
    compiled = _run_jit_donating.lower(
        state, data, steps, structure=structure, num_sweeps=chunk, aux=aux, limit=jnp.asarray(chunk, jnp.int32)
    ).compile()
    compile_time = time.perf_counter() - t0

    initial = None
    chunks: list[Diagnostics] = []
    diverged_at = None
    progress = _Progress(config.sweeps, enabled=not quiet)
    wall_time = 0.0
    while remaining > 0 and diverged_at is None:
        length = min(chunk, remaining)
        t0 = time.perf_counter()
        state, first, history, completed = compiled(state, data, steps, aux=aux, limit=jnp.asarray(length, jnp.int32))
        completed = np.asarray(completed)[:length]  # the host sync of this chunk
        wall_time += time.perf_counter() - t0
        if initial is None:
            initial = jax.tree.map(np.asarray, first)
        n_done = int(completed.sum())
        history = jax.tree.map(lambda h: np.asarray(h)[:length], history)
        if n_done < length:
            diverged_at = done + n_done + 1
            _warn_divergence(diverged_at, jax.tree.map(lambda h: h[n_done], history), config)
        kept = jax.tree.map(lambda h: h[:n_done], history)
        chunks.append(kept)
        done += n_done
        remaining -= n_done
        if callback is not None and n_done:
            callback(done, kept)
        if checkpoint_dir is not None and (remaining == 0 or diverged_at is not None or checkpoint_every):
            ckpt.save_checkpoint(checkpoint_dir, state, _join_history(past, initial, chunks), config=config,
                                 key_data=key_data, fingerprint=fingerprint)
        progress.update(done, float(kept.train_mse[-1]) if n_done else float("nan"))
    progress.close()

    if initial is None:  # nothing left to run (a resumed, finished checkpoint)
        initial = jax.tree.map(np.asarray, _diagnostics_jit(state, data, steps, structure=structure))
    history = _join_history(past, initial, chunks)
    return FitResult(state.weights, state, history, config, wall_time, compile_time, diverged_at)


def _check_fit_options(checkpoint_dir, checkpoint_every, resume, callback, mesh, n) -> None:
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every: expected an int >= 1 or None, got {checkpoint_every!r}")
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every: given without checkpoint_dir; expected both or neither")
    if resume and checkpoint_dir is None:
        raise ValueError("resume: True needs checkpoint_dir, the folder that holds the checkpoint")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: expected a callable(sweeps_done, diagnostics), got {type(callback).__name__}")
    if mesh is not None:
        if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
            raise ValueError(f"mesh: expected a 1-D jax.sharding.Mesh, got {mesh!r}")
        if n % mesh.size:
            raise ValueError(f"mesh: n = {n} samples do not split evenly over {mesh.size} devices; expected a multiple")


def _chunk_length(sweeps: int, checkpoint_every: int | None, quiet: bool, callback) -> int:
    """Sweeps per compiled call: one call for a silent run, else about 20 progress updates."""
    if checkpoint_every is not None:
        return min(checkpoint_every, sweeps)
    if quiet and callback is None:
        return sweeps
    return max(1, -(-sweeps // 20))


def _auto_mesh(mesh: Mesh) -> Mesh:
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,))


def _global_samples(mesh: Mesh, X, Y):
    """Process-local samples -> global arrays sharded over the mesh axis (several processes)."""
    rows = NamedSharding(_auto_mesh(mesh), PartitionSpec(mesh.axis_names[0]))
    return (
        jax.make_array_from_process_local_data(rows, np.asarray(X)),
        jax.make_array_from_process_local_data(rows, np.asarray(Y)),
    )


def _replicate(mesh: Mesh, x):
    """Puts a host value that every process holds identically on all devices of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _shard(mesh: Mesh, X, Y, state: BCDState):
    """Samples over the mesh axis, weights replicated.

    The mesh is re-made with an Auto axis type, so that XLA places the collectives (a mesh
    from ``jax.make_mesh`` defaults to Explicit axes, which would need annotations inside).
    """
    mesh = _auto_mesh(mesh)
    rows = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    X, Y = jax.device_put(X, rows), jax.device_put(Y, rows)
    state = BCDState(
        tuple(_replicate(mesh, w) for w in state.weights),
        tuple(jax.device_put(v, rows) for v in state.hidden),
        _replicate(mesh, state.sweep),
    )
    return X, Y, state


def _join_history(past, initial, chunks) -> Diagnostics:
    """Initial diagnostics (or the resumed checkpoint's history) followed by every kept sweep."""
    parts = []
    if past is not None:
        parts.append(Diagnostics(**past))
    elif initial is not None:
        parts.append(jax.tree.map(lambda a: np.asarray(a)[None], initial))
    parts.extend(chunks)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _warn_divergence(sweep_index: int, info: Diagnostics, config: Config) -> None:
    names = [f"W_{j}" for j in range(1, config.depth + 1)] + [f"V_{j}" for j in range(1, config.depth)]
    which = [name for name, ok in zip(names, np.asarray(info.blocks_finite)) if not ok]
    which += [
        name for name in _MUST_BE_FINITE
        if not np.all(np.isfinite(getattr(info, name))) and (config.spectral_diagnostics or name not in _SPECTRAL)
    ]
    warnings.warn(
        f"BCD diverged at sweep {sweep_index}: non-finite values in {', '.join(which)}; returning the last finite state "
        f"(after sweep {sweep_index - 1}). Lower the step sizes (eta_v, eta_w, eta_w1) or gamma.",
        BCDDivergenceWarning,
        stacklevel=3,
    )


class _Progress:
    """A one-line progress display on an interactive stderr, shown once a run has taken ~2 s.

    Not shown when stderr is not a terminal (logs and pipes get no carriage-return noise).
    """

    def __init__(self, total: int, enabled: bool, delay: float = 2.0):
        self.total, self.delay = total, delay
        self.enabled = enabled and getattr(sys.stderr, "isatty", lambda: False)()
        self.start = time.perf_counter()
        self.shown = False

    def update(self, done: int, train_mse: float) -> None:
        elapsed = time.perf_counter() - self.start
        if not self.enabled or elapsed < self.delay:
            return
        width = 24
        filled = int(width * done / max(self.total, 1))
        sys.stderr.write(
            f"\rbcd_jax [{'#' * filled}{'.' * (width - filled)}] sweep {done}/{self.total}  "
            f"train MSE {train_mse:.3e}  {elapsed:.1f}s"
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _warn_if_output_weight_one_signed(w_out, config: Config) -> None:
    """Algorithm 3 keeps W_L fixed; Lemma 5.1 needs both signs in every row to fit any y."""
    if config.algorithm_spec.train_output_weight or not is_concrete(w_out):
        return
    w = np.asarray(w_out)
    rows = [i for i in range(w.shape[0]) if not ((w[i] > 0).any() and (w[i] < 0).any())]
    if rows:
        warnings.warn(
            f"init_params: W_L row(s) {rows} have entries of one sign only; Algorithm 3 keeps W_L fixed, "
            "so targets of the other sign cannot be reached (Lemma 5.1). Use another key or a wider layer.",
            RuntimeWarning,
            stacklevel=3,
        )
