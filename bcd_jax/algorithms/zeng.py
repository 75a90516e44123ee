"""Zeng, Lau, Lin, Yao (ICML 2019): block coordinate descent with two- and three-splitting.

"Global Convergence of Block Coordinate Descent in Deep Learning" (with its predecessor Lau,
Zeng, Wu, Yao, "A Proximal Block Coordinate Descent Algorithm for Deep Neural Network
Training", 2018). The network ``f(x) = W_N sigma(... sigma(W_1 x + b_1) ...) + b_N`` (biases with
``Network(bias="all")``; the output layer is linear). Blocks are the weights ``W_j`` (bias
column included), the layer outputs ``V_j`` (``V_N`` is the network's output) and, in the
three-splitting form, the pre-activations ``U_j``. The objective, with sums over samples::

    three-splitting:  F = sum_i loss(V_{N,i}, y_i) + gamma/2 sum_j ||V_j - sigma_j(U_j) (- V_{j-1})||^2
                            + rho/2 sum_j ||U_j - W_j [V_{j-1}; 1]||^2              (sigma_N = identity)
    two-splitting:    F = sum_i loss(V_{N,i}, y_i) + gamma/2 sum_j ||V_j - sigma_j(W_j [V_{j-1}; 1]) (- V_{j-1})||^2

(``- V_{j-1}``: the residual-network form, ``Network(skip=True)``, for hidden layers j >= 2),
plus ``weight_decay/2 sum_j ||W_j||^2``. One sweep runs backward, output block first, then
per layer ``V_j, U_j, W_j``; every block is solved exactly with a proximal term
``alpha/2 ||. - previous||^2`` where the authors add one:

* ``V_N``: ``(y + gamma U_N + alpha V_N) / (1 + gamma + alpha)`` for the squared loss; for
  other losses the prox-linear step ``(gamma U_N + alpha V_N - grad loss(V_N)) / (gamma + alpha)``;
* ``U_N = (gamma V_N + rho W_N [V_{N-1}; 1]) / (gamma + rho)``;
* ``W_j = (alpha W_j + rho U_j^T Vt) ((alpha + lambda) I + rho Vt^T Vt)^{-1}`` with ``Vt = [V_{j-1}, 1]``,
  the weights and the bias column solved together (a ridge-proximal least-squares solve);
* hidden ``V_j``: ``(rho W^T W + gamma (1 + s) I) V_j = rho W^T (U_{j+1} - b_{j+1}) + gamma (sigma(U_j) (+V_{j-1}))
  (+ s gamma (V_{j+1} - sigma(U_{j+1})))``, ``W, b`` of layer j+1, ``s = 1`` when layer j+1 has a skip;
* hidden ``U_j``: per entry, ``argmin_u gamma/2 (sigma(u) - a)^2 + rho/2 (u - z)^2 + alpha/2 (u - u_prev)^2``
  with ``a = V_j (- V_{j-1})``, ``z = W_j [V_{j-1}; 1]``: in closed form for any activation that
  declares its pieces (:meth:`bcd_jax.Activation.prox`: the best of the pieces' clipped
  minimisers) — the ReLU and leaky ReLU of the paper, and also step, sign and quantised
  staircases, whose derivative is useless to backprop but which this block minimises exactly.

In the two-splitting form, ``V_N`` and ``W_N`` are solved as above (with gamma for rho), and a
block that enters a nonlinearity (hidden ``W_j``; hidden ``V_j`` below another hidden layer) takes
the prox-linear step ``argmin <grad, X - X_prev> + alpha/2 ||X - X_prev||^2`` of the term it
enters nonlinearly, with its quadratic terms kept exact. The authors' defaults are
``gamma = rho = 1`` and ``alpha = 5``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from bcd_jax.algorithms.base import Algorithm, Data, mean_squared_norm, refuse_flat_activations
from bcd_jax.algorithms.primitives import spectral_norm, top_gram_eigenvalue
from bcd_jax.network import Network, gaussian_weights, layer_input
from bcd_jax.validation import check_choice, check_float

__all__ = ["Zeng", "ZengHyper", "ZengBlocks", "ZengExtras", "SPLITTINGS"]

SPLITTINGS = ("three", "two")


class ZengHyper(NamedTuple):
    """The traced numbers of Zeng et al.'s BCD (the authors' defaults).

    Attributes:
      gamma: weight of the activation terms ``||V_j - sigma(U_j)||^2`` (two-splitting: of every layer term).
      rho: weight of the linear terms ``||U_j - W_j V_{j-1}||^2`` (three-splitting only).
      alpha: weight of the proximal terms ``||. - previous||^2``.
      weight_decay: lambda of ``lambda/2 ||W_j||^2`` on every weight block, added to F as the authors
        write it (a sum over samples): in the reported objective F / n it is ``lambda/(2n) ||W_j||^2``,
        so this lambda equals n times Akiyama's or the whole-objective family's (a mean over samples).
    """

    gamma: Any = 1.0
    rho: Any = 1.0
    alpha: Any = 5.0
    weight_decay: Any = 0.0


class ZengBlocks(NamedTuple):
    """The blocks, a pytree.

    Attributes:
      W: ``(W_1, ..., W_N)`` (with a bias column each when ``Network(bias="all")``).
      V: ``(V_1, ..., V_N)``, each ``(n, width)``; ``V_N: (n, d_out)`` is the output block.
      U: ``(U_1, ..., U_N)`` (three-splitting), else ``()``.
    """

    W: tuple[jax.Array, ...]
    V: tuple[jax.Array, ...]
    U: tuple[jax.Array, ...]


class ZengExtras(NamedTuple):
    """Per-sweep diagnostics of the blocks after the sweep (means over samples).

    Attributes:
      output_loss: ``mean_i loss(V_{N,i}, y_i)`` (squared: ``1/2 ||.||^2``, as in F).
      activation_gaps: ``(N,)``, ``mean_i ||V_{j,i} - sigma(U_{j,i}) (- V_{j-1,i})||^2`` (two-splitting:
        with ``W_j [V_{j-1}; 1]`` for ``U_j``).
      linear_gaps: ``(N,)``, ``mean_i ||U_{j,i} - W_j [V_{j-1,i}; 1]||^2`` (NaN in the two-splitting form).

    The objective is F / n = ``output_loss + gamma/2 sum(activation_gaps) + rho/2 sum(linear_gaps)
    + lambda/(2n) sum_j ||W_j||^2``.
    """

    output_loss: jax.Array
    activation_gaps: jax.Array
    linear_gaps: jax.Array


def _ridge_solve(w_old, targets, inputs, scale, alpha, weight_decay):
    """``argmin_W scale/2 ||targets - inputs W^T||^2 + alpha/2 ||W - W_old||^2 + lambda/2 ||W||^2``."""
    k = inputs.shape[1]
    gram = scale * (inputs.T @ inputs) + (alpha + weight_decay) * jnp.eye(k, dtype=inputs.dtype)
    rhs = alpha * w_old + scale * (targets.T @ inputs)  # (out, k)
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), rhs.T).T


def _jacobi_solve(w_old, targets, inputs, scale, alpha, weight_decay):
    """The authors' bias step: ``[W, b]`` of ``scale/2 ||targets - inputs [W, b]^T||^2 + alpha/2 ||. - old||^2
    + lambda/2 ||.||^2`` solved as a Jacobi pair -- W with the OLD b held fixed, b with the OLD W held
    fixed, both from the incoming point (their ``updateWb``). ``inputs`` ends with the bias column."""
    v, b_old, w_part = inputs[:, :-1], w_old[:, -1], w_old[:, :-1]
    w_new = _ridge_solve(w_part, targets - b_old, v, scale, alpha, weight_decay)
    residual = jnp.sum(targets - v @ w_part.T, axis=0)
    b_new = (alpha * b_old + scale * residual) / (scale * v.shape[0] + alpha + weight_decay)
    return jnp.concatenate([w_new, b_new[:, None]], axis=1)


def _split_bias(w, network: Network):
    """``(W, b)`` of a layer's matrix: the bias column apart (zero when the network has none)."""
    if network.bias == "all":
        return w[:, :-1], w[:, -1]
    return w, jnp.zeros((w.shape[0],), w.dtype)


@dataclasses.dataclass(frozen=True)
class Zeng(Algorithm):
    """Zeng et al.'s BCD: ``splitting="three"`` (blocks W, V, U) or ``"two"`` (blocks W, V).

    The authors' deep MNIST notebook (784-600x10-10, ReLU) is ``Zeng(weight_init="normal", init_scale=0.01,
    init_bias=0.1, bias_update="jacobi")`` with ``Network(bias="all")`` and ``gamma = rho = alpha = 1``;
    their shallow one (3 x 1500) takes ``alpha = 5`` (this class's default).

    Attributes:
      splitting: ``"three"`` (pre-activations U_j as blocks, every block in closed form; any
        piecewise-linear activation) or ``"two"`` (prox-linear steps where a block enters a
        nonlinearity; any activation with a useful derivative).
      weight_init: ``"fan_in"`` (``W_j ~ N(0, init_scale^2 / fan_in)``, bias columns included) or
        ``"normal"`` (``W_j ~ init_scale * N(0, 1)``, the authors' ``0.01 * torch.randn``).
      init_scale: the standard deviation factor of ``weight_init``.
      init_bias: with ``Network(bias="all")``, every bias column starts at this constant (the
        authors' 0.1); None keeps the random draw.
      bias_update: how an exact weight block treats its bias column: ``"joint"`` solves ``[W_j, b_j]``
        together (the block's exact minimiser, the default) or ``"jacobi"`` as the authors' code does
        (W from the old b, b from the old W; not a descent step on the joint block in general).
      prox_weights: the proximal weights of the two-splitting's prox-linear blocks: ``"shared"`` (one
        ``alpha`` for every block, as in the paper) or ``"lipschitz"`` (each prox-linear block uses
        ``alpha`` times its gradient's Lipschitz constant, recomputed every sweep -- hidden ``W_j``:
        ``gamma l_j^2 lambda_max(V_{j-1}^T V_{j-1})``, hidden ``V_j``: ``gamma (l_{j+1} ||W_{j+1}|| (+1))^2``;
        ``alpha > 1`` keeps each a descent step; the exact blocks keep ``alpha`` as their weight).
    """

    splitting: str = "three"
    weight_init: str = "fan_in"
    init_scale: float = 1.0
    init_bias: float | None = None
    bias_update: str = "joint"
    prox_weights: str = "shared"

    Hyper: ClassVar[type] = ZengHyper

    def __post_init__(self):
        check_choice("splitting", self.splitting, SPLITTINGS)
        check_choice("weight_init", self.weight_init, ("fan_in", "normal"))
        object.__setattr__(self, "init_scale", check_float("init_scale", self.init_scale, low=0, low_open=True))
        if self.init_bias is not None:
            object.__setattr__(self, "init_bias", check_float("init_bias", self.init_bias))
        check_choice("bias_update", self.bias_update, ("joint", "jacobi"))
        check_choice("prox_weights", self.prox_weights, ("shared", "lipschitz"))
        if self.prox_weights == "lipschitz" and self.splitting == "three":
            raise ValueError(
                "prox_weights: 'lipschitz' sets the two-splitting's prox-linear weights; the "
                "three-splitting has none (every block is exact); use prox_weights='shared'"
            )

    @property
    def paper(self) -> str:
        return f"Zeng et al. (ICML 2019), {self.splitting}-splitting BCD"

    # -- host side ---------------------------------------------------------------------------
    def resolve(self, network: Network, hyper: ZengHyper) -> Network:
        network = super().resolve(network, hyper)
        for field in ("gamma", "rho", "alpha"):
            check_float(f"hyper.{field}", getattr(hyper, field), low=0, low_open=True)
        if (self.bias_update == "jacobi" or self.init_bias is not None) and network.bias != "all":
            field = "bias_update" if self.bias_update == "jacobi" else "init_bias"
            raise ValueError(
                f"{field}: acts on every layer's bias column; expected Network(bias='all'), got bias={network.bias!r}"
            )
        if self.prox_weights == "lipschitz":
            for j, act in enumerate(network.layer_activations, start=1):
                if act.lipschitz is None:
                    raise ValueError(
                        f"prox_weights: 'lipschitz' needs each activation's Lipschitz constant; layer "
                        f"{j}'s {act.name!r} declares none"
                    )
        if self.splitting == "three":
            for j, act in enumerate(network.layer_activations, start=1):
                if not act.piecewise_linear:
                    raise ValueError(
                        f"activation: the three-splitting U_j update is an exact prox for piecewise-linear activations "
                        f"(relu, leaky_relu, identity, step, sign, quantized, or any that declares its pieces); layer "
                        f"{j} has {act.name!r} (use the two-splitting form)"
                    )
        else:
            refuse_flat_activations(network.layer_activations, self.name)
        return network

    def init_weights(self, key, network: Network, d_in: int, d_out: int, dtype=jnp.float32):
        """``W_j ~ N(0, init_scale^2 / fan_in)`` (``weight_init="fan_in"``) or ``init_scale * N(0, 1)``
        (``"normal"``) entrywise; every bias column ``init_bias`` when given."""
        shapes = network.layer_shapes(d_in, d_out)
        if self.weight_init == "fan_in":
            weights = [self.init_scale * w for w in gaussian_weights(key, shapes, dtype)]
        else:
            keys = jax.random.split(key, len(shapes))
            weights = [self.init_scale * jax.random.normal(k, shape, dtype) for k, shape in zip(keys, shapes)]
        if self.init_bias is not None:
            weights = [w.at[:, -1].set(jnp.asarray(self.init_bias, dtype)) for w in weights]
        return tuple(weights)

    def _weight_solve(self, w_old, targets, inputs, scale, alpha, weight_decay):
        """An exact weight block: ``[W_j, b_j]`` jointly, or the authors' Jacobi pair (``bias_update``)."""
        if self.bias_update == "jacobi":
            return _jacobi_solve(w_old, targets, inputs, scale, alpha, weight_decay)
        return _ridge_solve(w_old, targets, inputs, scale, alpha, weight_decay)

    # -- the blocks ----------------------------------------------------------------------------
    def init(self, weights, data: Data, network: Network) -> ZengBlocks:
        """The forward pass: ``U_j = W_j [V_{j-1}; 1]``, ``V_j = sigma(U_j) (+ V_{j-1})``, ``V_N = U_N``."""
        weights = tuple(weights)
        sigmas = network.layer_activations
        h, hidden, pre = data.X, [], []
        for j, w in enumerate(weights, start=1):
            u = (h if j == 1 else layer_input(h, network)) @ w.T
            if j == len(weights):
                v = u
            else:
                v = sigmas[j - 1](u) + (h if network.skip and j >= 2 else 0.0)
            pre.append(u)
            hidden.append(v)
            h = v
        return ZengBlocks(weights, tuple(hidden), tuple(pre) if self.splitting == "three" else ())

    def weights(self, blocks: ZengBlocks):
        return blocks.W

    # -- one sweep -------------------------------------------------------------------------------
    def step(self, blocks: ZengBlocks, data: Data, cache, hyper: ZengHyper, network: Network):
        if self.splitting == "three":
            new = self._three_splitting(blocks, data, hyper, network)
        else:
            new = self._two_splitting(blocks, data, hyper, network)
        return new, self._extras(new, data, network)

    def _inputs(self, hidden, data: Data, network: Network, j: int):
        """``[V_{j-1}; 1]`` (``X`` with its bias column for j = 1)."""
        return data.X if j == 1 else layer_input(hidden[j - 2], network)

    def _output_v(self, v, y, coupled, hyper, loss, scale):
        """The output block, one sample: exact prox for the squared loss, prox-linear otherwise."""
        if loss.quadratic:  # the squared loss (also on one-hot class rows): an exact prox
            return (y + scale * coupled + hyper.alpha * v) / (1.0 + scale + hyper.alpha)
        return (scale * coupled + hyper.alpha * v - jax.grad(loss)(v, y)) / (scale + hyper.alpha)

    def _three_splitting(
        self, blocks: ZengBlocks, data: Data, hyper: ZengHyper, network: Network, sigmas=None
    ) -> ZengBlocks:
        """One three-splitting sweep. ``sigmas``: the hidden activations the objective uses (each with
        ``__call__`` and an exact ``prox``), by default the network's own; a family that trains on
        stand-ins for them (``annealed_three_splitting``'s ramps) passes its own."""
        W, V, U = list(blocks.W), list(blocks.V), list(blocks.U)
        N = len(W)
        sigmas = network.layer_activations if sigmas is None else sigmas
        g, rho, alpha, lam = hyper.gamma, hyper.rho, hyper.alpha, hyper.weight_decay
        loss = network.loss_fn
        skip = network.skip

        # Output layer: V_N, U_N, W_N.
        output_v = functools.partial(self._output_v, hyper=hyper, loss=loss, scale=g)
        V[N - 1] = jax.vmap(output_v)(V[N - 1], data.Y, U[N - 1])
        U[N - 1] = (g * V[N - 1] + rho * (self._inputs(V, data, network, N) @ W[N - 1].T)) / (g + rho)
        W[N - 1] = self._weight_solve(W[N - 1], U[N - 1], self._inputs(V, data, network, N), rho, alpha, lam)

        for j in range(N - 1, 0, -1):  # hidden layers, V_j, U_j, W_j
            sigma = sigmas[j - 1]
            w_next, b_next = _split_bias(W[j], network)
            couple_next = skip and j + 1 <= N - 1  # layer j+1 is hidden with a skip
            own = sigma(U[j - 1]) + (V[j - 2] if skip and j >= 2 else 0.0)
            rhs = rho * (U[j] - b_next) @ w_next + g * own
            if couple_next:
                rhs = rhs + g * (V[j] - sigmas[j](U[j]))
            eye = jnp.eye(w_next.shape[1], dtype=w_next.dtype)
            factor = jax.scipy.linalg.cho_factor(rho * (w_next.T @ w_next) + g * (2.0 if couple_next else 1.0) * eye)
            V[j - 1] = jax.scipy.linalg.cho_solve(factor, rhs.T).T  # every sample in one matrix solve

            a = V[j - 1] - (V[j - 2] if skip and j >= 2 else 0.0)
            z = self._inputs(V, data, network, j) @ W[j - 1].T
            target = (rho * z + alpha * U[j - 1]) / (rho + alpha)
            U[j - 1] = sigma.prox(a, target, (rho + alpha) / g)

            W[j - 1] = self._weight_solve(W[j - 1], U[j - 1], self._inputs(V, data, network, j), rho, alpha, lam)
        return ZengBlocks(tuple(W), tuple(V), tuple(U))

    def _two_splitting(self, blocks: ZengBlocks, data: Data, hyper: ZengHyper, network: Network) -> ZengBlocks:
        W, V = list(blocks.W), list(blocks.V)
        N = len(W)
        sigmas = network.layer_activations
        g, alpha, lam = hyper.gamma, hyper.alpha, hyper.weight_decay
        loss = network.loss_fn
        skip = network.skip

        # Output layer: V_N (exact prox / prox-linear), then W_N (ridge).
        coupled = self._inputs(V, data, network, N) @ W[N - 1].T
        output_v = functools.partial(self._output_v, hyper=hyper, loss=loss, scale=g)
        V[N - 1] = jax.vmap(output_v)(V[N - 1], data.Y, coupled)
        W[N - 1] = self._weight_solve(W[N - 1], V[N - 1], self._inputs(V, data, network, N), g, alpha, lam)

        for j in range(N - 1, 0, -1):
            inputs = self._inputs(V, data, network, j)
            own = sigmas[j - 1](inputs @ W[j - 1].T) + (V[j - 2] if skip and j >= 2 else 0.0)
            if j + 1 == N:  # the next layer is linear: the V block is an exact ridge solve
                w_next, b_next = _split_bias(W[N - 1], network)
                eye = jnp.eye(w_next.shape[1], dtype=w_next.dtype)
                factor = jax.scipy.linalg.cho_factor(g * (w_next.T @ w_next) + (g + alpha) * eye)
                rhs = g * (V[N - 1] - b_next) @ w_next + g * own + alpha * V[j - 1]
                V[j - 1] = jax.scipy.linalg.cho_solve(factor, rhs.T).T
            else:  # prox-linear in the term of layer j+1, which holds V_j inside sigma

                def next_term(v, v_next, w=W[j], sigma=sigmas[j]):
                    gap = v_next - sigma(layer_input(v, network) @ w.T) - (v if skip else 0.0)
                    return 0.5 * g * jnp.sum(gap**2)

                grad = jax.vmap(jax.grad(next_term))(V[j - 1], V[j])
                weight = alpha
                if self.prox_weights == "lipschitz":
                    w_next = _split_bias(W[j], network)[0]
                    scale = sigmas[j].lipschitz * spectral_norm(w_next) + (1.0 if skip else 0.0)
                    weight = alpha * g * scale**2
                V[j - 1] = (g * own + weight * V[j - 1] - grad) / (g + weight)

            def own_term(w, jj=j):
                x_in = self._inputs(V, data, network, jj)
                prev = V[jj - 2] if (skip and jj >= 2) else jnp.zeros_like(V[jj - 1])
                return 0.5 * g * jnp.sum((V[jj - 1] - sigmas[jj - 1](x_in @ w.T) - prev) ** 2)

            weight = alpha
            if self.prox_weights == "lipschitz":
                x_in = self._inputs(V, data, network, j)
                # the Gram's top eigenvalue through n: the term sums over samples
                curvature = x_in.shape[0] * jnp.maximum(top_gram_eigenvalue(x_in), jnp.finfo(x_in.dtype).tiny)
                weight = alpha * g * sigmas[j - 1].lipschitz ** 2 * curvature
            W[j - 1] = (weight * W[j - 1] - jax.grad(own_term)(W[j - 1])) / (weight + lam)
        return ZengBlocks(tuple(W), tuple(V), ())

    # -- diagnostics ---------------------------------------------------------------------------
    def _gaps(self, blocks: ZengBlocks, data: Data, network: Network, sigmas=None):
        W, V = blocks.W, blocks.V
        N = len(W)
        sigmas = network.layer_activations if sigmas is None else sigmas
        act, lin = [], []
        for j in range(1, N + 1):
            z = self._inputs(V, data, network, j) @ W[j - 1].T
            u = blocks.U[j - 1] if self.splitting == "three" else z
            if j == N:
                act.append(mean_squared_norm(V[j - 1] - u))
            else:
                skip_term = V[j - 2] if network.skip and j >= 2 else 0.0
                act.append(mean_squared_norm(V[j - 1] - sigmas[j - 1](u) - skip_term))
            lin.append(mean_squared_norm(u - z) if self.splitting == "three" else jnp.asarray(jnp.nan, data.X.dtype))
        return jnp.mean(jax.vmap(network.loss_fn)(V[N - 1], data.Y)), jnp.stack(act), jnp.stack(lin)

    def _extras(self, blocks: ZengBlocks, data: Data, network: Network) -> ZengExtras:
        return ZengExtras(*self._gaps(blocks, data, network))

    def objective(self, blocks: ZengBlocks, data: Data, hyper: ZengHyper, network: Network):
        """F / n (see :class:`ZengExtras`)."""
        output, act, lin = self._gaps(blocks, data, network)
        penalty = 0.5 * hyper.weight_decay * sum(jnp.sum(w * w) for w in blocks.W) / data.X.shape[0]
        objective = output + 0.5 * hyper.gamma * jnp.sum(act) + penalty
        if self.splitting == "three":
            objective = objective + 0.5 * hyper.rho * jnp.sum(lin)
        return objective
