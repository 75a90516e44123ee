"""Elementwise activations, one registry, and what the algorithms need to know about each.

An :class:`Activation` is an elementwise function ``sigma`` plus the facts the families dispatch
on, so that no family ever tests a name:

* ``alpha`` and ``lipschitz``: a lower bound of sigma' and a Lipschitz constant (the paper's
  Assumption 2; the automatic step sizes use ``lipschitz``);
* ``inverse``: sigma^-1 where sigma is a bijection of the reals (Algorithm 1's exact V blocks);
* ``pieces``: for a piecewise-linear activation — continuous (ReLU, leaky ReLU) or not (step,
  sign, quantised staircases) — the intervals and the line on each. From them come the slope
  of the piece a point is on (:meth:`Activation.slope`, the Newton steps of ``whole_objective``)
  and the exact proximal operator (:meth:`Activation.prox`, the U blocks of the three-splitting
  family), so a new registered piecewise-linear activation gets those fast, exact paths at once.

Derivatives of a user function come from forward-mode autodiff, so a user activation needs
nothing but its values. Jumps follow one convention: every piece is closed on the left and open
on the right (``sigma`` is right-continuous), so ``step(0) = 1`` and ``sign(0) = 1``.

Parametrised activations are named with their arguments: ``"quantized(levels=4, low=-1, high=1)"``.
Adding a built-in is one factory plus one registry entry; the tests run over the registry.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bcd_jax.registry import Registry

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "Piece",
    "get_activation",
    "register_activation",
    "activation_name",
    "from_pieces",
    "quantized",
]


class Piece(NamedTuple):
    """One piece of a piecewise-linear activation: ``sigma(u) = slope * u + intercept`` on ``[low, high)``."""

    low: float
    high: float
    slope: float
    intercept: float


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise activation and the facts the algorithms use.

    Attributes:
      name: registry name (with its arguments for a parametrised one), or the function's
        ``__name__`` for an unregistered user function.
      fn: elementwise function ``z -> sigma(z)``.
      alpha: lower bound of sigma' (0 for ReLU; ``None`` if unknown).
      lipschitz: Lipschitz constant of sigma (``None`` if unknown or discontinuous).
      inverse: sigma^-1 where sigma is a bijection of the reals, else ``None``.
      pieces: for a piecewise-linear sigma, its pieces in increasing order, contiguous, from
        ``-inf`` to ``inf`` (each closed on the left, open on the right); else ``None``.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    alpha: float | None = None
    lipschitz: float | None = None
    inverse: Callable[[jax.Array], jax.Array] | None = None
    pieces: tuple[Piece, ...] | None = None

    def __post_init__(self):
        if self.pieces is not None:
            pieces = tuple(Piece(*(float(v) for v in p)) for p in self.pieces)
            ok = pieces and pieces[0].low == -math.inf and pieces[-1].high == math.inf
            ok = ok and all(a.high == b.low for a, b in zip(pieces, pieces[1:]))
            ok = ok and all(p.low < p.high for p in pieces)
            if not ok:
                raise ValueError(
                    f"pieces: expected contiguous pieces (low, high, slope, intercept) in increasing order from -inf "
                    f"to inf, got {self.pieces!r}"
                )
            object.__setattr__(self, "pieces", pieces)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.fn(z)

    def value_and_derivative(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(sigma(z), sigma'(z))`` in one forward-mode pass (exact for an elementwise fn)."""
        return jax.jvp(self.fn, (z,), (jnp.ones_like(z),))

    # -- piecewise-linear activations ------------------------------------------------------------
    @property
    def piecewise_linear(self) -> bool:
        """Whether ``pieces`` describe sigma (the exact prox and the Newton steps apply)."""
        return self.pieces is not None

    @property
    def piecewise_constant(self) -> bool:
        """Whether every piece is flat (step, sign, staircases): sigma' = 0 almost everywhere, so a
        gradient-based block can never move the weights inside it."""
        return self.pieces is not None and all(p.slope == 0 for p in self.pieces)

    def _piece_index(self, z: jax.Array) -> jax.Array:
        index = jnp.zeros(z.shape, jnp.int32)
        for piece in self.pieces[1:]:
            index = index + (z >= piece.low).astype(jnp.int32)
        return index

    def slope(self, z: jax.Array) -> jax.Array:
        """sigma' on the piece ``z`` is on (right-continuous at the breaks), in ``z``'s dtype."""
        slopes = jnp.asarray([p.slope for p in self.pieces], z.dtype)
        return slopes[self._piece_index(z)]

    def prox(self, a: jax.Array, z: jax.Array, weight) -> jax.Array:
        """``argmin_u (sigma(u) - a)^2 + weight (u - z)^2``, entrywise, exactly (``weight > 0``).

        On each piece the objective is a convex quadratic in u: its minimiser clipped to the
        piece is the piece's best point, and the best of those is the minimiser. A piece that
        ends at a jump is open there, so its candidate stops at the last float below the jump
        (where sigma still takes that piece's value). Ties go to the piece further right.
        """
        best_u = best_cost = None
        for k, piece in enumerate(self.pieces):
            s, c = piece.slope, piece.intercept
            u = (s * (a - c) + weight * z) / (s * s + weight)
            high = piece.high
            if k + 1 < len(self.pieces) and not _continuous_at(piece, self.pieces[k + 1]):
                high = _below(high, u.dtype)
            u = jnp.clip(u, jnp.asarray(piece.low, u.dtype), jnp.asarray(high, u.dtype))
            cost = (s * u + c - a) ** 2 + weight * (u - z) ** 2
            if best_u is None:
                best_u, best_cost = u, cost
            else:
                take = cost <= best_cost
                best_u, best_cost = jnp.where(take, u, best_u), jnp.where(take, cost, best_cost)
        return best_u


def _below(x: float, dtype) -> np.ndarray:
    """The largest float of ``dtype`` below ``x`` that is not subnormal: XLA on CPU flushes subnormals
    to zero, so below a jump at 0 the candidate must be ``-tiny``, not the subnormal next to 0 (it
    would be read as 0, on the other side of the jump)."""
    dtype = np.dtype(dtype)
    below = np.nextafter(np.asarray(x, dtype), np.asarray(-np.inf, dtype))
    tiny = np.finfo(dtype).tiny
    return np.asarray(-tiny, dtype) if abs(float(below)) < tiny else below


def _continuous_at(left: Piece, right: Piece) -> bool:
    x = left.high
    return left.slope * x + left.intercept == right.slope * x + right.intercept


def from_pieces(name: str, pieces, **facts) -> Activation:
    """An :class:`Activation` whose function is evaluated from its pieces (right-continuous).

    ``facts`` are the other fields (``alpha``, ``lipschitz``, ``inverse``); for a discontinuous
    sigma leave ``lipschitz`` unset.
    """
    pieces = tuple(Piece(*(float(v) for v in p)) for p in pieces)
    slopes = [p.slope for p in pieces]
    intercepts = [p.intercept for p in pieces]
    breaks = [p.low for p in pieces[1:]]

    def piecewise(z):
        index = jnp.zeros(z.shape, jnp.int32)
        for b in breaks:
            index = index + (z >= b).astype(jnp.int32)
        s = jnp.asarray(slopes, z.dtype)[index]
        c = jnp.asarray(intercepts, z.dtype)[index]
        return s * z + c if any(slopes) else c + 0 * z  # 0 * z: a flat sigma still depends on z (jvp 0)

    piecewise.__name__ = name
    return Activation(name, piecewise, pieces=pieces, **facts)


# --------------------------------------------------------------------------------------
# Built-ins: factory(negative_slope, **arguments) -> Activation
# --------------------------------------------------------------------------------------


def _leaky_relu(negative_slope: float) -> Activation:
    def leaky_relu(z):
        # z >= 0 picks slope 1 at the kink, matching max(z, a z) for a < 1.
        return jnp.where(z >= 0, z, negative_slope * z)

    def leaky_relu_inverse(t):
        return jnp.where(t >= 0, t, t / negative_slope)

    inverse = leaky_relu_inverse if negative_slope > 0 else None  # slope 0 is ReLU: not invertible
    pieces = (Piece(-math.inf, 0.0, negative_slope, 0.0), Piece(0.0, math.inf, 1.0, 0.0))
    return Activation(
        "leaky_relu", leaky_relu, alpha=float(negative_slope), lipschitz=1.0, inverse=inverse, pieces=pieces
    )


def _relu(negative_slope: float) -> Activation:
    del negative_slope  # ReLU has none; the factory signature is shared.

    def relu(z):
        return jnp.maximum(z, 0)

    pieces = (Piece(-math.inf, 0.0, 0.0, 0.0), Piece(0.0, math.inf, 1.0, 0.0))
    return Activation("relu", relu, alpha=0.0, lipschitz=1.0, pieces=pieces)


def _identity(negative_slope: float) -> Activation:
    del negative_slope

    def identity(z):
        return z

    return Activation(
        "identity", identity, alpha=1.0, lipschitz=1.0, inverse=identity, pieces=(Piece(-math.inf, math.inf, 1.0, 0.0),)
    )


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


def _step(negative_slope: float) -> Activation:
    del negative_slope

    def step(z):
        return jnp.where(z >= 0, 1.0, 0.0).astype(z.dtype) + 0 * z

    return Activation("step", step, alpha=0.0, pieces=(Piece(-math.inf, 0.0, 0.0, 0.0), Piece(0.0, math.inf, 0.0, 1.0)))


def _sign(negative_slope: float) -> Activation:
    del negative_slope

    def sign(z):
        return jnp.where(z >= 0, 1.0, -1.0).astype(z.dtype) + 0 * z

    return Activation(
        "sign", sign, alpha=0.0, pieces=(Piece(-math.inf, 0.0, 0.0, -1.0), Piece(0.0, math.inf, 0.0, 1.0))
    )


def quantized(levels: int = 4, low: float = -1.0, high: float = 1.0) -> Activation:
    """A uniform ``levels``-level staircase on ``[low, high]``: ``u`` rounds to the nearest level.

    The levels are ``low + m (high - low) / (levels - 1)``; the jumps sit half-way between two
    levels, and a point on a jump takes the upper level (right-continuous). ``levels=4`` is a
    2-bit activation; ``quantized(2, -1, 1)`` is ``sign``.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"activation: quantized levels: expected an int >= 2, got {levels!r}")
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"activation: quantized range: expected finite low < high, got low={low}, high={high}")
    values = [(low * (levels - 1 - m) + high * m) / (levels - 1) for m in range(levels)]  # symmetric in floats
    jumps = [(a + b) / 2 for a, b in zip(values, values[1:])]
    bounds = [-math.inf, *jumps, math.inf]
    pieces = [Piece(bounds[m], bounds[m + 1], 0.0, values[m]) for m in range(levels)]
    return from_pieces(f"quantized(levels={levels}, low={low:g}, high={high:g})", pieces, alpha=0.0)


def _quantized(negative_slope: float, levels: int = 4, low: float = -1.0, high: float = 1.0) -> Activation:
    del negative_slope
    return quantized(levels, low, high)


class _Registered:
    """Registry entry of a user activation: every negative slope gives that one object."""

    def __init__(self, activation: Activation):
        self.activation = activation
        self.__module__ = getattr(activation.fn, "__module__", None) or "?"

    def __call__(self, negative_slope: float) -> Activation:
        del negative_slope
        return self.activation


# name -> factory(negative_slope, **arguments) -> Activation
ACTIVATIONS: Registry[Callable[..., Activation]] = Registry("activation", group="bcd_jax.activations")
for _name, _factory in {
    "leaky_relu": _leaky_relu,
    "relu": _relu,
    "identity": _identity,
    "smooth_leaky_relu": _smooth_leaky_relu,
    "tanh_shortcut": _tanh_shortcut,
    "step": _step,
    "sign": _sign,
    "quantized": _quantized,
}.items():
    ACTIVATIONS.register(_name, _factory, module=__name__)


def register_activation(activation: Activation, *, overwrite: bool = False) -> Activation:
    """Adds a user :class:`Activation` to ``ACTIVATIONS`` under its name and returns it.

    A registered activation can be named in configs and TOML files, and recorded in
    checkpoints (a bare callable cannot: two different functions could share a name).
    """
    if not isinstance(activation, Activation):
        raise ValueError(f"activation: expected a bcd_jax.Activation, got {type(activation).__name__}")
    ACTIVATIONS.register(activation.name, _Registered(activation), overwrite=overwrite)
    return activation


_CALL = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*\((.*)\)\s*$")


def _parse_name(text: str) -> tuple[str, dict]:
    """``"quantized(levels=4, low=-1)"`` -> ``("quantized", {"levels": 4, "low": -1})``; a plain name: no arguments."""
    match = _CALL.match(text)
    if match is None:
        return text, {}
    name, body = match.group(1), match.group(2).strip()
    arguments = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(
                f"activation: cannot read {text!r}; expected name(key=value, ...), e.g. 'quantized(levels=4)'"
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"activation: {text!r}: {key} = {value.strip()!r} is not a number") from None
        arguments[key] = (
            int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
        )
    return name, arguments


def activation_name(activation) -> str | None:
    """The registry name that stands for ``activation`` exactly, or None.

    A string names itself (a parametrised name as written); an :class:`Activation` object counts
    only if it is the very object registered with :func:`register_activation` (a built-in's name
    with another function, or a bare callable, has no name that would bring it back).
    """
    if isinstance(activation, str):
        return activation if _parse_name(activation)[0] in ACTIVATIONS else None
    entry = (
        ACTIVATIONS.get(getattr(activation, "name", None))
        if isinstance(getattr(activation, "name", None), str)
        else None
    )
    if isinstance(entry, _Registered) and entry.activation is activation:
        return activation.name
    return None


def get_activation(activation: str | Callable, negative_slope: float = 0.5) -> Activation:
    """Resolves a registry name (``"relu"``, ``"quantized(levels=4)"``) or a user callable to an :class:`Activation`.

    Raises:
      ValueError: for an unknown name, bad arguments, or a callable that is not elementwise.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        name, arguments = _parse_name(activation)
        if name not in ACTIVATIONS:
            raise ValueError(
                f"activation: unknown name {activation!r}; expected one of {sorted(ACTIVATIONS)} (quantized takes "
                "arguments: 'quantized(levels=4, low=-1, high=1)') or an elementwise callable"
            )
        try:
            return ACTIVATIONS[name](negative_slope, **arguments)
        except TypeError as exc:
            raise ValueError(f"activation: {activation!r}: {exc}") from None
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
