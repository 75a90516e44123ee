"""Synthetic data of the paper's Section 6: a one-hidden-layer teacher network."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bcd_jax.activations import get_activation

__all__ = ["teacher_problem"]


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
    for name, value in (("n", n), ("d_in", d_in), ("teacher_width", teacher_width), ("d_out", d_out)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    sigma = get_activation(activation, negative_slope)
    kx, kb, ka = jax.random.split(key, 3)
    X = jax.random.normal(kx, (n, d_in), dtype)
    B = jax.random.normal(kb, (teacher_width, d_in), dtype) / jnp.sqrt(jnp.asarray(d_in, dtype))
    A = jax.random.normal(ka, (d_out, teacher_width), dtype) / jnp.sqrt(jnp.asarray(teacher_width, dtype))
    return X, sigma(X @ B.T) @ A.T
