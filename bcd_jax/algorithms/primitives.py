"""Numerical building blocks shared by the BCD families.

Everything here is a pure, traceable function of arrays. Matmul-only routines are preferred
inside compiled loops on purpose: LAPACK calls (eigh, svd) batched by ``vmap`` inside a
compiled loop can deadlock XLA:CPU with jaxlib 0.10.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "top_gram_eigenvalue",
    "spectral_norm",
    "pseudo_inverse",
    "least_squares_factor",
    "apply_pseudo_inverse",
    "gram_form_gd",
    "use_gram_form",
    "project_nonneg",
    "singular_value_bounding",
    "batched_pcg",
]


def top_gram_eigenvalue(A: jax.Array, iterations: int = 64) -> jax.Array:
    """``lambda_max(A^T A / n)`` for ``A: (n, k)`` by power iteration on the smaller Gram matrix.

    Matmuls only (see the module docstring). The estimate approaches the eigenvalue from below.
    """
    n, k = A.shape
    gram = A.T @ A if k <= n else A @ A.T

    def body(_, v):
        w = gram @ v
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(A.dtype).tiny)

    v = lax.fori_loop(0, iterations, body, jnp.ones((gram.shape[0],), A.dtype) / jnp.sqrt(gram.shape[0]))
    return jnp.dot(v, gram @ v) / n


def spectral_norm(W: jax.Array) -> jax.Array:
    """``||W||_2`` by power iteration (``||W||_2^2 = lambda_max(W^T W)``)."""
    return jnp.sqrt(W.shape[0] * top_gram_eigenvalue(W))


def pseudo_inverse(X: jax.Array) -> jax.Array:
    """``pinv(X)``, ``(d, n)``, through a Cholesky factor of the smaller Gram matrix.

    ``X^T (X X^T)^-1`` for n <= d, ``(X^T X)^-1 X^T`` otherwise: about ten times cheaper than
    the SVD behind ``jnp.linalg.pinv`` at the paper's sizes. A ridge of ``10 eps mean(diag G)``
    keeps the factorisation finite when X is rank deficient (constant features); it moves the
    result by a relative ``~10 eps cond(G)``.
    """
    n, d = X.shape
    gram = X @ X.T if n <= d else X.T @ X
    ridge = 10 * jnp.finfo(X.dtype).eps * jnp.trace(gram) / gram.shape[0]
    factor = jax.scipy.linalg.cho_factor(gram + ridge * jnp.eye(gram.shape[0], dtype=X.dtype))
    return jax.scipy.linalg.cho_solve(factor, X).T if n <= d else jax.scipy.linalg.cho_solve(factor, X.T)


def least_squares_factor(X: jax.Array) -> jax.Array:
    """The lower Cholesky factor of X's smaller Gram matrix, for :func:`apply_pseudo_inverse`.

    ``X X^T`` for n <= d, ``X^T X`` otherwise, with the ridge of :func:`pseudo_inverse`: a
    ``(min(n, d), min(n, d))`` matrix, so what is kept is O(d^2) whatever n (``pinv(X)`` itself
    is ``(d, n)``, a second copy of the data).
    """
    n, d = X.shape
    gram = X @ X.T if n <= d else X.T @ X
    ridge = 10 * jnp.finfo(X.dtype).eps * jnp.trace(gram) / gram.shape[0]
    return jnp.linalg.cholesky(gram + ridge * jnp.eye(gram.shape[0], dtype=X.dtype))


def apply_pseudo_inverse(X: jax.Array, factor: jax.Array, R: jax.Array) -> jax.Array:
    """``pinv(X) @ R`` for ``R: (n, k)`` from ``factor = least_squares_factor(X)``, without forming pinv(X).

    ``X^T ((X X^T)^-1 R)`` for n <= d, ``(X^T X)^-1 (X^T R)`` otherwise (as :func:`pseudo_inverse`):
    ``2 n d k`` FLOPs for the product with X plus ``2 min(n, d)^2 k`` for the two triangular solves.
    """
    n, d = X.shape
    if n <= d:
        return X.T @ jax.scipy.linalg.cho_solve((factor, True), R)
    return jax.scipy.linalg.cho_solve((factor, True), X.T @ R)


def use_gram_form(n: int, d: int, steps: int) -> bool:
    """Whether :func:`gram_form_gd` costs fewer FLOPs than the same loop on W itself.

    Per call, the loop on W costs ``steps * 4 n d r`` FLOPs and the Gram form
    ``4 n d r + steps * 2 n^2 r`` (plus ``X X^T`` once per run). This is the one rule; the
    FLOP counts of ``bcd_jax.algorithms.akiyama_flops`` use it too.
    """
    return steps > 0 and 4 * n * d + steps * 2 * n * n < steps * 4 * n * d


def gram_form_gd(
    w: jax.Array, X: jax.Array, gram: jax.Array, target_gradient: Callable, step, scale, weight_decay, steps: int
) -> jax.Array:
    """``steps`` gradient steps ``W <- W - step (scale * G(X W^T)^T X / n + weight_decay W)`` in the Gram form.

    ``target_gradient(Z^T) -> G^T`` maps the transposed pre-activations ``(r, n)`` to the
    transposed per-entry gradient. Every iterate lies in ``c W^0 + span(rows of X)``, i.e.
    ``W = c W^0 + B X`` (``c = (1 - step weight_decay)^k`` shrinks the start under weight decay), so
    ``X W^T = c Z_0 + (X X^T) B^T`` and the step is ``c <- (1 - step lambda) c``,
    ``B <- (1 - step lambda) B - step scale G^T / n``: the same iterates as the loop on W, with
    ``2 n^2 r`` instead of ``4 n d r`` FLOPs per step. The loop works on transposes, ``(r, n)``:
    ``B G`` is about twice as fast on CPU as ``G B^T`` (``G = G^T``).
    """
    n = X.shape[0]
    z0_t = w @ X.T
    shrink = 1.0 - step * weight_decay

    def body(_, carry):
        c, b = carry
        g_t = target_gradient(c * z0_t + b @ gram)
        return shrink * c, shrink * b - step * scale * g_t / n

    c, b = lax.fori_loop(0, steps, body, (jnp.ones((), w.dtype), jnp.zeros((w.shape[0], n), w.dtype)))
    return c * w + b @ X


def project_nonneg(v: jax.Array) -> jax.Array:
    """The projection onto the non-negative orthant, ``max(v, 0)``."""
    return jnp.maximum(v, 0)


def singular_value_bounding(w: jax.Array, s1: float, s2: float) -> jax.Array:
    """Algorithm 2 of Akiyama (2025): clip the singular values of ``w`` to ``[s1, s2]`` and rebuild it."""
    u, s, vt = jnp.linalg.svd(w, full_matrices=False)
    return (u * jnp.clip(s, s1, s2)) @ vt


def batched_pcg(apply_a, apply_minv, x0: jax.Array, r0: jax.Array, iterations: int) -> jax.Array:
    """``iterations`` preconditioned conjugate-gradient steps on every row's own system at once.

    Row k solves ``A_k x_k = b_k`` from ``x0[k]`` with residual ``r0[k] = b_k - A_k x0[k]``;
    ``apply_a(P)`` applies every row's ``A_k`` to the rows of ``P`` and ``apply_minv(R)`` the (shared
    or per-row) preconditioner. A fixed number of steps, no tolerance: the result is a smooth,
    reproducible function of the inputs. On a convex quadratic each step lowers its objective from
    ``x0`` on. A row whose curvature or residual vanishes stops moving (its step is 0).
    """

    def safe_div(a, b):
        ok = b > 0
        return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)

    z = apply_minv(r0)
    rz = jnp.sum(r0 * z, axis=-1)

    def body(_, carry):
        x, r, p, rz = carry
        ap = apply_a(p)
        alpha = safe_div(rz, jnp.sum(p * ap, axis=-1))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        z = apply_minv(r)
        rz_new = jnp.sum(r * z, axis=-1)
        p = z + safe_div(rz_new, rz)[:, None] * p
        return x, r, p, rz_new

    return lax.fori_loop(0, iterations, body, (x0, r0, z, rz))[0]
