"""Closed-form FLOP counts of one sweep of Akiyama's algorithms, as :mod:`bcd_jax.algorithms.akiyama` runs it.

:func:`sweep_flops` counts the block updates of one sweep (squared loss, fixed step sizes) in
closed form, following :meth:`bcd_jax.Akiyama.step`'s code path for the configuration:
Algorithm 1 or 3, the K_W loop in its primal form on ``W_1`` or its Gram form on ``B`` with
``W_1 = c W_1^0 + B X`` (chosen by :meth:`bcd_jax.Akiyama.uses_gram_form`, the one rule),
``inner="gd"`` or ``"exact"``, ``bias``, per-layer activations. The conventions are those of
:mod:`bcd_jax.benchmarking.flops`, plus:

* The weight-decay terms (``+ lambda W``) are counted even when ``lambda = 0``: the sweep
  computes them (lambda is a traced number).
* The output gradient of the squared loss is charged as ``W_L v - y`` (one subtraction per
  output), its mathematical form.
* Not counted: operations on scalars (``gamma * eta_w``), copies, transposes, loop control,
  and the driver's finiteness checks and ``jnp.where`` that freezes a diverged state.
* ``inner="exact"`` uses an LU factorisation and triangular solves, charged with the usual
  leading-order counts (LU of an r x r matrix ``2/3 r^3``; one solve with both triangles
  ``2 r^2`` per right-hand side). Everything else is exact.

Data-only work done once per run, not per sweep (``X X^T`` for the Gram form, the Cholesky factor of
X's smaller Gram for ``inner="exact"``), is :func:`prepare_flops`. The per-sweep diagnostics are
:func:`diagnostics_flops` (products exact, decompositions estimated, elementwise work not
counted: well under 1% of a sweep at the paper's sizes). :func:`bcd_jax.benchmarking.flops.traced_sweep_flops`
counts the compiled program itself, which cross-checks these formulas.
"""

from __future__ import annotations

from bcd_jax.algorithms import Akiyama
from bcd_jax.benchmarking.flops import activation_cost, eigh_flops, matmul_flops, singular_values_flops
from bcd_jax.config import Config
from bcd_jax.validation import check_int

__all__ = ["diagnostics_flops", "prepare_flops", "sweep_flops", "sweep_flops_breakdown"]


def _check(config: Config, n: int, d_in: int, d_out: int) -> tuple[Akiyama, int, int, int]:
    """The Akiyama algorithm of ``config`` and the checked sizes."""
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    algorithm = config.algorithm
    if not isinstance(algorithm, Akiyama):
        raise ValueError(
            f"config.algorithm: these closed forms count Akiyama's algorithms, got {algorithm.name!r}; "
            "bcd_jax.benchmarking.flops.traced_sweep_flops counts any algorithm"
        )
    n, d_in, d_out = (check_int(name, v, low=1) for name, v in (("n", n), ("d_in", d_in), ("d_out", d_out)))
    loss = config.network.loss_fn.name
    if loss != "squared":
        raise ValueError(f"config.network.loss: the closed forms count the squared loss only, got {loss!r}")
    if algorithm.step_size != "fixed":
        raise ValueError(
            f"config.algorithm.step_size: the closed forms count fixed step sizes only, got {algorithm.step_size!r}"
        )
    return algorithm, n, d_in, d_out


def _features(config: Config, d_in: int) -> int:
    """Columns of the data the sweep sees: the features plus the bias column."""
    return d_in + int(config.network.bias)


def sweep_flops_breakdown(config: Config, n: int, d_in: int, d_out: int = 1) -> dict[str, int]:
    """FLOPs of each block update of one sweep (see the module docstring for conventions).

    Keys: ``"W_L"`` (the output weight step; 0 for Algorithm 3), ``"V_L-1"`` (the step on
    every ``V_{L-1,i}``), ``"W_hidden"`` (the steps on ``W_{L-1} .. W_2``), ``"V_hidden"``
    (the K_V loops, or exact solves, on ``V_{L-2} .. V_1``), ``"W_1"`` (the K_W loop, or exact
    solve, on ``W_1``).

    Args:
      config: a :class:`bcd_jax.Config` with an :class:`bcd_jax.Akiyama` algorithm (squared
        loss, fixed step sizes).
      n: samples.
      d_in: input features (without the bias column).
      d_out: outputs.
    """
    algorithm, n, d_in, d_out = _check(config, n, d_in, d_out)
    spec = algorithm.spec
    network = config.resolved_network
    r, o, L = network.width, d_out, network.depth
    d = _features(config, d_in)
    costs = [activation_cost(a) for a in network.layer_activations]
    skip, project = network.skip, spec.project_nonneg
    exact = algorithm.inner == "exact"
    k_v, k_w = algorithm.k_v, algorithm.k_w
    out: dict[str, int] = {}

    # W_L <- W_L - eta_w * ((W_L V - Y)^T V / n + lambda W_L)
    if spec.train_output_weight:
        out["W_L"] = matmul_flops(n, r, o) + n * o + matmul_flops(o, n, r) + 5 * o * r
    else:
        out["W_L"] = 0

    # per sample: u = v - eta_v * W_L^T (W_L v - y)  (then max(u, 0) for Algorithm 3)
    out["V_L-1"] = n * (matmul_flops(o, r) + o + matmul_flops(r, o) + 2 * r + (r if project else 0))

    out["W_hidden"] = 0
    out["V_hidden"] = 0
    for j in range(L - 1, 1, -1):  # layer j updates W_j, then V_{j-1}
        c_val, c_der, c_inv = costs[j - 1]
        # batched residual e = sigma(W v) (+ v) - t and sigma'(W v)
        residual = n * (matmul_flops(r, r) + r * (c_val + c_der) + r * (2 if skip else 1))
        # W_j <- W_j - eta_w * (gamma * (ds * e)^T V_{j-1} / n + lambda W_j)
        out["W_hidden"] += residual + n * r + matmul_flops(r, n, r) + 6 * r * r
        if exact and not (skip or project):
            # V_{j-1,i} <- W_j^{-1} sigma^{-1}(V_{j,i}): one LU, n solves
            out["V_hidden"] += round(2 * r**3 / 3) + n * (r * c_inv + 2 * r * r)
        else:
            per_step = (
                matmul_flops(r, r) + r * (c_val + c_der) + r * (2 if skip else 1)  # e, ds
                + r + matmul_flops(r, r) + (r if skip else 0)  # grad = W^T (ds * e) (+ e)
                + 2 * r  # u - step * grad
            )  # fmt: skip
            out["V_hidden"] += n * (k_v * per_step + (r if project else 0))

    c_val, c_der, c_inv = costs[0]
    linear = spec.linear_first_layer_fit
    grad_z = n * r if linear else n * r * (c_val + c_der) + 2 * n * r  # g = z - V_1 or ds * (s - V_1)
    if exact:
        # W_1 <- W_1 + (pinv(X) R)^T, R = sigma^{-1}(V_1) - X W_1^T, through the factor of X's smaller Gram:
        # X^T (G^-1 R) for n <= d, G^-1 (X^T R) otherwise (two triangular solves, 2 k^2 r with k = min(n, d))
        solves = 2 * min(n, d) ** 2 * r
        out["W_1"] = matmul_flops(n, d, r) + (0 if linear else n * r * c_inv) + n * r + matmul_flops(d, n, r) + solves
        out["W_1"] += r * d
    elif algorithm.uses_gram_form(n, d):
        # z0 = X W_1^T; K_W times: z = c z0 + G B^T, g(z), B <- s B - step gamma g^T / n; W_1 = c W_1 + B X
        per_step = 2 * n * r + matmul_flops(n, n, r) + grad_z + 4 * n * r
        out["W_1"] = matmul_flops(n, d, r) + k_w * per_step + 2 * r * d + matmul_flops(r, n, d)
    else:
        # K_W times: z = X W^T, g(z), W <- W - step (gamma g^T X / n + lambda W)
        per_step = matmul_flops(n, d, r) + grad_z + matmul_flops(r, n, d) + 6 * r * d
        out["W_1"] = k_w * per_step
    return out


def sweep_flops(config: Config, n: int, d_in: int, d_out: int = 1, *, include_diagnostics: bool = False) -> int:
    """FLOPs of one sweep's block updates (see the module docstring for what is counted).

    Args:
      config: a :class:`bcd_jax.Config` with an :class:`bcd_jax.Akiyama` algorithm (squared
        loss, fixed step sizes).
      n: samples.
      d_in: input features (without the bias column).
      d_out: outputs.
      include_diagnostics: add the per-sweep diagnostics that every sweep also computes
        (:func:`diagnostics_flops`).
    """
    total = sum(sweep_flops_breakdown(config, n, d_in, d_out).values())
    if include_diagnostics:
        total += diagnostics_flops(config, n, d_in, d_out)
    return total


def diagnostics_flops(config: Config, n: int, d_in: int, d_out: int = 1) -> int:
    """FLOPs of the extras one sweep computes (:class:`bcd_jax.algorithms.akiyama.AkiyamaExtras`):
    products exactly, SVD/eigh estimated.

    The products: the output loss ``V_{L-1} W_L^T``; one ``V_{j-1} W_j^T`` per layer loss; with
    ``spectral_diagnostics``, ``V_j^T V_j`` for ``v_gram_max``. The decompositions
    (``spectral_diagnostics`` only): singular values of every ``W_j``, one ``eigvalsh`` per
    ``V_j^T V_j``. Elementwise work is not counted. The driver's record of a sweep (the
    objective, the network's metrics on the training, validation and test sets) is not part of
    ``step`` and not counted here.
    """
    algorithm, n, d_in, d_out = _check(config, n, d_in, d_out)
    network = config.network
    r, o, L = network.width, d_out, network.depth
    d = _features(config, d_in)
    flops = matmul_flops(n, r, o)  # output loss
    flops += matmul_flops(n, d, r) + (L - 2) * matmul_flops(n, r, r)  # layer losses
    if algorithm.spectral_diagnostics:
        flops += (L - 1) * (matmul_flops(r, n, r) + eigh_flops(r))  # v_gram_max
        flops += singular_values_flops(r, d) + (L - 2) * singular_values_flops(r, r) + singular_values_flops(o, r)
    return flops


def prepare_flops(config: Config, n: int, d_in: int) -> int:
    """FLOPs of the data-only work :meth:`bcd_jax.Akiyama.prepare` does once per run (not per sweep).

    ``X X^T`` when the K_W loop runs in the Gram form (``2 n^2 d``); for ``inner="exact"``, the
    Cholesky factor of the smaller Gram matrix (the exact W_1 block applies ``pinv(X)`` through it):
    with ``m = max(n, d) >= k = min(n, d)``, the Gram ``2 m k^2`` and the factorisation ``k^3 / 3``.
    """
    algorithm, n, d_in, _ = _check(config, n, d_in, 1)
    d = _features(config, d_in)
    flops = matmul_flops(n, d, n) if algorithm.uses_gram_form(n, d) else 0
    if algorithm.inner == "exact":
        m, k = max(n, d), min(n, d)
        flops += 2 * m * k * k + k**3 // 3
    return flops
