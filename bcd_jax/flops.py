"""Floating-point operation counts of one BCD sweep, as ``bcd_jax.solver`` implements it.

:func:`sweep_flops` counts the block updates of one sweep of ``bcd_jax.run`` (squared loss,
fixed step sizes) in closed form, following the solver's code path for the configuration:
Algorithm 1 or 3, ``first_layer_form`` (the primal K_W loop on ``W_1``, or its Gram form on
``B`` with ``W_1 = c W_1^0 + B X``), ``inner="gd"`` or ``"exact"``, ``bias``, per-layer
activations. Conventions (what is counted):

* A product of an ``(m, k)`` and a ``(k, p)`` matrix costs ``2 m k p`` (:func:`matmul_flops`);
  the solver's vmapped per-sample products ``W v_i`` count as n matrix-vector products.
* Every elementwise arithmetic operation on one element costs 1: add, subtract, multiply,
  divide, the ``max(u, 0)`` of the non-negative projection. The weight-decay terms
  (``+ lambda W``) are counted even when ``lambda = 0``: the solver computes them (lambda is
  a traced number).
* Activations are charged per element by :data:`ACTIVATION_COST`: ``(value, derivative,
  inverse)``. LeakyReLU ``where(z >= 0, z, a z)``: value 2 (multiply, compare-select),
  derivative 1 (select between 1 and a), inverse 2 (divide, compare-select); ReLU 1, 1, -;
  identity 0, 0, 0. A user-supplied callable is charged as LeakyReLU.
* The output gradient of the squared loss is charged as ``W_L v - y`` (one subtraction per
  output), its mathematical form.
* Not counted: operations on scalars (``gamma * eta_w``), copies, transposes, loop control,
  and ``bcd_jax.run``'s ``jnp.where`` that freezes a diverged state.
* ``inner="exact"`` uses an LU factorisation and triangular solves; they are charged with the
  usual leading-order counts (LU of an r x r matrix ``2/3 r^3``; one solve with both
  triangles ``2 r^2`` per right-hand side). Everything else is exact.

Data-only work that ``bcd_jax.run`` does once per call, not per sweep (``X X^T`` for the Gram
form, ``pinv(X)`` for ``inner="exact"``), is :func:`prepare_flops`. The per-sweep
``Diagnostics`` are :func:`diagnostics_flops` (products exact, decompositions estimated,
elementwise work not counted: well under 1% of a sweep at the paper's sizes).

:func:`jaxpr_flops` counts any traced JAX function with the same conventions (products
``2 m k p``, one per element for elementwise primitives, loop bodies times their trip count),
which cross-checks :func:`sweep_flops` against the solver's actual program.
"""

from __future__ import annotations

import math
from typing import Any

from bcd_jax.config import Config

__all__ = [
    "ACTIVATION_COST",
    "matmul_flops",
    "sweep_flops",
    "sweep_flops_breakdown",
    "diagnostics_flops",
    "prepare_flops",
    "uses_gram_form",
    "jaxpr_flops",
]

# activation name -> FLOPs per element of (sigma(z), sigma'(z), sigma^{-1}(t))
ACTIVATION_COST: dict[str, tuple[int, int, int]] = {
    "leaky_relu": (2, 1, 2),
    "relu": (1, 1, 0),
    "identity": (0, 0, 0),
}
_DEFAULT_ACTIVATION_COST = (2, 1, 2)


def matmul_flops(m: int, k: int, p: int = 1) -> int:
    """FLOPs of an ``(m, k) @ (k, p)`` product: ``2 m k p``."""
    return 2 * m * k * p


def _activation_costs(config: Config) -> list[tuple[int, int, int]]:
    """``ACTIVATION_COST`` of hidden layers 1 .. L-1."""
    acts = getattr(config, "layer_activations", None)
    names = [a.name for a in acts] if acts is not None else [config.activation_fn.name] * (config.depth - 1)
    return [ACTIVATION_COST.get(name, _DEFAULT_ACTIVATION_COST) for name in names]


def _check(config: Config, n: int, d_in: int, d_out: int) -> None:
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    for name, value in (("n", n), ("d_in", d_in), ("d_out", d_out)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    loss = getattr(config, "loss", "squared")
    if loss != "squared":
        raise ValueError(f"config.loss: sweep_flops counts the squared loss only, got {loss!r}")
    rule = getattr(config, "step_size", "fixed")
    if rule != "fixed":
        raise ValueError(f"config.step_size: sweep_flops counts fixed step sizes only, got {rule!r}")


def _features(config: Config, d_in: int) -> int:
    return d_in + int(bool(getattr(config, "bias", False)))


def uses_gram_form(config: Config, n: int, d_in: int) -> bool:
    """Whether the solver runs the K_W loop in its Gram form (its rule for ``first_layer_form``).

    ``d_in`` counts the data's features (the bias column, if any, is added here).
    """
    d = _features(config, d_in)
    if getattr(config, "inner", "gd") == "exact" or config.k_w == 0:
        return False
    form = getattr(config, "first_layer_form", "primal")
    if form != "auto":
        return form == "gram"
    return 4 * n * d + config.k_w * 2 * n * n < config.k_w * 4 * n * d


def sweep_flops_breakdown(config: Config, n: int, d_in: int, d_out: int = 1) -> dict[str, int]:
    """FLOPs of each block update of one sweep (see the module docstring for conventions).

    Keys: ``"W_L"`` (the output weight step; 0 for Algorithm 3), ``"V_L-1"`` (the step on
    every ``V_{L-1,i}``), ``"W_hidden"`` (the steps on ``W_{L-1} .. W_2``), ``"V_hidden"``
    (the K_V loops, or exact solves, on ``V_{L-2} .. V_1``), ``"W_1"`` (the K_W loop, or exact
    solve, on ``W_1``).
    """
    _check(config, n, d_in, d_out)
    spec = config.algorithm_spec
    r, o, L = config.width, d_out, config.depth
    d = _features(config, d_in)
    costs = _activation_costs(config)
    skip, project = spec.skip, spec.project_nonneg
    exact = getattr(config, "inner", "gd") == "exact"
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
            out["V_hidden"] += int(round(2 * r**3 / 3)) + n * (r * c_inv + 2 * r * r)
        else:
            per_step = (
                matmul_flops(r, r) + r * (c_val + c_der) + r * (2 if skip else 1)  # e, ds
                + r + matmul_flops(r, r) + (r if skip else 0)  # grad = W^T (ds * e) (+ e)
                + 2 * r  # u - step * grad
            )
            out["V_hidden"] += n * (config.k_v * per_step + (r if project else 0))

    c_val, c_der, c_inv = costs[0]
    linear = spec.linear_first_layer_fit
    grad_z = n * r if linear else n * r * (c_val + c_der) + 2 * n * r  # g = z - V_1 or ds * (s - V_1)
    if exact:
        # W_1 <- W_1 + (pinv(X) (sigma^{-1}(V_1) - X W_1^T))^T
        out["W_1"] = matmul_flops(n, d, r) + (0 if linear else n * r * c_inv) + n * r + matmul_flops(d, n, r) + r * d
    elif uses_gram_form(config, n, d_in):
        # z0 = X W_1^T; K_W times: z = c z0 + G B^T, g(z), B <- s B - step gamma g^T / n; W_1 = c W_1 + B X
        per_step = 2 * n * r + matmul_flops(n, n, r) + grad_z + 4 * n * r
        out["W_1"] = matmul_flops(n, d, r) + config.k_w * per_step + 2 * r * d + matmul_flops(r, n, d)
    else:
        # K_W times: z = X W^T, g(z), W <- W - step (gamma g^T X / n + lambda W)
        per_step = matmul_flops(n, d, r) + grad_z + matmul_flops(r, n, d) + 6 * r * d
        out["W_1"] = config.k_w * per_step
    return out


def sweep_flops(config: Config, n: int, d_in: int, d_out: int = 1, *, include_diagnostics: bool = False) -> int:
    """FLOPs of one BCD sweep's block updates (see the module docstring for what is counted).

    Args:
      config: the run's :class:`bcd_jax.Config` (squared loss, fixed step sizes).
      n, d_in, d_out: samples, input features (without the bias column) and outputs.
      include_diagnostics: add the per-sweep :class:`bcd_jax.Diagnostics` that
        ``bcd_jax.sweep`` and ``bcd_jax.run`` also compute (:func:`diagnostics_flops`).
    """
    total = sum(sweep_flops_breakdown(config, n, d_in, d_out).values())
    if include_diagnostics:
        total += diagnostics_flops(config, n, d_in, d_out)
    return total


def _svdvals_flops(m: int, k: int) -> int:
    """Singular values only of an m x k matrix (Golub & Van Loan): ``4 m^2 k - 4/3 m^3``, m <= k."""
    m, k = min(m, k), max(m, k)
    return int(round(4 * m * m * k - 4 * m**3 / 3))


def _eigh_flops(r: int) -> int:
    """Symmetric eigendecomposition with vectors (what ``eigvalsh`` lowers to): ``9 r^3``."""
    return 9 * r**3


def diagnostics_flops(config: Config, n: int, d_in: int, d_out: int = 1) -> int:
    """FLOPs of one ``Diagnostics`` evaluation: its products exactly, SVD/eigh estimated.

    The products: the output loss ``V_{L-1} W_L^T``; one ``V_{j-1} W_j^T`` per layer loss; a
    forward pass of the network for ``train_mse``; ``V_j^T V_j`` for ``v_gram_max``. The
    decompositions: singular values of every ``W_j``, one ``eigvalsh`` per ``V_j^T V_j``.
    Elementwise work is not counted.
    """
    _check(config, n, d_in, d_out)
    r, o, L = config.width, d_out, config.depth
    d = _features(config, d_in)
    flops = matmul_flops(n, r, o)  # output loss
    flops += matmul_flops(n, d, r) + (L - 2) * matmul_flops(n, r, r)  # layer losses
    flops += matmul_flops(n, d, r) + (L - 2) * matmul_flops(n, r, r) + matmul_flops(n, r, o)  # train_mse
    flops += (L - 1) * (matmul_flops(r, n, r) + _eigh_flops(r))  # v_gram_max
    flops += _svdvals_flops(r, d) + (L - 2) * _svdvals_flops(r, r) + _svdvals_flops(o, r)  # sv_min/max
    return flops


def prepare_flops(config: Config, n: int, d_in: int) -> int:
    """FLOPs of the data-only work ``bcd_jax.run`` does once per call (not per sweep).

    ``X X^T`` when the K_W loop runs in the Gram form (``2 n^2 d``); ``pinv(X)`` for
    ``inner="exact"``, through the Cholesky factor of the smaller Gram matrix: with
    ``m = max(n, d) >= k = min(n, d)``, the Gram ``2 m k^2``, the factorisation ``k^3 / 3`` and the
    two triangular solves against the ``m`` right-hand sides ``2 m k^2``.
    """
    d = _features(config, d_in)
    flops = matmul_flops(n, d, n) if uses_gram_form(config, n, d_in) else 0
    if getattr(config, "inner", "gd") == "exact":
        m, k = max(n, d), min(n, d)
        flops += 2 * m * k * k + k**3 // 3 + 2 * m * k * k
    return flops


# --------------------------------------------------------------------------------------
# Counting a traced program
# --------------------------------------------------------------------------------------

_ELEMENTWISE = {
    "add", "add_any", "sub", "mul", "div", "neg", "max", "min", "abs", "sign", "exp", "exp2",
    "log", "log1p", "expm1", "sqrt", "rsqrt", "cbrt", "tanh", "logistic", "pow", "integer_pow",
    "square", "select_n", "ge", "gt", "le", "lt", "eq", "ne", "is_finite", "sin", "cos",
    "erf", "clamp", "rem", "atan2", "nextafter", "reciprocal",
}
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin", "cumsum", "cumlogsumexp", "cummax"}


def _is_float(aval) -> bool:
    dtype = getattr(aval, "dtype", None)
    return dtype is not None and getattr(dtype, "kind", "") in ("f", "c")


def _size(aval) -> int:
    return int(math.prod(getattr(aval, "shape", ())))


def _sub_jaxprs(params: dict[str, Any]):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                yield item.jaxpr


def _eqn_flops(eqn) -> int:
    name = eqn.primitive.name
    ins = [v.aval for v in eqn.invars if hasattr(v, "aval")]
    outs = [v.aval for v in eqn.outvars]
    if name == "dot_general":
        (contract_lhs, _), _ = eqn.params["dimension_numbers"]
        k = math.prod(ins[0].shape[i] for i in contract_lhs)
        return 2 * _size(outs[0]) * k
    if name == "scan":
        return eqn.params["length"] * _jaxpr_flops(eqn.params["jaxpr"].jaxpr)
    if name == "while":
        raise ValueError("jaxpr_flops: a while loop with a traced trip count cannot be counted")
    if name == "cond":
        return max(_jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
    if name in _ELEMENTWISE:
        return _size(outs[0]) if any(_is_float(a) for a in ins) else 0
    if name in _REDUCTIONS:
        return _size(ins[0]) if _is_float(ins[0]) else 0
    if name == "svd":
        *batch, m, k = ins[0].shape
        m, k = max(m, k), min(m, k)
        per = 4 * m * m * k + 8 * m * k * k + 9 * k**3 if eqn.params.get("compute_uv", True) else _svdvals_flops(m, k)
        return math.prod(batch) * per
    if name == "eigh":
        *batch, r, _ = ins[0].shape
        return math.prod(batch) * _eigh_flops(r)
    if name == "lu":
        *batch, m, k = ins[0].shape
        return math.prod(batch) * int(round(max(m, k) * min(m, k) ** 2 - min(m, k) ** 3 / 3))
    if name == "cholesky":
        *batch, k, _ = ins[0].shape
        return math.prod(batch) * (k**3 // 3)
    if name == "triangular_solve":
        a, b = ins[0], ins[1]
        return _size(b) * a.shape[-1]
    return sum(_jaxpr_flops(sub) for sub in _sub_jaxprs(eqn.params))  # jit, custom_jvp_call, ...


def _jaxpr_flops(jaxpr) -> int:
    return sum(_eqn_flops(eqn) for eqn in jaxpr.eqns)


def jaxpr_flops(fn, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` counted on its jaxpr with this module's conventions.

    Products ``2 m k p``; one FLOP per output element of a floating-point elementwise
    primitive (comparisons and selects included) and per input element of a reduction;
    ``scan`` bodies times their length; the larger branch of a ``cond``; SVD/eigh/LU with
    the leading-order estimates above. It counts the program as traced, before XLA's
    simplifications, so it sees every multiplication by a constant that the closed form
    skips (for example the ``a * 1`` of LeakyReLU's derivative).
    """
    import jax

    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _jaxpr_flops(closed.jaxpr)
