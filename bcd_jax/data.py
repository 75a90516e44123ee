"""Synthetic data of the paper's Section 6: a one-hidden-layer teacher network."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bcd_jax.activations import get_activation

__all__ = ["teacher_problem", "teacher_split"]


def teacher_problem(
    key: jax.Array,
    n: int = 500,
    d_in: int = 600,
    teacher_width: int = 30,
    activation="leaky_relu",
    negative_slope: float = 0.5,
    d_out: int = 1,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """``x_i ~ N(0, I_{d_in})`` and ``y_i = A sigma(B x_i)``.

    ``B: (teacher_width, d_in) ~ N(0, 1/d_in)`` and ``A: (d_out, teacher_width) ~ N(0, 1/teacher_width)``
    entrywise, so pre-activations and targets are O(1). The paper fixes n, d_in and the
    activation; the teacher's width and these scalings are this library's choice.

    Returns ``X: (n, d_in)`` and ``Y: (n, d_out)``.
    """
    X, Y, _, _ = teacher_split(key, n, d_in, teacher_width, activation, negative_slope, d_out, dtype, n_test=0)
    return X, Y


def teacher_split(
    key: jax.Array,
    n: int = 500,
    d_in: int = 600,
    teacher_width: int = 30,
    activation="leaky_relu",
    negative_slope: float = 0.5,
    d_out: int = 1,
    dtype=jnp.float32,
    *,
    n_test: int = 500,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """:func:`teacher_problem`'s training set (the same arrays for the same key) and ``n_test``
    held-out samples of the same teacher, drawn from ``jax.random.fold_in(key, 1)``.

    Returns ``X, Y, X_test, Y_test``; the test arrays have ``n_test`` rows (0 allowed).
    """
    for name, value, low in (
        ("n", n, 1), ("n_test", n_test, 0), ("d_in", d_in, 1), ("teacher_width", teacher_width, 1), ("d_out", d_out, 1)
    ):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    sigma = get_activation(activation, negative_slope)
    kx, kb, ka = jax.random.split(key, 3)
    X = jax.random.normal(kx, (n, d_in), dtype)
    X_test = jax.random.normal(jax.random.fold_in(key, 1), (n_test, d_in), dtype)
    B = jax.random.normal(kb, (teacher_width, d_in), dtype) / jnp.sqrt(jnp.asarray(d_in, dtype))
    A = jax.random.normal(ka, (d_out, teacher_width), dtype) / jnp.sqrt(jnp.asarray(teacher_width, dtype))
    return X, sigma(X @ B.T) @ A.T, X_test, sigma(X_test @ B.T) @ A.T
