"""Pieces shared by the families whose blocks are the weights and the per-sample layer outputs.

Akiyama's algorithms and the whole-objective family both split the network into the weights
``W_j`` and the layer outputs ``V_{j,i}`` of every sample, start V at the forward pass of the
initial weights, draw the weights with singular value bounding (Algorithm 2), and measure the
same layer terms::

    layer j (1 <= j <= L-1):  ||sigma_j(W_j V_{j-1,i}) (+ V_{j-1,i}) - V_{j,i}||^2      (V_0 = X)
    output:                   loss(W_L V_{L-1,i}, y_i)

(the skip term only for ``j >= 2`` in the skip form). The functions here are written once for
both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bcd_jax.algorithms.base import Data, mean_squared_norm
from bcd_jax.algorithms.primitives import singular_value_bounding
from bcd_jax.network import Network, gaussian_weights, hidden_forward
from bcd_jax.validation import check_float

__all__ = [
    "LayerBlocks",
    "SpectralExtras",
    "forward_blocks",
    "layer_gaps",
    "output_loss",
    "layered_objective",
    "spectral_extras",
    "check_svb",
    "singular_values",
    "svb_weights",
]


class LayerBlocks(NamedTuple):
    """The blocks ``(W, V)``, a pytree.

    Attributes:
      W: ``(W_1, ..., W_L)``; ``W_1: (r, d_in)``, ``W_j: (r, r)``, ``W_L: (d_out, r)``.
      V: ``(V_1, ..., V_{L-1})``, each ``(n, r)``; row i is the paper's ``V_{j,i}``.
    """

    W: tuple[jax.Array, ...]
    V: tuple[jax.Array, ...]


class SpectralExtras(NamedTuple):
    """Singular values of the weights and the C_V of Theorem 4.1, NaN when not computed.

    Attributes:
      sv_min, sv_max: ``(L,)`` smallest / largest singular value of each ``W_j``.
      v_gram_max: ``(L-1,)`` ``lambda_max(V_j V_j^T)`` (a sum over samples, as in the paper).
    """

    sv_min: jax.Array
    sv_max: jax.Array
    v_gram_max: jax.Array


def forward_blocks(weights, data: Data, network: Network) -> LayerBlocks:
    """The paper's exact V initialisation: ``V_j = h_j``, the forward pass of ``weights``."""
    weights = tuple(weights)
    return LayerBlocks(weights, hidden_forward(weights, data.X, network))


def layer_gaps(blocks: LayerBlocks, data: Data, network: Network) -> jax.Array:
    """``(L-1,)``: layer j's ``mean_i ||sigma_j(W_j V_{j-1,i}) (+ V_{j-1,i}) - V_{j,i}||^2``."""
    sigmas = network.layer_activations
    inputs = (data.X, *blocks.V)
    gaps = []
    for j in range(1, len(blocks.W)):
        produced = sigmas[j - 1](inputs[j - 1] @ blocks.W[j - 1].T)
        if network.skip and j >= 2:
            produced = produced + inputs[j - 1]
        gaps.append(mean_squared_norm(produced - blocks.V[j - 1]))
    return jnp.stack(gaps)


def output_loss(blocks: LayerBlocks, data: Data, network: Network) -> jax.Array:
    """``mean_i loss(W_L V_{L-1,i}, y_i)`` (the per-sample loss as written: squared ``1/2 ||.||^2``)."""
    return jnp.mean(jax.vmap(network.loss_fn)(blocks.V[-1] @ blocks.W[-1].T, data.Y))


def layered_objective(output, gaps, layer_weights, weight_decay, weights) -> jax.Array:
    """F / n = ``output + sum_j gamma_j/2 gap_j + lambda/2 sum_j ||W_j||^2``."""
    penalty = 0.5 * weight_decay * sum(jnp.sum(w * w) for w in weights)
    return output + 0.5 * jnp.sum(layer_weights * gaps) + penalty


def spectral_extras(blocks: LayerBlocks, enabled: bool, dtype) -> SpectralExtras:
    """Each W_j's extreme singular values and each ``lambda_max(V_j^T V_j)``, or NaN when not ``enabled``.

    They need LAPACK (svd, eigh); LAPACK gets finite input only (a diverged block would make it
    print "illegal value" errors) and the result of a non-finite block is NaN.
    """
    W, V = blocks.W, blocks.V
    if not enabled:
        return SpectralExtras(
            jnp.full((len(W),), jnp.nan, dtype),
            jnp.full((len(W),), jnp.nan, dtype),
            jnp.full((len(V),), jnp.nan, dtype),
        )

    def finite_or_zero(a):
        ok = jnp.all(jnp.isfinite(a))
        return ok, jnp.where(ok, a, 0)

    svals = []
    for w in W:
        ok, safe = finite_or_zero(w)
        svals.append(jnp.where(ok, singular_values(safe), jnp.nan))
    grams = [finite_or_zero(v.T @ v) for v in V]
    return SpectralExtras(
        jnp.stack([s[-1] for s in svals]),
        jnp.stack([s[0] for s in svals]),
        jnp.stack([jnp.where(ok, jnp.linalg.eigvalsh(g)[-1], jnp.nan) for ok, g in grams]),
    )


def singular_values(w: jax.Array) -> jax.Array:
    """The singular values of ``w``, largest first, in memory O(size of w).

    XLA's SVD of a wide matrix allocates both square factors (40 GB for a 30 x 100,000 W_1): a
    thin QR first leaves a small square triangle with the same singular values.
    """
    m, k = w.shape
    if max(m, k) > 2 * min(m, k):
        w = jnp.linalg.qr(w.T if m < k else w, mode="r")
    return jnp.linalg.svd(w, compute_uv=False)


def check_svb(svb) -> tuple[float, float] | None:
    """``svb`` bounds ``(s1, s2)`` with ``0 <= s1 <= s2`` and ``s2 > 0``, or None; else a ``ValueError``."""
    if svb is None:
        return None
    ok = isinstance(svb, (tuple, list)) and len(svb) == 2
    if ok:
        try:
            bounds = (check_float("svb", svb[0], low=0), check_float("svb", svb[1], low=0, low_open=True))
        except ValueError:
            ok = False
    if not ok or bounds[0] > bounds[1]:
        raise ValueError(f"svb: expected (s1, s2) with 0 <= s1 <= s2 and s2 > 0, or None; got {svb!r}")
    return bounds


def svb_weights(key, network: Network, d_in: int, d_out: int, dtype, bounds, *, bound_output: bool):
    """``W_1 ~ N(0, 1/d_in)``, ``W_j ~ N(0, 1/r)``, then singular value bounding (Algorithm 2) to
    ``bounds`` on ``W_2 .. W_{L-1}`` and, with ``bound_output``, on ``W_L``."""
    s1, s2 = bounds
    weights = gaussian_weights(key, network.layer_shapes(d_in, d_out), dtype)
    last = len(weights) - 1
    for index in range(1, len(weights)):
        if index < last or bound_output:
            weights[index] = singular_value_bounding(weights[index], s1, s2)
    return tuple(weights)
