"""The network every algorithm trains, and its output loss.

``f(x) = W_L h_{L-1}(x)`` with ``h_1 = sigma_1(W_1 x)`` and, for ``j >= 2``,
``h_j = sigma_j(W_j h_{j-1})`` (plain) or ``sigma_j(W_j h_{j-1}) + h_{j-1}`` (skip form).
Orientation follows the paper: ``W_1: (r, d_in)``, ``W_j: (r, r)``, ``W_L: (d_out, r)``; data
are row-major batches ``X: (n, d_in)``, so a layer's pre-activation is ``H @ W.T``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bcd_jax.activations import Activation, get_activation
from bcd_jax.losses import Loss, get_loss
from bcd_jax.validation import check_bool, check_float, check_int

__all__ = ["Network", "input_features", "layer_input", "hidden_forward", "network_output", "gaussian_weights"]


@dataclasses.dataclass(frozen=True)
class Network:
    """The network's shape, activations and output loss (static: part of the compiled program).

    Attributes:
      depth: L, the number of weight matrices (L - 1 hidden layers).
      width: r, the width of every hidden layer.
      activation: a name from ``bcd_jax.ACTIVATIONS``, an :class:`bcd_jax.Activation`, an
        elementwise callable, or a sequence of L - 1 of those (one per hidden layer, layer 1 first).
      negative_slope: the slope ``a`` of the LeakyReLU ``max(z, a z)`` (and of ``smooth_leaky_relu``).
      bias: ``False``; ``True``: a constant-1 input feature, which gives W_1 a bias column;
        ``"all"``: every layer's input gets that feature, so every W_j has a bias column
        (``h_j = sigma(W_j [h_{j-1}; 1])``; Zeng et al.'s networks).
      skip: the skip form ``h_j = sigma(W_j h_{j-1}) + h_{j-1}`` for ``j >= 2``. ``None`` takes
        the form the algorithm is written for (Algorithm 3: skip; Algorithm 1: plain).
      loss: per-sample output loss: ``"squared"``, ``"squared_multiclass"``, ``"softmax_cross_entropy"``,
        ``"logistic"``, ``"hinge"`` (see ``bcd_jax.LOSSES``), a :class:`bcd_jax.Loss`, or a callable
        ``(pred, target) -> scalar``.
      num_classes: classes of integer labels (default: the output weight's rows, else the
        largest label + 1).
    """

    depth: int = 5
    width: int = 30
    activation: str | Callable | tuple = "leaky_relu"
    negative_slope: float = 0.5
    bias: bool | str = False
    skip: bool | None = None
    loss: str | Callable = "squared"
    num_classes: int | None = None

    def __post_init__(self):
        if isinstance(self.activation, list):  # TOML arrays arrive as lists; keep the object hashable
            object.__setattr__(self, "activation", tuple(self.activation))
        object.__setattr__(self, "depth", check_int("depth", self.depth, low=2))
        object.__setattr__(self, "width", check_int("width", self.width, low=1))
        object.__setattr__(
            self, "negative_slope", check_float("negative_slope", self.negative_slope, low=0, high=1, high_open=True)
        )
        if self.bias != "all":
            object.__setattr__(self, "bias", check_bool("bias", self.bias))
        if self.skip is not None:
            object.__setattr__(self, "skip", check_bool("skip", self.skip))
        if self.num_classes is not None:
            object.__setattr__(self, "num_classes", check_int("num_classes", self.num_classes, low=2))
        self.layer_activations  # noqa: B018 - resolves (and so validates) every activation now
        get_loss(self.loss)

    @property
    def layer_activations(self) -> tuple[Activation, ...]:
        """The activation of hidden layers 1 .. L-1 (``layer_activations[j-1]`` is layer j's)."""
        activation = self.activation
        if isinstance(activation, tuple):
            if len(activation) != self.depth - 1:
                raise ValueError(
                    f"activation: a per-layer list needs depth - 1 = {self.depth - 1} entries (one per hidden "
                    f"layer), got {len(activation)}"
                )
            return tuple(get_activation(a, self.negative_slope) for a in activation)
        return (get_activation(activation, self.negative_slope),) * (self.depth - 1)

    @property
    def loss_fn(self) -> Loss:
        return get_loss(self.loss)

    def layer_shapes(self, d_in: int, d_out: int) -> tuple[tuple[int, int], ...]:
        """Shapes of ``(W_1, ..., W_L)`` for data with ``d_in`` features (plus the bias columns)."""
        r, extra = self.width, int(self.bias == "all")
        return ((r, d_in + int(bool(self.bias))),) + ((r, r + extra),) * (self.depth - 2) + ((d_out, r + extra),)

    def replace(self, **changes) -> Network:
        return dataclasses.replace(self, **changes)


def input_features(X: jax.Array, bias: bool | str) -> jax.Array:
    """``X``, with a constant-1 column appended when ``bias`` (W_1's last column is then its bias)."""
    if not bias:
        return X
    return jnp.concatenate([X, jnp.ones((*X.shape[:-1], 1), X.dtype)], axis=-1)


def hidden_forward(weights, features: jax.Array, network: Network) -> tuple[jax.Array, ...]:
    """The hidden-layer outputs ``(h_1, ..., h_{L-1})`` for input ``features`` (bias column included).

    ``network.skip`` must be resolved (True or False; see ``bcd_jax.Config.network``).
    """
    sigmas = network.layer_activations
    h = sigmas[0](features @ weights[0].T)
    hidden = [h]
    for w, sigma in zip(weights[1:-1], sigmas[1:]):
        z = layer_input(h, network) @ w.T
        h = sigma(z) + h if network.skip else sigma(z)
        hidden.append(h)
    return tuple(hidden)


def layer_input(h: jax.Array, network: Network) -> jax.Array:
    """The input of layer j >= 2: ``h_{j-1}``, with the constant-1 column when ``network.bias == "all"``."""
    return input_features(h, network.bias == "all")


def network_output(weights, features: jax.Array, network: Network) -> jax.Array:
    """``f`` on input ``features``: ``W_L h_{L-1}`` (``W_L [h_{L-1}; 1]`` with biases), shape ``(n, d_out)``."""
    return layer_input(hidden_forward(weights, features, network)[-1], network) @ weights[-1].T


def gaussian_weights(key: jax.Array, shapes, dtype) -> list[jax.Array]:
    """``W_j ~ N(0, 1/fan_in)`` entrywise for each ``(rows, fan_in)`` in ``shapes``."""
    keys = jax.random.split(key, len(shapes))
    return [
        jax.random.normal(k, shape, dtype) / jnp.sqrt(jnp.asarray(shape[1], dtype)) for k, shape in zip(keys, shapes)
    ]
