"""Host-side input checks, run before anything is traced.

Every message names the argument, what was received and what was expected.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from bcd_jax.config import Config
from bcd_jax.model import layer_shapes

__all__ = ["check_data", "check_params", "is_concrete"]


def is_concrete(x) -> bool:
    """True when ``x`` holds values on the host side (not a tracer inside jit/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def _as_float_array(name: str, value) -> jax.Array:
    arr = value if isinstance(value, jax.Array) else np.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == bool:
            arr = arr.astype(jnp.result_type(float))
        else:
            raise ValueError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    return jnp.asarray(arr)


def check_data(X, Y, *, d_out: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Validates a training set and returns ``(X, Y)`` as float arrays, ``Y`` as ``(n, d_out)``.

    ``Y`` may be a vector of n targets (one output). Raises ``ValueError`` for wrong ranks,
    mismatched sample counts, empty dimensions, non-finite values, or a ``d_out`` that
    differs from the number of target columns.
    """
    X = _as_float_array("X", X)
    Y = _as_float_array("Y", Y)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array (n, d_in), got shape {X.shape}")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise ValueError(f"Y: expected a 1-D (n,) or 2-D (n, d_out) array, got shape {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X, Y: sample counts differ: X has {X.shape[0]} rows, Y has {Y.shape[0]}; expected equal"
        )
    if X.shape[0] < 1 or X.shape[1] < 1 or Y.shape[1] < 1:
        raise ValueError(f"X, Y: expected non-empty arrays, got X {X.shape} and Y {Y.shape}")
    if d_out is not None and Y.shape[1] != d_out:
        raise ValueError(f"d_out: the output weight has {d_out} rows but Y has {Y.shape[1]} columns; expected equal")
    if X.dtype != Y.dtype:
        Y = Y.astype(X.dtype)
    for name, arr in (("X", X), ("Y", Y)):
        # A global array spread over several processes is checked where its parts were made.
        local = getattr(arr, "is_fully_addressable", True)
        if is_concrete(arr) and local and not bool(jnp.all(jnp.isfinite(arr))):
            bad = int(jnp.sum(~jnp.isfinite(arr)))
            raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")
    return X, Y


def check_params(params, config: Config, d_in: int | None = None, d_out: int | None = None) -> None:
    """Checks that ``params`` is a sequence of L matrices with the paper's shapes."""
    if not isinstance(params, (tuple, list)):
        raise ValueError(f"params: expected a tuple (W_1, ..., W_L), got {type(params).__name__}")
    if len(params) != config.depth:
        raise ValueError(f"params: expected depth L = {config.depth} weight matrices, got {len(params)}")
    d_in = params[0].shape[-1] if d_in is None else d_in
    d_out = params[-1].shape[0] if d_out is None else d_out
    expected = layer_shapes(config, d_in, d_out)
    for j, (w, shape) in enumerate(zip(params, expected), start=1):
        if tuple(w.shape) != shape:
            raise ValueError(f"params: W_{j} has shape {tuple(w.shape)}; expected {shape} (width r = {config.width})")
