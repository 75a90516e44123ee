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

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "register_activation", "activation_name"]


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


def _smooth_leaky_relu(negative_slope: float) -> Activation:
    # a z + (1 - a) softplus(z): sigma' = a + (1 - a) sigmoid(z) lies in (a, 1), so Assumption 2
    # holds with alpha = a and ell = 1 (strictly monotone and smooth for a > 0).
    def smooth_leaky_relu(z):
        return negative_slope * z + (1.0 - negative_slope) * jax.nn.softplus(z)

    return Activation("smooth_leaky_relu", smooth_leaky_relu, alpha=float(negative_slope), lipschitz=1.0)


def _tanh_shortcut(negative_slope: float) -> Activation:
    del negative_slope

    # z + tanh(z) / 2: sigma' = 1 + sech^2(z) / 2 lies in (1, 3/2]: alpha = 1, ell = 3/2.
    def tanh_shortcut(z):
        return z + 0.5 * jnp.tanh(z)

    return Activation("tanh_shortcut", tanh_shortcut, alpha=1.0, lipschitz=1.5)


# name -> factory(negative_slope) -> Activation
ACTIVATIONS: dict[str, Callable[[float], Activation]] = {
    "leaky_relu": _leaky_relu,
    "relu": _relu,
    "identity": _identity,
    "smooth_leaky_relu": _smooth_leaky_relu,
    "tanh_shortcut": _tanh_shortcut,
}


class _Registered:
    """Registry entry of a user activation: every negative slope gives that one object."""

    def __init__(self, activation: Activation):
        self.activation = activation

    def __call__(self, negative_slope: float) -> Activation:
        del negative_slope
        return self.activation


def register_activation(activation: Activation, *, overwrite: bool = False) -> Activation:
    """Adds a user :class:`Activation` to ``ACTIVATIONS`` under its name and returns it.

    A registered activation can be named in configs and TOML files, and recorded in
    checkpoints (a bare callable cannot: two different functions could share a name).
    """
    if not isinstance(activation, Activation):
        raise ValueError(f"activation: expected a bcd_jax.Activation, got {type(activation).__name__}")
    if activation.name in ACTIVATIONS and not overwrite:
        raise ValueError(f"activation: {activation.name!r} is already registered; pass overwrite=True to replace it")
    ACTIVATIONS[activation.name] = _Registered(activation)
    return activation


def activation_name(activation) -> str | None:
    """The registry name that stands for ``activation`` exactly, or None.

    A string names itself; an :class:`Activation` object counts only if it is the very object
    registered with :func:`register_activation` (a built-in's name with another function, or a
    bare callable, has no name that would bring it back).
    """
    if isinstance(activation, str):
        return activation if activation in ACTIVATIONS else None
    entry = ACTIVATIONS.get(getattr(activation, "name", None))
    if isinstance(entry, _Registered) and entry.activation is activation:
        return activation.name
    return None


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
            raise ValueError(f"activation: the callable {activation!r} failed on a float32 vector: {exc}") from exc
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
