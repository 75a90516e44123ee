"""Elementwise activations, one registry.

An activation is a plain elementwise function ``sigma``; its derivative is taken by
forward-mode autodiff (``jax.jvp`` with a tangent of ones), so a user-supplied function
needs nothing but its values. Each built-in also declares the constants the paper's
theory uses (Assumption 2): ``alpha``, a lower bound of sigma', and ``lipschitz`` (the
paper's ell). They are ``None`` for a user function, whose constants are unknown.

Adding a built-in is one factory plus one entry in ``ACTIVATIONS``; the test suite is
parametrized over that dict, so the new entry is tested automatically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["Activation", "ACTIVATIONS", "get_activation"]


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise activation with the constants of the paper's Assumption 2.

    Attributes:
      name: registry name, or the function's ``__name__`` for a user function.
      fn: elementwise function ``z -> sigma(z)``.
      alpha: lower bound of sigma' (0 for ReLU; ``None`` if unknown).
      lipschitz: Lipschitz constant ell of sigma (``None`` if unknown).
      inverse: sigma^{-1} where sigma is a bijection of the reals (used by ``inner="exact"``),
        else ``None``.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    alpha: float | None = None
    lipschitz: float | None = None
    inverse: Callable[[jax.Array], jax.Array] | None = None

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.fn(z)

    def value_and_derivative(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(sigma(z), sigma'(z))`` in one forward-mode pass (exact for elementwise fn)."""
        return jax.jvp(self.fn, (z,), (jnp.ones_like(z),))


def _leaky_relu(negative_slope: float) -> Activation:
    def leaky_relu(z):
        # z >= 0 picks slope 1 at the kink, matching max(z, a z) for a < 1.
        return jnp.where(z >= 0, z, negative_slope * z)

    def leaky_relu_inverse(t):
        return jnp.where(t >= 0, t, t / negative_slope)

    inverse = leaky_relu_inverse if negative_slope > 0 else None  # slope 0 is ReLU: not invertible
    return Activation("leaky_relu", leaky_relu, alpha=float(negative_slope), lipschitz=1.0, inverse=inverse)


def _relu(negative_slope: float) -> Activation:
    del negative_slope  # ReLU has none; the factory signature is shared.

    def relu(z):
        return jnp.maximum(z, 0)

    return Activation("relu", relu, alpha=0.0, lipschitz=1.0)


def _identity(negative_slope: float) -> Activation:
    del negative_slope

    def identity(z):
        return z

    return Activation("identity", identity, alpha=1.0, lipschitz=1.0, inverse=identity)


# name -> factory(negative_slope) -> Activation
ACTIVATIONS: dict[str, Callable[[float], Activation]] = {
    "leaky_relu": _leaky_relu,
    "relu": _relu,
    "identity": _identity,
}


def get_activation(activation: str | Callable, negative_slope: float = 0.5) -> Activation:
    """Resolves a registry name or a user callable to an :class:`Activation`.

    Raises:
      ValueError: for an unknown name or a callable that is not elementwise.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: unknown name {activation!r}; expected one of "
                f"{sorted(ACTIVATIONS)} or an elementwise callable"
            )
        return ACTIVATIONS[activation](negative_slope)
    if callable(activation):
        probe = jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32)
        try:
            out = jax.eval_shape(activation, probe)
        except Exception as exc:  # noqa: BLE001 - re-raised with the argument named
            raise ValueError(
                f"activation: the callable {activation!r} failed on a float32 vector: {exc}"
            ) from exc
        if getattr(out, "shape", None) != probe.shape:
            raise ValueError(
                f"activation: the callable {activation!r} must be elementwise; it mapped "
                f"shape {probe.shape} to {getattr(out, 'shape', type(out).__name__)}"
            )
        name = getattr(activation, "__name__", type(activation).__name__)
        return Activation(name, activation)
    raise ValueError(
        f"activation: expected a name from {sorted(ACTIVATIONS)} or a callable, "
        f"got {type(activation).__name__} {activation!r}"
    )
