"""An algorithm family written outside bcd_jax: layer-wise gradient descent.

The blocks are the weights ``W_L, ..., W_1`` and nothing else; one sweep visits them backward
and takes ``k`` gradient steps of size ``eta`` on each, on the network's mean training loss
(plus ``weight_decay/2 ||W_j||^2``), holding the others fixed. It is a plain block coordinate
method, here to show the protocol, not to beat the built-in families.

Importing this module registers the family as ``"layerwise_gd"``, so a config, a TOML file and
a checkpoint can name it::

    PYTHONPATH=docs/examples bcd-jax run my_experiment.toml --import my_family

See docs/architecture.md ("Writing a family outside bcd_jax").
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

import bcd_jax
from bcd_jax.algorithms.base import mean_network_loss, refuse_flat_activations


class LayerwiseHyper(NamedTuple):
    """The traced numbers: new values never recompile, and a grid maps over them."""

    eta: Any = 0.5  # step size of every weight block
    weight_decay: Any = 0.0  # lambda of lambda/2 ||W_j||^2


class LayerwiseBlocks(NamedTuple):
    """The blocks, a pytree: the tuple field ``W`` gives the block names ``W_1, W_2, ...``."""

    W: tuple


class LayerwiseExtras(NamedTuple):
    """Per-sweep diagnostics: the gradient norm of each block when the sweep visited it."""

    grad_norms: jax.Array  # (L,), entry j-1 for W_j


@bcd_jax.algorithms.register("layerwise_gd")
@dataclasses.dataclass(frozen=True)
class LayerwiseGD(bcd_jax.Algorithm):
    """Layer-wise gradient descent: ``k`` steps on each ``W_j`` per sweep, output layer first.

    Attributes:
      k: gradient steps per block per sweep (structure: a new value compiles a new program).
    """

    k: int = 1

    Hyper: ClassVar[type] = LayerwiseHyper

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k: expected an int >= 1, got {self.k!r}")

    def resolve(self, network, hyper):
        network = super().resolve(network, hyper)  # hyper fields finite and >= 0; skip decided
        refuse_flat_activations(network.layer_activations, self.name)  # step/sign have no gradient
        return network

    def init(self, weights, data, network):
        return LayerwiseBlocks(tuple(weights))

    def weights(self, blocks):
        return blocks.W

    def step(self, blocks, data, cache, hyper, network):
        W = list(blocks.W)
        norms = [None] * len(W)
        for j in reversed(range(len(W))):  # W_L first, as the paper's sweeps go

            def block_objective(w, j=j):
                others = (*W[:j], w, *W[j + 1 :])
                return mean_network_loss(others, data, network) + 0.5 * hyper.weight_decay * jnp.sum(w * w)

            for _ in range(self.k):
                grad = jax.grad(block_objective)(W[j])
                W[j] = W[j] - hyper.eta * grad
            norms[j] = jnp.linalg.norm(grad)
        return LayerwiseBlocks(tuple(W)), LayerwiseExtras(jnp.stack(norms))
