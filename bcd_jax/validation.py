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


def _class_targets(Y, task: str, num_classes: int | None, d_out: int | None, name: str):
    """Integer labels (or one-hot / probability rows) -> float target rows for a classification loss."""
    arr = Y if isinstance(Y, jax.Array) else np.asarray(Y)
    if not is_concrete(arr) or not getattr(arr, "is_fully_addressable", True):
        return arr  # traced or spread over processes: taken as already-encoded rows
    values = np.asarray(arr)
    if task == "binary":
        flat = values.reshape(-1) if values.ndim == 2 and values.shape[1] == 1 else values
        if flat.ndim != 1:
            raise ValueError(f"{name}: a binary loss expects labels of shape (n,) or (n, 1), got {values.shape}")
        if not np.all((flat == 0) | (flat == 1)):
            bad = np.unique(flat[(flat != 0) & (flat != 1)])[:5]
            raise ValueError(f"{name}: binary labels must be 0 or 1; got values such as {bad.tolist()}")
        return flat.astype(np.float32 if values.dtype != np.float64 else np.float64)[:, None]
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1 and np.issubdtype(values.dtype, np.integer)):
        labels = values.reshape(-1)
        if not np.all(np.isfinite(labels.astype(np.float64))) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{name}: class labels must be integers, got dtype {values.dtype} with non-integer values")
        labels = labels.astype(np.int64)
        classes = num_classes or d_out or int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(
                f"{name}: labels outside the class range [0, {classes}): found {int(labels.min())} .. {int(labels.max())}"
            )
        return np.eye(classes, dtype=np.float32)[labels]
    if values.ndim == 2:
        if num_classes is not None and values.shape[1] != num_classes:
            raise ValueError(f"{name}: {values.shape[1]} target columns but num_classes = {num_classes}; expected equal")
        if np.any(values < 0) or not np.allclose(values.sum(axis=1), 1.0, atol=1e-5):
            raise ValueError(f"{name}: classification target rows must be one-hot (or probabilities summing to 1)")
        return values
    raise ValueError(f"{name}: expected labels (n,) or one-hot rows (n, classes), got shape {values.shape}")


def check_data(
    X, Y, *, d_out: int | None = None, loss=None, num_classes: int | None = None, names=("X", "Y")
) -> tuple[jax.Array, jax.Array]:
    """Validates a training set and returns ``(X, Y)`` as float arrays, ``Y`` as ``(n, d_out)``.

    ``Y`` may be a vector of n targets (one output). For a classification ``loss`` it may be
    integer labels, which become one-hot rows (binary: a 0/1 column). Raises ``ValueError`` for
    wrong ranks, mismatched sample counts, empty dimensions, non-finite values, labels outside
    the class range, or a ``d_out`` that differs from the number of target columns.
    """
    x_name, y_name = names
    task = getattr(loss, "task", "regression")
    if task != "regression":
        Y = _class_targets(Y, task, num_classes, d_out, y_name)
    X = _as_float_array(x_name, X)
    Y = _as_float_array(y_name, Y)
    if X.ndim != 2:
        raise ValueError(f"{x_name}: expected a 2-D array (n, d_in), got shape {X.shape}")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise ValueError(f"{y_name}: expected a 1-D (n,) or 2-D (n, d_out) array, got shape {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{x_name}, {y_name}: sample counts differ: {x_name} has {X.shape[0]} rows, {y_name} has {Y.shape[0]}; expected equal"
        )
    if X.shape[0] < 1 or X.shape[1] < 1 or Y.shape[1] < 1:
        raise ValueError(f"{x_name}, {y_name}: expected non-empty arrays, got {X.shape} and {Y.shape}")
    if d_out is not None and Y.shape[1] != d_out:
        raise ValueError(f"d_out: the output weight has {d_out} rows but {y_name} has {Y.shape[1]} columns; expected equal")
    if X.dtype != Y.dtype:
        Y = Y.astype(X.dtype)
    for name, arr in ((x_name, X), (y_name, Y)):
        # A global array spread over several processes is checked where its parts were made.
        # NumPy on the host: jnp ops would be staged (and unreadable) inside a caller's jit.
        if is_concrete(arr) and getattr(arr, "is_fully_addressable", True) and not np.isfinite(np.asarray(arr)).all():
            bad = int(np.sum(~np.isfinite(np.asarray(arr))))
            raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")
    return X, Y


def check_params(params, config: Config, d_in: int | None = None, d_out: int | None = None) -> None:
    """Checks that ``params`` is a sequence of L matrices with the paper's shapes."""
    if not isinstance(params, (tuple, list)):
        raise ValueError(f"params: expected a tuple (W_1, ..., W_L), got {type(params).__name__}")
    if len(params) != config.depth:
        raise ValueError(f"params: expected depth L = {config.depth} weight matrices, got {len(params)}")
    for j, w in enumerate(params, start=1):
        if len(getattr(w, "shape", ())) != 2:
            raise ValueError(f"params: W_{j} must be a 2-D array, got {type(w).__name__} {getattr(w, 'shape', '')}")
    d_in = params[0].shape[-1] - int(config.bias) if d_in is None else d_in
    d_out = params[-1].shape[0] if d_out is None else d_out
    expected = layer_shapes(config, d_in, d_out)
    for j, (w, shape) in enumerate(zip(params, expected), start=1):
        if tuple(w.shape) != shape:
            raise ValueError(f"params: W_{j} has shape {tuple(w.shape)}; expected {shape} (width r = {config.width})")
