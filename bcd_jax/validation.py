"""Host-side input checks, run before anything is traced.

Every message names the argument, what was received and what was expected. The scalar
checks accept NumPy scalar types (``np.int64(30)``, ``np.float32(0.2)``) and return plain
Python numbers, so validated values stay hashable and JSON-ready.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_int",
    "check_float",
    "check_bool",
    "check_choice",
    "check_data",
    "check_inputs",
    "check_weights",
    "is_concrete",
    "SUPPORTED_DTYPES",
]

# Floating dtypes the solver computes in; half precision has no LAPACK kernels (Cholesky, SVD).
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_int(name: str, value, *, low: int | None = None) -> int:
    """``value`` as a Python int (a NumPy integer is fine; a bool or a float is not), ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")
    return value


def check_float(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite Python float in ``[low, high]`` (open ends with ``low_open``/``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite number, got {type(value).__name__} {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name}: expected a number in {bounds}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def is_concrete(x) -> bool:
    """True when ``x`` holds values on the host side (not a tracer inside jit/vmap)."""
    return not isinstance(x, jax.core.Tracer)


_SAID = set()


def _say_once(key: str, message: str) -> None:
    """One warning per process for a silent conversion the user should know of."""
    if key not in _SAID:
        _SAID.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


def _as_float_array(name: str, value) -> jax.Array:
    arr = value if isinstance(value, jax.Array) else np.asarray(value)
    if arr.dtype.kind in "USO":
        raise ValueError(
            f"{name}: expected numbers, got {arr.dtype.kind == 'O' and 'objects' or 'strings'} (dtype {arr.dtype}); "
            "map class labels to 0..C-1 first (bcd_jax.datasets.load_dataset(..., labels='remap') does it)"
        )
    if jnp.issubdtype(arr.dtype, jnp.floating):
        if arr.dtype == np.float64 and not jax.config.jax_enable_x64:
            _say_once(
                "float64",
                f"{name}: float64 data are computed in float32 because JAX's 64-bit mode is off; enable it "
                "(jax.config.update('jax_enable_x64', True), or within `with jax.enable_x64():`) to train in float64 "
                "(said once)",
            )
        if np.dtype(arr.dtype) not in SUPPORTED_DTYPES:
            raise ValueError(
                f"{name}: dtype {arr.dtype} is not supported; expected float32 or float64 (half precision has "
                "no LAPACK kernels); convert with .astype(np.float32)"
            )
    elif jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == bool:
        arr = arr.astype(jnp.result_type(float))
    else:
        raise ValueError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    return jnp.asarray(arr)


def check_inputs(X, name: str = "X") -> jax.Array:
    """A 2-D real floating array of a supported dtype (integers are converted); traced values pass."""
    if isinstance(X, jax.core.Tracer):
        if X.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array (n, d_in), got shape {X.shape}")
        return X
    X = _as_float_array(name, X)
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, d_in), got shape {X.shape}")
    return X


def _class_targets(Y, task: str, num_classes: int | None, d_out: int | None, name: str):
    """Integer labels (or one-hot / probability rows) -> float target rows for a classification loss."""
    arr = Y if isinstance(Y, jax.Array) else np.asarray(Y)
    if not is_concrete(arr) or not getattr(arr, "is_fully_addressable", True):
        return arr  # traced or spread over processes: taken as already-encoded rows
    values = np.asarray(arr)
    if values.dtype.kind in "USO":
        raise ValueError(
            f"{name}: string labels ({np.unique(values)[:5].tolist()}...); expected integer class labels 0..C-1: map "
            "them first, e.g. bcd_jax.datasets.load_dataset((X, y), labels='remap')"
        )
    if task == "binary":
        flat = values.reshape(-1) if values.ndim == 2 and values.shape[1] == 1 else values
        if flat.ndim != 1:
            raise ValueError(f"{name}: a binary loss expects labels of shape (n,) or (n, 1), got {values.shape}")
        if not np.all((flat == 0) | (flat == 1)):
            bad = np.unique(flat[(flat != 0) & (flat != 1)])[:5]
            raise ValueError(
                f"{name}: binary labels must be 0 or 1; got values such as {bad.tolist()} (map them to 0/1, e.g. "
                "bcd_jax.datasets.load_dataset((X, y), labels='remap'))"
            )
        return flat.astype(np.float32 if values.dtype != np.float64 else np.float64)[:, None]
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1 and np.issubdtype(values.dtype, np.integer)):
        labels = values.reshape(-1)
        if not np.all(np.isfinite(labels.astype(np.float64))) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{name}: class labels must be integers, got dtype {values.dtype} with non-integer values")
        labels = labels.astype(np.int64)
        classes = num_classes or d_out or int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(
                f"{name}: labels outside the class range [0, {classes}): found {int(labels.min())} .. "
                f"{int(labels.max())}"
            )
        if num_classes is None and d_out is None:  # the classes are read off the labels: they must be 0..C-1
            missing = sorted(set(range(classes)) - set(np.unique(labels).tolist()))
            if missing:
                raise ValueError(
                    f"{name}: the labels run 0..{classes - 1} but no sample has class {missing[:5]} (labels "
                    f"{np.unique(labels)[:8].tolist()}...); expected 0..C-1: map them (bcd_jax.datasets.load_dataset("
                    "(X, y), labels='remap')), or set network.num_classes if some classes are absent from these data"
                )
        # One row per sample, never a classes x classes identity matrix: memory is n x classes.
        rows = np.zeros((labels.shape[0], classes), np.float32)
        rows[np.arange(labels.shape[0]), labels] = 1.0
        return rows
    if values.ndim == 2:
        if num_classes is not None and values.shape[1] != num_classes:
            raise ValueError(
                f"{name}: {values.shape[1]} target columns but num_classes = {num_classes}; expected equal"
            )
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
    wrong ranks, mismatched sample counts, empty dimensions, unsupported dtypes, non-finite
    values, labels outside the class range, or a ``d_out`` that differs from the target columns.
    """
    x_name, y_name = names
    task = getattr(loss, "task", "regression")
    if task != "regression":
        Y = _class_targets(Y, task, num_classes, d_out, y_name)
    else:
        dtype = getattr(Y, "dtype", None) if hasattr(Y, "dtype") else np.asarray(Y).dtype
        if dtype is not None and (np.dtype(dtype).kind in "iub") and np.ndim(Y) == 1:
            name = getattr(loss, "name", "squared")
            raise ValueError(
                f"{y_name}: integer labels with the regression loss {name!r} would regress on the class index; use a "
                "classification loss (network.loss = 'squared_multiclass', 'softmax_cross_entropy', 'logistic' for "
                f"0/1) or pass float targets ({y_name}.astype(float)) to regress on these values"
            )
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
            f"{x_name}, {y_name}: sample counts differ: {x_name} has {X.shape[0]} rows, {y_name} has {Y.shape[0]}; "
            "expected equal"
        )
    if X.shape[0] < 1 or X.shape[1] < 1 or Y.shape[1] < 1:
        raise ValueError(f"{x_name}, {y_name}: expected non-empty arrays, got {X.shape} and {Y.shape}")
    if d_out is not None and Y.shape[1] != d_out:
        raise ValueError(
            f"d_out: the output weight has {d_out} rows but {y_name} has {Y.shape[1]} columns; expected equal"
        )
    if X.dtype != Y.dtype:
        Y = Y.astype(X.dtype)
    for name, arr in ((x_name, X), (y_name, Y)):
        # A global array spread over several processes is checked where its parts were made.
        # NumPy on the host: jnp ops would be staged (and unreadable) inside a caller's jit.
        if is_concrete(arr) and getattr(arr, "is_fully_addressable", True) and not np.isfinite(np.asarray(arr)).all():
            bad = int(np.sum(~np.isfinite(np.asarray(arr))))
            raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")
    return X, Y


def check_weights(params, shapes: Sequence[tuple[int, int]], *, width: int | None = None, name: str = "params") -> None:
    """Checks that ``params`` is a sequence of 2-D arrays with exactly ``shapes``."""
    if not isinstance(params, (tuple, list)):
        raise ValueError(f"{name}: expected a tuple (W_1, ..., W_L), got {type(params).__name__}")
    if len(params) != len(shapes):
        raise ValueError(f"{name}: expected depth L = {len(shapes)} weight matrices, got {len(params)}")
    for j, (w, shape) in enumerate(zip(params, shapes), start=1):
        if len(getattr(w, "shape", ())) != 2:
            raise ValueError(f"{name}: W_{j} must be a 2-D array, got {type(w).__name__} {getattr(w, 'shape', '')}")
        if tuple(w.shape) != tuple(shape):
            detail = f" (width r = {width})" if width is not None else ""
            raise ValueError(f"{name}: W_{j} has shape {tuple(w.shape)}; expected {tuple(shape)}{detail}")
        if not jnp.issubdtype(getattr(w, "dtype", np.float32), jnp.floating) and not jnp.issubdtype(
            w.dtype, jnp.integer
        ):
            raise ValueError(f"{name}: W_{j} has dtype {w.dtype}; expected a real floating-point array")
