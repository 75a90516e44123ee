"""Akiyama's sweep made a block-coordinate descent on the whole objective F, for any n.

The paper's Algorithms 1 and 3 update each ``V_{j-1}`` against layer j's term only, so the
sweep does not decrease F (measured: increases of 3-4% per sweep on the digits, where n > d_in)
and the first layer's mismatch plateaus. Here every block takes descent steps on EVERY term
of F that contains it::

    F(W, V) = mean_i [ loss(W_L V_{L-1,i}, y_i)
                       + gamma/2 sum_{j=1}^{L-1} ||sigma(W_j V_{j-1,i}) (+V_{j-1,i}) - V_{j,i}||^2 ]
              + lambda/2 sum_j ||W_j||^2

(per-sample losses with the library's ``1/2`` convention; the reported ``objective`` is this F,
with ``gamma_j = gamma * decay^(L-1-j)``). Blocks in the paper's backward order: ``W_L``, ``V_{L-1}``, then for
``j = L-1 .. 2``: ``W_j``, ``V_{j-1}``; finally ``W_1``. A V block's objective now has its own layer's
term ``gamma/2 ||V_j - a_j||^2`` (``a_j = sigma(W_j V_{j-1}) (+V_{j-1})``) next to the term of the
layer above. Every step is a descent step on its block, so F never increases:

* ``inner="gd"``: ``k_v`` / ``k_w`` gradient steps of size ``eta / L`` with ``L`` the block's
  gradient Lipschitz constant (recomputed every sweep), so ``eta <= 1`` is always stable;
* ``inner="exact"``: closed-form block minimisers where they exist -- for the squared loss,
  ``W_L`` (ridge least squares) and ``V_{L-1}`` (``(W_L^T W_L + gamma I) v = W_L^T y + gamma a``, all
  samples in one solve) -- and, for a continuous piecewise-linear activation (relu, leaky_relu,
  identity, any activation that declares its pieces), Newton steps on the current linear pieces
  elsewhere: per row of W a weighted least-squares system, per sample of V ``(I + J^T J) v = ...``.
  Each Newton system is solved approximately by ``cg_iterations`` preconditioned conjugate-gradient
  steps from the current block, all rows (samples) at once and matrix-free, so a step costs
  O(n (d r + r^2)) and holds O(n r + d r + d^2) memory -- linear in n; the preconditioner is the
  block's shared Gram (``g V^T V / n + ridge I`` for W, ``g_own I + g (W + s I)^T (W + s I)`` for V),
  factored once per step (for W_1 once per run: X is fixed). CG lowers the quadratic model from the
  current point on, and each row or sample keeps the result only where it lowers its true block
  objective more than the gradient step does -- so F never increases, pieces changing or not.

``resync=True`` first resets every ``V_j`` to the forward pass of the current weights (the
variant that re-synchronises V each sweep); F may then rise between sweeps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from bcd_jax.algorithms.base import Algorithm, Data, refuse_flat_activations
from bcd_jax.algorithms.layered import (
    LayerBlocks,
    SpectralExtras,
    check_svb,
    forward_blocks,
    layer_gaps,
    layered_objective,
    output_loss,
    spectral_extras,
    svb_weights,
)
from bcd_jax.algorithms.primitives import batched_pcg, spectral_norm, top_gram_eigenvalue
from bcd_jax.network import Network, hidden_forward
from bcd_jax.validation import check_bool, check_choice, check_float, check_int

__all__ = ["WholeObjective", "WholeObjectiveHyper", "WholeObjectiveExtras", "InputGram"]

INNER_MODES = ("gd", "exact")
# The small proximal ridge of the Newton and least-squares steps, relative to their Gram's mean
# diagonal: it keeps every system positive definite (a rank-deficient input) at a negligible bias.
_NEWTON_RIDGE = 1e-6


def _ridge(trace, k: int, dtype):
    """The proximal ridge of a k x k Gram with this trace: 1e-6 of its mean diagonal, and at least ten
    rounding errors of its largest entries (a float32 Gram of a rank-deficient input can come out
    with eigenvalues of -1e-6 relative: without this floor its Cholesky factor is NaN)."""
    return _NEWTON_RIDGE * trace / k + 10 * jnp.finfo(dtype).eps * trace + jnp.finfo(dtype).tiny


# Above this many input features W_1's preconditioner is the Gram's diagonal (its eigendecomposition,
# O(d^3) time and O(d^2) memory once per run, would dominate).
DENSE_PRECONDITIONER_MAX_FEATURES = 4096


class WholeObjectiveHyper(NamedTuple):
    """The traced numbers.

    Attributes:
      gamma: weight of the hidden-layer terms of F (of layer L-1's; see ``decay``).
      eta_v: V step size as a fraction of ``1 / L`` (1 is always stable).
      eta_w: W step size as a fraction of ``1 / L``.
      weight_decay: lambda of ``lambda/2 ||W_j||^2``.
      decay: layer j's term has weight ``gamma_j = gamma * decay^(L-1-j)``: 1 weighs every layer
        alike; below 1 the layers near the input count less, so a V block leans toward the layer
        above (toward Algorithm 1's sweep, which ignores its own layer) -- still a descent on
        this weighted F.
    """

    gamma: Any = 0.2
    eta_v: Any = 1.0
    eta_w: Any = 1.0
    weight_decay: Any = 0.0
    decay: Any = 1.0


class WholeObjectiveExtras(NamedTuple):
    """Per-sweep diagnostics, of the blocks after the sweep (as :class:`bcd_jax.algorithms.akiyama.AkiyamaExtras`).

    Attributes:
      output_loss: ``mean_i loss(W_L V_{L-1,i}, y_i)``.
      layer_losses: ``(L-1,)``, ``mean_i ||sigma(W_j V_{j-1,i}) (+V_{j-1,i}) - V_{j,i}||^2``.
      spectral: singular values and ``lambda_max(V_j V_j^T)``, NaN unless ``spectral_diagnostics``.
    """

    output_loss: jax.Array
    layer_losses: jax.Array
    spectral: SpectralExtras


class InputGram(NamedTuple):
    """What a W block needs of its input ``V (n, d)``'s Gram ``G = V^T V / n`` (W_1's: once per run).

    Attributes:
      lam_max: ``lambda_max(G)`` by power iteration (the gradient step's curvature).
      mean_sq: ``trace(G) / d`` (the Newton systems' small ridge).
      evals, evecs: ``eigh(G)``, for the preconditioner ``g G + ridge I`` at any traced g (None: see ``diag``).
      diag: ``diag(G)``, the preconditioner of a very wide input (None when ``evals`` is given).
    """

    lam_max: jax.Array
    mean_sq: jax.Array
    evals: jax.Array | None = None
    evecs: jax.Array | None = None
    diag: jax.Array | None = None


def _input_gram(X, *, decompose: bool) -> InputGram:
    n, d = X.shape
    lam_max = top_gram_eigenvalue(X)
    gram = X.T @ X / n if decompose else None
    mean_sq = jnp.sum(X * X) / (n * d)
    if not decompose:
        return InputGram(lam_max, mean_sq)
    if d <= DENSE_PRECONDITIONER_MAX_FEATURES:
        evals, evecs = jnp.linalg.eigh(gram)
        return InputGram(lam_max, mean_sq, evals, evecs)
    return InputGram(lam_max, mean_sq, diag=jnp.sum(X * X, axis=0) / n)


def _layer_weights(hyper: WholeObjectiveHyper, depth: int):
    """``(L-1,)``: every hidden layer's weight ``gamma_j``."""
    return jnp.stack([_layer_weight(hyper, j, depth) for j in range(1, depth)])


def _layer_weight(hyper: WholeObjectiveHyper, j: int, depth: int):
    """``gamma_j = gamma * decay^(L-1-j)``, the weight of hidden layer j's term (j = 1 .. L-1)."""
    return hyper.gamma * hyper.decay ** (depth - 1 - j)


def _floored(curvature):
    """A W block's curvature ``lambda_max(V^T V) / n``, at least ``sqrt(eps)``: inputs that have all
    but vanished (a tiny initialisation) would otherwise make the step ``eta / L`` overflow. A
    larger L only shortens the step, so the block still descends."""
    return jnp.maximum(curvature, jnp.sqrt(jnp.finfo(curvature.dtype).eps))


@dataclasses.dataclass(frozen=True)
class WholeObjective(Algorithm):
    """Block-coordinate descent on the whole of Akiyama's F (see the module docstring).

    Attributes:
      k_v: descent steps per V block per sweep.
      k_w: descent steps per W block per sweep.
      inner: ``"gd"`` (gradient steps) or ``"exact"`` (closed forms and safeguarded Newton steps).
      cg_iterations: preconditioned CG steps per Newton system of ``inner="exact"`` (5 matches the
        exact Newton step's test accuracy on the digits to the last sample; 1 is a preconditioned
        gradient step).
      resync: reset V to the forward pass at the start of every sweep.
      svb: singular value bounds of the initial weights (Algorithm 2); None: (3/4, 5/4).
      spectral_diagnostics: as for :class:`bcd_jax.Akiyama`.
    """

    k_v: int = 10
    k_w: int = 10
    inner: str = "gd"
    cg_iterations: int = 5
    resync: bool = False
    svb: tuple[float, float] | None = None
    spectral_diagnostics: bool = True

    Hyper: ClassVar[type] = WholeObjectiveHyper

    def __post_init__(self):
        object.__setattr__(self, "k_v", check_int("k_v", self.k_v, low=1))
        object.__setattr__(self, "k_w", check_int("k_w", self.k_w, low=1))
        check_choice("inner", self.inner, INNER_MODES)
        object.__setattr__(self, "cg_iterations", check_int("cg_iterations", self.cg_iterations, low=1))
        object.__setattr__(self, "resync", check_bool("resync", self.resync))
        object.__setattr__(self, "spectral_diagnostics", check_bool("spectral_diagnostics", self.spectral_diagnostics))
        object.__setattr__(self, "svb", check_svb(self.svb))

    @property
    def paper(self) -> str:
        return "Akiyama's BCD on the whole objective F (every block descends F)"

    # -- host side ---------------------------------------------------------------------------
    def resolve(self, network: Network, hyper) -> Network:
        network = super().resolve(network, hyper)
        for field in ("gamma", "eta_v", "eta_w", "decay"):
            check_float(f"hyper.{field}", getattr(hyper, field), low=0, low_open=True)
        refuse_flat_activations(network.layer_activations, self.name)
        if network.bias == "all":
            raise ValueError(
                "network.bias: this family has no hidden-layer biases; use bias=True (a bias column in W_1)"
            )
        for j, act in enumerate(network.layer_activations, start=1):
            if act.lipschitz is None:
                raise ValueError(
                    f"activation: layer {j}'s {act.name!r} declares no Lipschitz constant, which the "
                    "step sizes need (bcd_jax.Activation(name, fn, lipschitz=...))"
                )
            if self.inner == "exact" and not act.piecewise_linear:
                raise ValueError(
                    f"inner: 'exact' takes Newton steps on linear pieces (relu, leaky_relu, identity, or an "
                    f"activation that declares its pieces); layer {j} has {act.name!r}; use inner='gd'"
                )
        return network

    def init_weights(self, key, network: Network, d_in: int, d_out: int, dtype=jnp.float32):
        """As Algorithm 1: Gaussian, then singular value bounding of ``W_2 .. W_L`` (default (3/4, 5/4))."""
        return svb_weights(key, network, d_in, d_out, dtype, self.svb or (0.75, 1.25), bound_output=True)

    def prepare(self, data: Data, network: Network) -> InputGram:
        """W_1's input Gram (its largest eigenvalue; for ``inner="exact"`` its preconditioner), once per run."""
        return _input_gram(data.X, decompose=self.inner == "exact")

    def init(self, weights, data: Data, network: Network) -> LayerBlocks:
        """``V_j = h_j``, the forward pass of the initial network."""
        return forward_blocks(weights, data, network)

    def weights(self, blocks: LayerBlocks):
        return blocks.W

    def objective(self, blocks: LayerBlocks, data: Data, hyper: WholeObjectiveHyper, network: Network):
        """F / n: ``mean_i loss + sum_j gamma_j/2 layer loss_j + lambda/2 sum_j ||W_j||^2``."""
        gaps = layer_gaps(blocks, data, network)
        return layered_objective(
            output_loss(blocks, data, network), gaps, _layer_weights(hyper, network.depth), hyper.weight_decay, blocks.W
        )

    # -- one sweep -------------------------------------------------------------------------------
    def step(self, blocks: LayerBlocks, data: Data, cache, hyper: WholeObjectiveHyper, network: Network):
        W = list(blocks.W)
        V = list(hidden_forward(W, data.X, network)) if self.resync else list(blocks.V)
        L = len(W)
        sigmas = network.layer_activations
        loss = network.loss_fn
        X, Y = data.X, data.Y
        inputs = [X] + V  # inputs[j-1] is V_{j-1}

        def own_target(j):
            """``a_j = sigma_j(W_j V_{j-1}) (+V_{j-1})``: what layer j produces (j = 1..L-1)."""
            a = sigmas[j - 1](inputs[j - 1] @ W[j - 1].T)
            return a + inputs[j - 1] if network.skip and j >= 2 else a

        # Output weight W_L: loss(W_L v, y) averaged, + lambda/2 ||W_L||^2.
        W[-1] = self._output_weight(W[-1], V[-1], Y, hyper, loss)
        # V_{L-1}: loss(W_L v, y) + gamma/2 ||v - a_{L-1}||^2, per sample.
        V[-1] = self._output_v(V[-1], Y, W[-1], own_target(L - 1), hyper, loss)
        inputs[-1] = V[-1]
        for j in range(L - 1, 1, -1):
            W[j - 1] = self._hidden_weight(W[j - 1], inputs[j - 1], inputs[j], j, hyper, network)
            V[j - 2] = self._hidden_v(V[j - 2], own_target(j - 1), inputs[j], W[j - 1], j, hyper, network)
            inputs[j - 1] = V[j - 2]
        W[0] = self._hidden_weight(W[0], X, V[0], 1, hyper, network, cache)
        new = LayerBlocks(tuple(W), tuple(V))
        extras = WholeObjectiveExtras(
            output_loss(new, data, network),
            layer_gaps(new, data, network),
            spectral_extras(new, self.spectral_diagnostics, X.dtype),
        )
        return new, extras

    def _output_weight(self, w, v, y, hyper, loss):
        n = v.shape[0]
        lam = hyper.weight_decay
        if self.inner == "exact" and loss.quadratic:
            # A proximal ridge least squares: argmin of the block objective + eps/2 ||W - W_old||^2,
            # with eps 1e-6 of the Gram's mean diagonal -- still a descent step, and never singular
            # (1-D inputs, a layer wider than n, raw features: V^T V has no full rank there).
            gram = v.T @ v / n
            eps = _ridge(jnp.trace(gram), v.shape[1], v.dtype)
            system = gram + (lam + eps) * jnp.eye(v.shape[1], dtype=v.dtype)
            rhs = y.T @ v / n + eps * w
            return jax.scipy.linalg.solve(system, rhs.T, assume_a="pos").T
        beta = 1.0 if loss.smoothness is None else loss.smoothness
        step = hyper.eta_w / (beta * _floored(top_gram_eigenvalue(v)) + lam)

        def body(_, w):
            grad = jax.vmap(jax.grad(loss))(v @ w.T, y)
            return w - step * (grad.T @ v / n + lam * w)

        return lax.fori_loop(0, self.k_w, body, w)

    def _output_v(self, v, y, w_out, a, hyper, loss):
        g = hyper.gamma
        if self.inner == "exact" and loss.quadratic:
            eye = jnp.eye(w_out.shape[1], dtype=w_out.dtype)
            factor = jax.scipy.linalg.cho_factor(w_out.T @ w_out + g * eye)
            rhs = y @ w_out + g * a  # row i: W_L^T y_i + gamma a_i; every sample in one matrix solve
            return jax.scipy.linalg.cho_solve(factor, rhs.T).T
        beta = 1.0 if loss.smoothness is None else loss.smoothness
        step = hyper.eta_v / (beta * spectral_norm(w_out) ** 2 + g)

        def one(vi, yi, ai):
            def body(_, u):
                return u - step * (w_out.T @ jax.grad(loss)(w_out @ u, yi) + g * (u - ai))

            return lax.fori_loop(0, self.k_v, body, vi)

        return jax.vmap(one)(v, y, a)

    def _hidden_v(self, v, a, b, w, j, hyper, network: Network):
        """V_{j-1}: gamma_{j-1}/2 ||v - a||^2 + gamma_j/2 ||sigma_j(W_j v) (+v) - b||^2, per sample (j: layer above)."""
        g_own, g = _layer_weight(hyper, j - 1, network.depth), _layer_weight(hyper, j, network.depth)
        sigma = network.layer_activations[j - 1]
        skip = bool(network.skip)
        s = 1.0 if skip else 0.0
        lip = sigma.lipschitz * spectral_norm(w) + s
        step = hyper.eta_v / (g_own + g * lip**2)

        if self.inner == "gd":

            def objective(u, ai, bi):
                e = sigma(w @ u) + (u if skip else 0.0) - bi
                return 0.5 * (g_own * jnp.sum((u - ai) ** 2) + g * jnp.sum(e * e))

            def one(vi, ai, bi):
                return lax.fori_loop(0, self.k_v, lambda _, u: u - step * jax.grad(objective)(u, ai, bi), vi)

            return jax.vmap(one)(v, a, b)

        # Newton on the current pieces, every sample at once: J_i = D_i W (+ I), D_i the slopes.
        eye = jnp.eye(w.shape[1], dtype=w.dtype)
        shifted = w + s * eye
        factor = jax.scipy.linalg.cho_factor(g_own * eye + g * (shifted.T @ shifted))

        def sample_objectives(u):
            e = sigma(u @ w.T) + s * u - b
            return 0.5 * (g_own * jnp.sum((u - a) ** 2, axis=1) + g * jnp.sum(e * e, axis=1))

        def body(_, u):
            z = u @ w.T
            d = sigma.slope(z)
            e = sigma(z) + s * u - b
            grad = g_own * (u - a) + g * ((d * e) @ w + s * e)
            gd = u - step * grad

            def apply_a(p):
                jp = d * (p @ w.T) + s * p
                return g_own * p + g * ((d * jp) @ w + s * jp)

            newton = batched_pcg(
                apply_a, lambda r: jax.scipy.linalg.cho_solve(factor, r.T).T, u, -grad, self.cg_iterations
            )
            better = sample_objectives(newton) < sample_objectives(gd)
            return jnp.where(better[:, None], newton, gd)

        return lax.fori_loop(0, self.k_v, body, v)

    def _hidden_weight(self, w, v_in, v_out, j, hyper, network: Network, gram: InputGram | None = None):
        """W_j: gamma_j/2 mean_i ||sigma_j(W v_in) (+v_in) - v_out||^2 + lambda/2 ||W||^2.

        ``gram``: the input's Gram facts when they are known (W_1's, from ``prepare``); else they
        are computed here (a hidden input changes every sweep).
        """
        g, lam = _layer_weight(hyper, j, network.depth), hyper.weight_decay
        sigma = network.layer_activations[j - 1]
        n, d_in = v_in.shape
        target = v_out - v_in if network.skip and j >= 2 else v_out
        if gram is None:
            gram = InputGram(top_gram_eigenvalue(v_in), jnp.sum(v_in * v_in) / (n * d_in))
        step = hyper.eta_w / (g * sigma.lipschitz**2 * _floored(gram.lam_max) + lam)

        if self.inner == "gd":

            def body(_, w_):
                s, ds = sigma.value_and_derivative(v_in @ w_.T)
                return w_ - step * (g * ((ds * (s - target)).T @ v_in) / n + lam * w_)

            return lax.fori_loop(0, self.k_w, body, w)

        ridge = lam + _ridge(gram.mean_sq * d_in, d_in, v_in.dtype)
        if gram.evecs is not None:  # W_1: g G + ridge I through G's eigendecomposition (g is traced)
            scale = 1.0 / (g * gram.evals + ridge)

            def apply_minv(r):
                return ((r @ gram.evecs) * scale) @ gram.evecs.T
        elif gram.diag is not None:  # a very wide input: the diagonal of g G + ridge I
            diagonal = g * gram.diag + ridge

            def apply_minv(r):
                return r / diagonal
        else:  # a hidden input: its Gram, O(n r^2), and one Cholesky factor per step
            eye = jnp.eye(d_in, dtype=w.dtype)
            factor = jax.scipy.linalg.cho_factor(g * (v_in.T @ v_in) / n + ridge * eye)

            def apply_minv(r):
                return jax.scipy.linalg.cho_solve(factor, r.T).T

        def row_objectives(w_):
            e = sigma(v_in @ w_.T) - target
            return 0.5 * g * jnp.mean(e * e, axis=0) + 0.5 * lam * jnp.sum(w_ * w_, axis=1)

        def body(_, w_):
            z = v_in @ w_.T
            d = sigma.slope(z)  # (n, rows): each row's piece per sample
            grad = g * ((d * (sigma(z) - target)).T @ v_in) / n + lam * w_
            gd = w_ - step * grad

            def apply_a(p):  # every row's Newton matrix g V^T D_k^2 V / n + ridge I, matrix-free
                return g * ((d * d * (v_in @ p.T)).T @ v_in) / n + ridge * p

            newton = batched_pcg(apply_a, apply_minv, w_, -grad, self.cg_iterations)
            better = row_objectives(newton) < row_objectives(gd)
            return jnp.where(better[:, None], newton, gd)

        return lax.fori_loop(0, self.k_w, body, w)
