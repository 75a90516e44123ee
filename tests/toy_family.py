"""A family written against the protocol in a test: plain gradient descent on every weight as one
block (a dict, ``{"W": (W_1, ..., W_L)}``: blocks may be any pytree).

conftest imports this module, so ``"toy_gd"`` is in the registry when the common suite
(tests/test_families.py) is collected; the 8-device subprocess imports it too.
"""

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax

import bcd_jax
from bcd_jax.algorithms.base import mean_network_loss


class ToyHyper(NamedTuple):
    learning_rate: Any = 0.1


@bcd_jax.algorithms.register("toy_gd")
@dataclasses.dataclass(frozen=True)
class ToyGD(bcd_jax.Algorithm):
    steps: int = 1  # gradient steps per sweep
    Hyper: ClassVar[type] = ToyHyper

    def init(self, weights, data, network):
        return {"W": tuple(weights)}

    def step(self, blocks, data, cache, hyper, network):
        w = blocks["W"]
        for _ in range(self.steps):
            grad = jax.grad(mean_network_loss)(w, data, network)
            w = tuple(a - hyper.learning_rate * g for a, g in zip(w, grad))
        return {"W": w}, ()

    def weights(self, blocks):
        return blocks["W"]
