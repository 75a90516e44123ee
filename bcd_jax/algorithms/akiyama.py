"""Akiyama (NeurIPS 2025): Algorithm 1, Algorithm 3 and the no-skip ablation of Figure 2.

The blocks are the weights ``W_j`` and the per-sample layer outputs ``V_{j,i}``; one sweep,
in the paper's backward order, for the squared loss and fixed step sizes::

    W_L      <- W_L - eta_w * mean_i (W_L v_i - y_i) v_i^T                (v_i = V_{L-1,i}; Algorithm 1 only)
    V_{L-1,i}<- V_{L-1,i} - eta_v * W_L^T (W_L V_{L-1,i} - y_i)             (one step)
    for j = L-1 .. 2:
        e_i  = sigma(W_j V_{j-1,i}) - V_{j,i}        (+ V_{j-1,i} with skips)
        W_j  <- W_j - gamma*eta_w * mean_i [sigma'(W_j V_{j-1,i}) * e_i] V_{j-1,i}^T   (one step)
        K_V times:  V_{j-1,i} <- V_{j-1,i} - gamma*eta_v * (W_j^T [sigma' * e_i] (+ e_i))
    K_W times:  W_1 <- W_1 - gamma*eta_w1 * mean_i [sigma'(W_1 x_i) * (sigma(W_1 x_i) - V_{1,i})] x_i^T

Every gradient is that of the per-sample loss ``1/2 ||.||^2``; weight gradients average the n
per-sample gradients (see ``docs/conventions.md`` for the mapping to the paper's step sizes).
V updates are written for ONE sample and ``vmap``ped. Algorithm 3 adds the skip term, projects
every V block onto ``V >= 0``, keeps ``W_L`` fixed and fits ``W_1`` to the linear surrogate
``||W_1 x_i - V_{1,i}||^2``.

Extensions (the paper's Appendix A-B), all off by default: another output loss replaces
``W_L v - y`` by ``grad_pred loss(W_L v, y)`` in the two output-layer steps; ``weight_decay``
adds ``lambda W`` to every weight block's gradient; ``step_size="auto"`` divides each eta by its
block's Lipschitz constant; ``inner="exact"`` replaces an inner loop by its limit where one
exists in closed form.
"""

from __future__ import annotations

import dataclasses
import functools
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
from bcd_jax.algorithms.primitives import (
    apply_pseudo_inverse,
    gram_form_gd,
    least_squares_factor,
    project_nonneg,
    spectral_norm,
    top_gram_eigenvalue,
    use_gram_form,
)
from bcd_jax.network import Network
from bcd_jax.validation import check_bool, check_choice, check_float, check_int

__all__ = ["Akiyama", "AkiyamaHyper", "AkiyamaCache", "AkiyamaExtras", "Variant", "VARIANTS"]

INNER_MODES = ("gd", "exact")
STEP_SIZE_RULES = ("fixed", "auto")
FIRST_LAYER_FORMS = ("auto", "primal", "gram")


class Variant(NamedTuple):
    """The structural switches that distinguish the paper's algorithms.

    Attributes:
      paper: where it is in the paper.
      skip: the network form it is written for (Algorithm 3: ``sigma(W_j h) + h`` for j >= 2).
      project_nonneg: ``V <- max(V, 0)`` after each V block update (Algorithm 3).
      train_output_weight: ``W_L`` takes a gradient step every sweep (Algorithm 1 only;
        Algorithm 3 keeps it fixed, Lemma 5.1).
      linear_first_layer_fit: the K_W loop on ``W_1`` fits the linear surrogate
        ``||W_1 x_i - V_{1,i}||^2`` instead of ``||sigma(W_1 x_i) - V_{1,i}||^2`` (Algorithm 3).
      svb_output_weight: singular value bounding is applied to ``W_L`` at init (Algorithm 1
        bounds ``W_2..W_L``, Algorithm 3 ``W_2..W_{L-1}``).
      default_svb: ``(s1, s2)`` of the matching theorem (4.1: (3/4, 5/4); 5.3: (0, 1/4)).
    """

    paper: str
    skip: bool
    project_nonneg: bool
    train_output_weight: bool
    linear_first_layer_fit: bool
    svb_output_weight: bool
    default_svb: tuple[float, float]


VARIANTS: dict[str, Variant] = {
    "monotone": Variant(
        "Algorithm 1 (Theorem 4.1)",
        skip=False,
        project_nonneg=False,
        train_output_weight=True,
        linear_first_layer_fit=False,
        svb_output_weight=True,
        default_svb=(0.75, 1.25),
    ),
    "relu_skip": Variant(
        "Algorithm 3 (Theorem 5.3)",
        skip=True,
        project_nonneg=True,
        train_output_weight=False,
        linear_first_layer_fit=True,
        svb_output_weight=False,
        default_svb=(0.0, 0.25),
    ),
    "relu_noskip": Variant(
        "Algorithm 3 without skip connections (Figure 2, dashed line)",
        skip=False,
        project_nonneg=True,
        train_output_weight=False,
        linear_first_layer_fit=True,
        svb_output_weight=False,
        default_svb=(0.0, 0.25),
    ),
}


class AkiyamaHyper(NamedTuple):
    """The traced numbers of Algorithms 1 and 3.

    Attributes:
      gamma: weight of the hidden-layer losses in F (the paper gives none; 0.2 keeps the K_W
        loop of the Figure 1 problem a factor two inside its stability limit).
      eta_v: step size of the V blocks (output layer: ``eta_v``; layer j: ``gamma * eta_v``).
      eta_w: step size of W_2..W_L (hidden: ``gamma * eta_w``; output: ``eta_w``).
      eta_w1: step size of W_1 (``gamma * eta_w1``).
      weight_decay: lambda of an L2 penalty ``lambda/2 ||W_j||_F^2`` on every weight block.
    """

    gamma: Any = 0.2
    eta_v: Any = 1.0
    eta_w: Any = 1.0
    eta_w1: Any = 1.0
    weight_decay: Any = 0.0


class AkiyamaCache(NamedTuple):
    """Data-only matrices computed once per run (``None`` where the structure needs none)."""

    gram: jax.Array | None  # X X^T, (n, n), for the Gram form of the K_W loop (chosen only for n < 2 d_in)
    x_factor: jax.Array | None  # Cholesky factor of X's smaller Gram, (min(n, d_in),) * 2, for the exact W_1 block
    x_curvature: jax.Array | None  # lambda_max(X^T X / n), for step_size="auto"


class AkiyamaExtras(NamedTuple):
    """Per-sweep diagnostics of Algorithms 1 and 3, of the blocks after the sweep.

    Attributes:
      output_loss: ``mean_i loss(W_L V_{L-1,i}, y_i)`` (squared: ``1/2 ||W_L V_{L-1,i} - y_i||^2``).
      layer_losses: ``(L-1,)``; entry j-1 is ``mean_i ||sigma(W_j V_{j-1,i}) (+V_{j-1,i}) - V_{j,i}||^2``
        (j = 1 never has a skip; for Algorithm 3 it is the true ReLU layer loss).
      spectral: singular values of each W_j and ``lambda_max(V_j V_j^T)`` (the C_V of Theorem
        4.1), NaN unless ``spectral_diagnostics``.

    The objective is ``output_loss + gamma/2 sum(layer_losses) + lambda/2 sum_j ||W_j||^2``: the
    paper's F of eq. (2) divided by 2n.
    """

    output_loss: jax.Array
    layer_losses: jax.Array
    spectral: SpectralExtras


# --------------------------------------------------------------------------------------
# Per-sample maths (one sample; vmapped in the sweep)
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
    return project_nonneg(u) if project else u


def _hidden_v_exact(v, w_lu, *, sigma):
    """The K_V -> infinity limit for an invertible sigma and regular W_j: ``W_j^{-1} sigma^{-1}(V_{j,i})``."""
    return jax.scipy.linalg.lu_solve(w_lu, sigma.inverse(v))


def _output_v_block(v, y, w_out, step, *, loss, project):
    """One gradient step on ``V_{L-1,i}`` for ``loss(W_L V_{L-1,i}, y_i)`` (squared: ``1/2 ||.||^2``)."""
    u = v - step * (w_out.T @ jax.grad(loss)(w_out @ v, y))
    return project_nonneg(u) if project else u


def _first_layer_target_gradient(z, v1, sigma, linear):
    """Gradient of ``1/2 ||sigma(z) - v1||^2`` (or ``1/2 ||z - v1||^2``) with respect to z, per entry."""
    if linear:
        return z - v1
    s, ds = sigma.value_and_derivative(z)
    return ds * (s - v1)


# --------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------


class _BlockSteps(NamedTuple):
    """The step size of each block in one sweep (see ``Akiyama._block_steps``)."""

    output_w: Any  # callable(V_{L-1}) -> step
    output_v: Any  # callable(W_L) -> step
    hidden_w: Any  # callable(j, V_{j-1}) -> step
    hidden_v: Any  # callable(j, W_j) -> step
    first_w: Any


@dataclasses.dataclass(frozen=True)
class Akiyama(Algorithm):
    """Akiyama's BCD: Algorithm 1 (``"monotone"``), Algorithm 3 (``"relu_skip"``) or its no-skip ablation.

    Attributes:
      variant: ``"monotone"`` (Algorithm 1, strictly monotone activation), ``"relu_skip"``
        (Algorithm 3: ReLU, skip connections, non-negative projection) or ``"relu_noskip"``
        (Algorithm 3 on the plain network, the dashed line of Figure 2).
      k_v: K_V, gradient steps per V block per sweep.
      k_w: K_W, gradient steps on W_1 per sweep.
      inner: ``"gd"`` runs the paper's K_V and K_W gradient loops; ``"exact"`` replaces each
        loop by its limit where a closed form exists: the W_1 block always, the V blocks of
        Algorithm 1 with an invertible activation.
      first_layer_form: how the K_W loop on W_1 is computed: ``"primal"`` (on W_1), ``"gram"``
        (on B with ``W_1 = W_1^0 + B X``, using ``X X^T``; the same iterates) or ``"auto"`` (the
        one with fewer FLOPs).
      step_size: ``"fixed"`` (the etas are the step sizes) or ``"auto"`` (each block's step is
        ``eta / (its Lipschitz constant)``, recomputed every sweep from the current blocks).
      spectral_diagnostics: record the singular values of each W_j and lambda_max(V_j V_j^T)
        every sweep (else NaN). They need LAPACK (svd, eigh); turn them off to ``jax.vmap`` a
        run over many members on CPU, where jaxlib 0.10's batched LAPACK calls can deadlock.
      svb: ``(s1, s2)`` bounds of singular value bounding (Algorithm 2) at init; ``None`` takes
        the bounds of the variant's theorem ((3/4, 5/4) for Algorithm 1, (0, 1/4) for 3).
    """

    variant: str = "monotone"
    k_v: int = 100
    k_w: int = 100
    inner: str = "gd"
    first_layer_form: str = "auto"
    step_size: str = "fixed"
    spectral_diagnostics: bool = True
    svb: tuple[float, float] | None = None

    Hyper: ClassVar[type] = AkiyamaHyper

    def __post_init__(self):
        check_choice("variant", self.variant, tuple(VARIANTS))
        object.__setattr__(self, "k_v", check_int("k_v", self.k_v, low=0))
        object.__setattr__(self, "k_w", check_int("k_w", self.k_w, low=0))
        check_choice("inner", self.inner, INNER_MODES)
        check_choice("first_layer_form", self.first_layer_form, FIRST_LAYER_FORMS)
        check_choice("step_size", self.step_size, STEP_SIZE_RULES)
        object.__setattr__(self, "spectral_diagnostics", check_bool("spectral_diagnostics", self.spectral_diagnostics))
        object.__setattr__(self, "svb", check_svb(self.svb))

    # -- descriptive -------------------------------------------------------------------------
    @property
    def spec(self) -> Variant:
        """The variant's switches."""
        return VARIANTS[self.variant]

    @property
    def paper(self) -> str:
        return self.spec.paper

    @property
    def svb_bounds(self) -> tuple[float, float]:
        return self.svb if self.svb is not None else self.spec.default_svb

    def uses_gram_form(self, n: int, d_in: int) -> bool:
        """Whether the K_W loop runs in the Gram form (the same iterates as the primal form)."""
        if self.inner == "exact" or self.k_w == 0:
            return False
        if self.first_layer_form != "auto":
            return self.first_layer_form == "gram"
        return use_gram_form(n, d_in, self.k_w)

    # -- host-side checks --------------------------------------------------------------------
    def resolve(self, network: Network, hyper: AkiyamaHyper) -> Network:
        for field in ("gamma", "eta_v", "eta_w", "eta_w1"):
            check_float(f"hyper.{field}", getattr(hyper, field), low=0, low_open=True)
        check_float("hyper.weight_decay", hyper.weight_decay, low=0)
        if network.skip is None:
            network = network.replace(skip=self.spec.skip)
        if network.skip != self.spec.skip:
            other = {True: "relu_skip", False: "relu_noskip"}[network.skip] if self.spec.project_nonneg else None
            hint = f"; use algorithm {other!r}" if other else ""
            raise ValueError(
                f"network.skip: {self.variant!r} ({self.paper}) is written for skip={self.spec.skip}, got "
                f"skip={network.skip}{hint}, or leave skip unset"
            )
        spec = self.spec
        if network.bias == "all":
            raise ValueError(
                "network.bias: Akiyama's algorithms have no hidden-layer biases; use bias=True (a bias column in W_1)"
            )
        activations = network.layer_activations
        refuse_flat_activations(activations, self.name)
        if self.inner == "exact":
            # W_1 is solved through sigma_1^-1 (unless Algorithm 3's linear surrogate); Algorithm 1's
            # V_{j-1} blocks through sigma_j^-1 for j >= 2.
            needed = [] if spec.linear_first_layer_fit else [0]
            if not (spec.skip or spec.project_nonneg):
                needed += list(range(1, len(activations)))
            for index in needed:
                if activations[index].inverse is None:
                    raise ValueError(
                        f"inner: 'exact' needs an invertible activation for {self.variant!r}, but layer {index + 1}'s "
                        f"{activations[index].name!r} has no inverse; use inner='gd'"
                    )
            if float(hyper.weight_decay) > 0:
                raise ValueError(
                    "hyper.weight_decay: the closed-form blocks of inner='exact' have no penalty; use inner='gd' "
                    "with weight_decay > 0"
                )
        if self.step_size == "auto":
            for index, act in enumerate(activations):
                if act.lipschitz is None:
                    raise ValueError(
                        f"step_size: 'auto' needs the Lipschitz constant of every activation, but layer {index + 1}'s "
                        f"{act.name!r} declares none (wrap it in bcd_jax.Activation(name, fn, lipschitz=...))"
                    )
        return network

    # -- initialisation ----------------------------------------------------------------------
    def init_weights(self, key, network: Network, d_in: int, d_out: int, dtype=jnp.float32):
        """``W_1 ~ N(0, 1/d_in)``, ``W_j ~ N(0, 1/r)``; singular value bounding (Algorithm 2) to
        ``svb_bounds`` on ``W_2 .. W_L`` (Algorithm 1) or ``W_2 .. W_{L-1}`` (Algorithm 3, whose
        output weight stays Gaussian so that it has both signs, Lemma 5.1)."""
        return svb_weights(key, network, d_in, d_out, dtype, self.svb_bounds, bound_output=self.spec.svb_output_weight)

    def prepare(self, data: Data, network: Network) -> AkiyamaCache:
        X = data.X
        n, d_in = X.shape
        gram = X @ X.T if self.uses_gram_form(n, d_in) else None
        x_factor = least_squares_factor(X) if self.inner == "exact" else None
        x_curvature = top_gram_eigenvalue(X) if self.step_size == "auto" else None
        return AkiyamaCache(gram, x_factor, x_curvature)

    # -- one sweep -----------------------------------------------------------------------------
    def _block_steps(self, hyper: AkiyamaHyper, cache: AkiyamaCache, network: Network) -> _BlockSteps:
        """Fixed: the etas themselves. Auto: eta / (the block objective's gradient Lipschitz constant).

        The constants, for the block objectives ``loss`` (output), ``gamma/2 ||sigma(W_j v) (+v) - t||^2``
        (hidden, averaged over samples for W_j) and ``+ lambda/2 ||W||^2`` for weights:
        ``W_L: beta lambda_max(V^T V / n) + lambda``, ``V_{L-1}: beta ||W_L||^2``,
        ``W_j: gamma l_j^2 lambda_max(V_{j-1}^T V_{j-1} / n) + lambda``, ``V_{j-1}: gamma (l_j ||W_j|| (+1))^2``,
        ``W_1: gamma l_1^2 lambda_max(X^T X / n) + lambda``, with beta the loss's smoothness and
        l_j layer j's Lipschitz constant.
        """
        if self.step_size == "fixed":
            return _BlockSteps(
                output_w=lambda v: hyper.eta_w,
                output_v=lambda w: hyper.eta_v,
                hidden_w=lambda j, v: hyper.eta_w,
                hidden_v=lambda j, w: hyper.eta_v,
                first_w=hyper.eta_w1,
            )
        spec = self.spec
        loss = network.loss_fn
        beta = 1.0 if loss.smoothness is None else loss.smoothness
        lip = [s.lipschitz for s in network.layer_activations]
        lam = hyper.weight_decay

        def hidden_v(j, w):
            scale = lip[j - 1] * spectral_norm(w) + (1.0 if network.skip else 0.0)
            return hyper.eta_v / (hyper.gamma * scale**2)

        l1 = 1.0 if spec.linear_first_layer_fit else lip[0]
        return _BlockSteps(
            output_w=lambda v: hyper.eta_w / (beta * top_gram_eigenvalue(v) + lam),
            output_v=lambda w: hyper.eta_v / (beta * spectral_norm(w) ** 2),
            hidden_w=lambda j, v: hyper.eta_w / (hyper.gamma * lip[j - 1] ** 2 * top_gram_eigenvalue(v) + lam),
            hidden_v=hidden_v,
            first_w=hyper.eta_w1 / (hyper.gamma * l1**2 * cache.x_curvature + lam),
        )

    def init(self, weights, data: Data, network: Network) -> LayerBlocks:
        """The paper's exact V initialisation: ``V_j = h_j``, the forward pass of the initial network."""
        return forward_blocks(weights, data, network)

    def weights(self, blocks: LayerBlocks):
        return blocks.W

    def step(self, blocks: LayerBlocks, data: Data, cache: AkiyamaCache, hyper: AkiyamaHyper, network: Network):
        spec = self.spec
        sigmas = network.layer_activations
        skip = network.skip
        loss = network.loss_fn
        X, Y = data.X, data.Y
        block_steps = self._block_steps(hyper, cache, network)
        lam = hyper.weight_decay
        W, V = list(blocks.W), list(blocks.V)
        L = len(W)
        n = X.shape[0]
        inputs = [X] + V  # inputs[j-1] is V_{j-1} (V_0 = X) in the paper's 1-based layer index
        exact_v = self.inner == "exact" and not (skip or spec.project_nonneg)

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
            residual_batch = jax.vmap(functools.partial(_layer_residual, sigma=sigma, skip=skip), in_axes=(None, 0, 0))
            e, ds = residual_batch(w, v_prev, v)
            W[j - 1] = w - block_steps.hidden_w(j, v_prev) * (hyper.gamma * ((ds * e).T @ v_prev) / n + lam * w)
            if exact_v:
                solve = jax.vmap(functools.partial(_hidden_v_exact, sigma=sigma), in_axes=(0, None))
                new_v_prev = solve(v, jax.scipy.linalg.lu_factor(W[j - 1]))
            else:
                v_block = functools.partial(
                    _hidden_v_block, sigma=sigma, skip=skip, project=spec.project_nonneg, k_v=self.k_v
                )
                step = hyper.gamma * block_steps.hidden_v(j, W[j - 1])
                new_v_prev = jax.vmap(v_block, in_axes=(0, 0, None, None))(v_prev, v, W[j - 1], step)
            V[j - 2] = new_v_prev
            inputs[j - 1] = new_v_prev

        # First layer: K_W full-batch gradient steps on W_1 (its input X is fixed), or their limit.
        W[0] = self._first_layer(W[0], X, V[0], block_steps.first_w, hyper, cache, sigmas[0])
        new = LayerBlocks(tuple(W), tuple(V))
        extras = AkiyamaExtras(
            output_loss(new, data, network),
            layer_gaps(new, data, network),
            spectral_extras(new, self.spectral_diagnostics, X.dtype),
        )
        return new, extras

    def _first_layer(self, w1, X, v1, step, hyper: AkiyamaHyper, cache: AkiyamaCache, sigma):
        """K_W gradient steps on W_1 for ``gamma mean_i 1/2 ||sigma(W_1 x_i) - V_{1,i}||^2 + lambda/2 ||W_1||^2``.

        (Algorithm 3: the linear surrogate ``W_1 x_i - V_{1,i}``.) Each step is
        ``W_1 <- W_1 - step * (gamma * grad + lambda * W_1)``. With ``inner="exact"``, the limit
        of the loop: gradient descent started at ``W_1^0`` stays in ``W_1^0 + rowspace(X)`` and, with
        ``rank X = n`` (Assumption 1), converges to ``W_1^T = W_1^0T + X^+ (sigma^-1(V_1) - X W_1^0T)``
        (applied through the Cholesky factor of X's smaller Gram: O(n d_in r) per sweep, O(d_in^2) kept).
        """
        linear = self.spec.linear_first_layer_fit
        if self.inner == "exact":
            target = v1 if linear else sigma.inverse(v1)
            return w1 + apply_pseudo_inverse(X, cache.x_factor, target - X @ w1.T).T
        gamma, lam = hyper.gamma, hyper.weight_decay
        if cache.gram is not None:
            v1_t = v1.T
            return gram_form_gd(
                w1,
                X,
                cache.gram,
                lambda z_t: _first_layer_target_gradient(z_t, v1_t, sigma, linear),
                step,
                gamma,
                lam,
                self.k_w,
            )
        n = X.shape[0]

        def body(_, w):
            g = _first_layer_target_gradient(X @ w.T, v1, sigma, linear)
            return w - step * (gamma * (g.T @ X) / n + lam * w)

        return lax.fori_loop(0, self.k_w, body, w1)

    def objective(self, blocks: LayerBlocks, data: Data, hyper: AkiyamaHyper, network: Network):
        """The paper's F (eq. (2)) over 2n: ``mean_i loss + gamma/2 sum_j layer loss_j + lambda/2 sum_j ||W_j||^2``."""
        gaps = layer_gaps(blocks, data, network)
        return layered_objective(output_loss(blocks, data, network), gaps, hyper.gamma, hyper.weight_decay, blocks.W)
