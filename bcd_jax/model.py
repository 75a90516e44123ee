"""The network the solver trains: initialisation (with Algorithm 2) and evaluation.

Orientation follows the paper: ``W_1: (r, d_in)``, ``W_j: (r, r)``, ``W_L: (d_out, r)``;
data are row-major batches, ``X: (n, d_in)``, so a layer's pre-activation is ``H @ W.T``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bcd_jax.config import Config

__all__ = [
    "init_params",
    "singular_value_bounding",
    "hidden_forward",
    "input_features",
    "propagate",
    "predict",
    "layer_shapes",
]


def layer_shapes(config: Config, d_in: int, d_out: int) -> tuple[tuple[int, int], ...]:
    """Shapes of ``(W_1, ..., W_L)`` for data with ``d_in`` features (plus the bias column)."""
    r = config.width
    return ((r, d_in + int(config.bias)),) + ((r, r),) * (config.depth - 2) + ((d_out, r),)


def input_features(X: jax.Array, bias: bool) -> jax.Array:
    """``X``, with a constant-1 column appended when ``bias`` (W_1's last column is then its bias)."""
    if not bias:
        return X
    return jnp.concatenate([X, jnp.ones((*X.shape[:-1], 1), X.dtype)], axis=-1)


def singular_value_bounding(w: jax.Array, s1: float, s2: float) -> jax.Array:
    """Algorithm 2: clip the singular values of ``w`` to ``[s1, s2]`` and rebuild it."""
    u, s, vt = jnp.linalg.svd(w, full_matrices=False)
    return (u * jnp.clip(s, s1, s2)) @ vt


def init_params(key: jax.Array, config: Config, d_in: int, d_out: int = 1, dtype=jnp.float32) -> tuple[jax.Array, ...]:
    """Draws ``(W_1, ..., W_L)`` as the paper's Algorithms 1 and 3 do.

    ``W_1 ~ N(0, 1/d_in)`` (``d_in`` counts the bias column when ``config.bias``) and
    ``W_j ~ N(0, 1/r)`` entrywise; singular value bounding with
    ``config.svb_bounds`` is applied to ``W_2 .. W_L`` (Algorithm 1) or ``W_2 .. W_{L-1}``
    (Algorithm 3, whose output weight stays Gaussian so that it has both signs, Lemma 5.1).
    """
    for name, value in (("d_in", d_in), ("d_out", d_out)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    spec = config.algorithm_spec
    s1, s2 = config.svb_bounds
    shapes = layer_shapes(config, d_in, d_out)
    keys = jax.random.split(key, len(shapes))
    weights = []
    for j, (k, shape) in enumerate(zip(keys, shapes), start=1):
        w = jax.random.normal(k, shape, dtype) / jnp.sqrt(jnp.asarray(shape[1], dtype))
        is_output = j == len(shapes)
        if j >= 2 and (not is_output or spec.svb_output_weight):
            w = singular_value_bounding(w, s1, s2)
        weights.append(w)
    return tuple(weights)


def hidden_forward(weights, X: jax.Array, config: Config) -> tuple[jax.Array, ...]:
    """The hidden-layer outputs ``(h_1, ..., h_{L-1})`` of the real network on ``X``.

    ``h_1 = sigma(W_1 x)``; ``h_j = sigma(W_j h_{j-1})`` (+ ``h_{j-1}`` with skips) for j >= 2.
    This is also the exact V initialisation of Algorithms 1 and 3.
    """
    features = input_features(X, config.bias)
    return propagate(weights, features, config.layer_activations, config.algorithm_spec.skip)


def propagate(weights, features: jax.Array, sigmas, skip: bool) -> tuple[jax.Array, ...]:
    """``hidden_forward`` for input features and resolved per-layer activations ``sigmas``."""
    h = sigmas[0](features @ weights[0].T)
    hidden = [h]
    for w, sigma in zip(weights[1:-1], sigmas[1:]):
        h = sigma(h @ w.T) + h if skip else sigma(h @ w.T)
        hidden.append(h)
    return tuple(hidden)


def predict(params, X: jax.Array, config: Config | None = None) -> jax.Array:
    """Evaluates ``f(X)`` for a batch ``X: (n, d_in)``; returns ``(n, d_out)``.

    For a classification loss these are the class scores (logits); ``argmax`` gives the class.
    """
    config = Config() if config is None else config
    from bcd_jax.validation import check_params  # local: validation imports model

    X = jnp.asarray(X)
    check_params(params, config, X.shape[-1] if X.ndim == 2 else None)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array (n, d_in), got shape {X.shape}")
    return hidden_forward(params, X, config)[-1] @ params[-1].T
