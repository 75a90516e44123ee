"""Floating-point operation counts: the conventions, and a count of any traced JAX program.

Closed forms of one family's sweep live next to the family (Akiyama's:
:mod:`bcd_jax.algorithms.akiyama_flops`); this module holds what every count shares:

* A product of an ``(m, k)`` and a ``(k, p)`` matrix costs ``2 m k p`` (:func:`matmul_flops`);
  a vmapped per-sample product ``W v_i`` counts as n matrix-vector products.
* Every elementwise arithmetic operation on one element costs 1 (add, subtract, multiply,
  divide, compare-select). Activations are charged per element by :data:`ACTIVATION_COST`.
* Decompositions are charged with the usual leading-order counts (:func:`svdvals_flops`,
  :func:`eigh_flops`, LU ``m k^2 - k^3 / 3``, Cholesky ``k^3 / 3``).

:func:`jaxpr_flops` counts any traced function with these conventions (loop bodies times
their trip count), and :func:`traced_sweep_flops` applies it to one sweep of any registered
algorithm through the protocol (``algorithm.prepare`` and ``algorithm.step``), which
cross-checks a family's closed form against the program it actually runs.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from bcd_jax.algorithms import make_data
from bcd_jax.config import Config
from bcd_jax.validation import check_int

__all__ = [
    "ACTIVATION_COST",
    "activation_cost",
    "eigh_flops",
    "jaxpr_flops",
    "matmul_flops",
    "svdvals_flops",
    "traced_sweep_flops",
]

# activation name -> FLOPs per element of (sigma(z), sigma'(z), sigma^{-1}(t)). LeakyReLU
# ``where(z >= 0, z, a z)``: value 2 (multiply, compare-select), derivative 1 (select between 1
# and a), inverse 2 (divide, compare-select); ReLU 1, 1, -; identity 0, 0, 0.
ACTIVATION_COST: dict[str, tuple[int, int, int]] = {
    "leaky_relu": (2, 1, 2),
    "relu": (1, 1, 0),
    "identity": (0, 0, 0),
}
_DEFAULT_ACTIVATION_COST = (2, 1, 2)  # a user-supplied callable is charged as LeakyReLU


def activation_cost(activation) -> tuple[int, int, int]:
    """``(value, derivative, inverse)`` FLOPs per element of an :class:`bcd_jax.Activation`."""
    return ACTIVATION_COST.get(getattr(activation, "name", None), _DEFAULT_ACTIVATION_COST)


def matmul_flops(m: int, k: int, p: int = 1) -> int:
    """FLOPs of an ``(m, k) @ (k, p)`` product: ``2 m k p``."""
    return 2 * m * k * p


def svdvals_flops(m: int, k: int) -> int:
    """Singular values only of an m x k matrix (Golub & Van Loan): ``4 m^2 k - 4/3 m^3``, m <= k."""
    m, k = min(m, k), max(m, k)
    return round(4 * m * m * k - 4 * m**3 / 3)


def qr_flops(m: int, k: int) -> int:
    """Householder QR of an m x k matrix, m >= k (the triangle only): ``2 m k^2 - 2/3 k^3``."""
    m, k = max(m, k), min(m, k)
    return round(2 * m * k * k - 2 * k**3 / 3)


def singular_values_flops(m: int, k: int) -> int:
    """What ``bcd_jax.algorithms.layered.singular_values`` costs: a thin QR first when one side is
    more than twice the other, then the singular values of the square triangle."""
    m, k = max(m, k), min(m, k)
    if m > 2 * k:
        return qr_flops(m, k) + svdvals_flops(k, k)
    return svdvals_flops(m, k)


def eigh_flops(r: int) -> int:
    """Symmetric eigendecomposition with vectors (what ``eigvalsh`` lowers to): ``9 r^3``."""
    return 9 * r**3


# --------------------------------------------------------------------------------------
# Counting a traced program
# --------------------------------------------------------------------------------------

_ELEMENTWISE = {
    "add", "add_any", "sub", "mul", "div", "neg", "max", "min", "abs", "sign", "exp", "exp2",
    "log", "log1p", "expm1", "sqrt", "rsqrt", "cbrt", "tanh", "logistic", "pow", "integer_pow",
    "square", "select_n", "ge", "gt", "le", "lt", "eq", "ne", "is_finite", "sin", "cos",
    "erf", "clamp", "rem", "atan2", "nextafter", "reciprocal",
}  # fmt: skip
_REDUCTIONS = {
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "argmax",
    "argmin",
    "cumsum",
    "cumlogsumexp",
    "cummax",
}


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
        per = 4 * m * m * k + 8 * m * k * k + 9 * k**3 if eqn.params.get("compute_uv", True) else svdvals_flops(m, k)
        return math.prod(batch) * per
    if name == "eigh":
        *batch, r, _ = ins[0].shape
        return math.prod(batch) * eigh_flops(r)
    if name == "qr":
        *batch, m, k = ins[0].shape
        return math.prod(batch) * qr_flops(m, k)
    if name == "lu":
        *batch, m, k = ins[0].shape
        return math.prod(batch) * round(max(m, k) * min(m, k) ** 2 - min(m, k) ** 3 / 3)
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
    ``scan`` and ``fori_loop`` bodies times their length; the larger branch of a ``cond``;
    SVD/eigh/LU/Cholesky with the leading-order estimates above. It counts the program as
    traced, before XLA's simplifications, so it sees every multiplication by a constant that a
    closed form skips (for example the ``a * 1`` of LeakyReLU's derivative). The arguments
    may be arrays or ``jax.ShapeDtypeStruct``: nothing is computed.
    """
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _jaxpr_flops(closed.jaxpr)


def traced_sweep_flops(config: Config, n: int, d_in: int, d_out: int = 1, *, dtype=jnp.float32) -> dict[str, int]:
    """FLOPs of one sweep of ``config.algorithm`` as it is compiled, counted on its jaxpr.

    Traces the protocol's functions on abstract data (nothing is computed):

    * ``"prepare"``: ``algorithm.prepare``, the data-only work done once per run;
    * ``"step"``: ``algorithm.step``, one sweep and the diagnostics of its result.

    Args:
      config: a :class:`bcd_jax.Config` (any registered algorithm).
      n: samples.
      d_in: input features (without the bias column).
      d_out: outputs.
      dtype (numpy dtype): the floating-point type of the data and the blocks.
    """
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    n, d_in, d_out = (check_int(name, v, low=1) for name, v in (("n", n), ("d_in", d_in), ("d_out", d_out)))
    algorithm, network = config.algorithm, config.resolved_network
    sds = jax.ShapeDtypeStruct
    data = jax.eval_shape(lambda X, Y: make_data(X, Y, network), sds((n, d_in), dtype), sds((n, d_out), dtype))
    weights = tuple(sds(shape, dtype) for shape in network.layer_shapes(d_in, d_out))
    hyper = jax.tree.map(lambda v: sds((), dtype), config.hyper)
    blocks = jax.eval_shape(lambda w, d: algorithm.init(w, d, network), weights, data)
    cache = jax.eval_shape(lambda d: algorithm.prepare(d, network), data)
    return {
        "prepare": jaxpr_flops(lambda d: algorithm.prepare(d, network), data),
        "step": jaxpr_flops(lambda b, d, c, h: algorithm.step(b, d, c, h, network), blocks, data, cache, hyper),
    }
