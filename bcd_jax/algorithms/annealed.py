"""Zeng et al.'s three-splitting for staircase activations, with every jump annealed from a ramp.

Why a family of its own. For a piecewise-constant activation (step, sign, quantised staircases)
the three-splitting's U block, ``argmin_u gamma/2 (sigma(u) - a)^2 + (rho + alpha)/2 (u - t)^2``,
is exact, but on a flat piece it does not read ``a`` at all: unless the target ``a`` that the
layer above asks for lies past the middle of a jump, the minimiser is ``u = t`` and nothing of
``a`` reaches ``W_j`` or the layers below. The V block spreads what the layer above asks for
thinly over a wide layer, so ``a`` almost never gets that far: measured on the digits (three
hidden sign layers of 256, any gamma, rho, alpha, initial scale), not one hidden unit changes
sign on any training sample in 30 sweeps, and only the output layer learns (77 % test, what a
ridge read-out of the random first-sweep codes gets).

This family trains the same network on an objective whose activation terms use a *ramped*
staircase ``sigma_r``: every jump of height ``h`` at ``t`` becomes a linear ramp over
``[t - w, t + w]`` with ``w = r g / 2`` (``g`` the smallest distance between two jumps, or
``|h|`` for a single jump), so ``r = 1`` is the clipped identity for ``quantized`` and ``sign``
(``clip(u, -1, 1)``, hard tanh) and the hard sigmoid of slope 1 for ``step``, and ``r = 0`` is
the staircase itself. The ramp starts at ``ramp`` and shrinks by ``ramp_decay`` every sweep; once
it falls below ``ramp_min`` it is exactly 0, and from there on every sweep is the plain
three-splitting of the true network (``zeng_three_splitting``, iterate for iterate). Every block
is still solved exactly: on a ramped staircase, which is continuous and piecewise linear, the U
block is the best of its pieces' clipped minimisers. Layers whose activation is not piecewise
constant (ReLU in a mixed network) keep their own activation throughout.

What is reported. The blocks hold the ramp that the NEXT sweep descends with (``ramp``, a scalar
block); ``objective`` is F at that ramp, so entry ``k`` of a history is where sweep ``k + 1``
starts. A sweep never increases the objective it descends: ``extras.end_objective`` (F at the
sweep's own ramp, after it) is at most the previous entry's ``objective``; once the ramp is 0
the objective is the true network's F and the history itself never increases. The network the
driver evaluates (``train_accuracy``, ``predict``) is always the true one, hard thresholds and
all, so the trained network is the deployed network.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from bcd_jax.activations import Activation
from bcd_jax.algorithms.base import Data
from bcd_jax.algorithms.zeng import Zeng, ZengBlocks
from bcd_jax.network import Network
from bcd_jax.validation import check_float

__all__ = ["AnnealedThreeSplitting", "AnnealedHyper", "AnnealedBlocks", "AnnealedExtras", "ramped"]


class AnnealedHyper(NamedTuple):
    """The traced numbers: Zeng's four and the ramp's schedule.

    Attributes:
      gamma, rho, alpha, weight_decay: as :class:`bcd_jax.ZengHyper` (alpha defaults to 1 here, not
        the authors' 5: what the binary study used, docs/binary-networks.md).
      ramp_decay: the ramp is multiplied by this after every sweep, in (0, 1] (1: a fixed ramp).
      ramp_min: a ramp below this is set to exactly 0 (the true staircase from then on), >= 0.
    """

    gamma: Any = 1.0
    rho: Any = 1.0
    alpha: Any = 1.0
    weight_decay: Any = 0.0
    ramp_decay: Any = 0.8
    ramp_min: Any = 0.01


class AnnealedBlocks(NamedTuple):
    """Zeng's three-splitting blocks and the ramp of the objective the next sweep descends.

    Attributes:
      W, V, U: as :class:`bcd_jax.ZengBlocks`.
      ramp: a scalar in [0, 1]: the ramp of the objective the next sweep descends (0: the true
        staircase).
    """

    W: tuple[jax.Array, ...]
    V: tuple[jax.Array, ...]
    U: tuple[jax.Array, ...]
    ramp: jax.Array


class AnnealedExtras(NamedTuple):
    """Per-sweep diagnostics.

    Attributes:
      output_loss, activation_gaps, linear_gaps: as :class:`bcd_jax.ZengExtras`, at the ramp the
        sweep descended with.
      ramp: that ramp (0: the sweep was the plain three-splitting of the true network).
      end_objective: F at that ramp after the sweep; never above the previous history entry's
        ``objective`` (F at that ramp before it).
    """

    output_loss: jax.Array
    activation_gaps: jax.Array
    linear_gaps: jax.Array
    ramp: jax.Array
    end_objective: jax.Array


class _Ramped:
    """A staircase whose jumps are linear ramps of half-width ``ramp * gap / 2`` (traced); ``ramp = 0``
    is the staircase itself (its own function and exact prox). Duck-types what the three-splitting
    reads of an activation: ``__call__`` and ``prox``."""

    def __init__(self, activation: Activation, ramp):
        pieces = activation.pieces
        self.activation = activation
        self.levels = [p.intercept for p in pieces]
        self.jumps = [p.low for p in pieces[1:]]
        self.heights = [b - a for a, b in zip(self.levels, self.levels[1:])]
        gaps = [b - a for a, b in zip(self.jumps, self.jumps[1:])]
        self.gap = min(gaps) if gaps else abs(self.heights[0])
        self.ramp = ramp

    def _width(self, dtype):
        """``(w, on)``: the ramps' half-width (kept > 0 so that nothing divides by 0) and whether it is > 0."""
        w = jnp.asarray(self.ramp, dtype) * (self.gap / 2)
        on = w > 0
        return jnp.where(on, w, jnp.asarray(1.0, dtype)), on

    def __call__(self, u):
        w, on = self._width(u.dtype)
        value = jnp.full_like(u, self.levels[0])
        for t, h in zip(self.jumps, self.heights):
            value = value + h * jnp.clip((u - (t - w)) / (2 * w), 0.0, 1.0)
        return jnp.where(on, value, self.activation(u))

    def prox(self, a, z, weight):
        """``argmin_u (sigma_r(u) - a)^2 + weight (u - z)^2`` entrywise, exactly: sigma_r is continuous
        and piecewise linear (flat levels joined by ramps), so the best of its pieces' clipped
        minimisers is the minimiser (ties to the piece further right, as ``Activation.prox``)."""
        dtype = jnp.result_type(a, z)
        w, on = self._width(dtype)
        inf = jnp.asarray(math.inf, dtype)
        best_u = best_cost = None

        def consider(u, cost):
            nonlocal best_u, best_cost
            if best_u is None:
                best_u, best_cost = u, cost
            else:
                take = cost <= best_cost
                best_u, best_cost = jnp.where(take, u, best_u), jnp.where(take, cost, best_cost)

        bounds = [-inf, *[jnp.asarray(t, dtype) for t in self.jumps], inf]
        for m, level in enumerate(self.levels):
            if m > 0:  # the ramp into level m, over [t - w, t + w]
                t, h = bounds[m], self.heights[m - 1]
                slope = h / (2 * w)
                start = t - w
                u = (slope * (a - self.levels[m - 1]) + slope * slope * start + weight * z) / (slope * slope + weight)
                u = jnp.clip(u, start, t + w)
                consider(u, (self.levels[m - 1] + slope * (u - start) - a) ** 2 + weight * (u - z) ** 2)
            low = bounds[m] + w if m > 0 else -inf
            high = bounds[m + 1] - w if m < len(self.levels) - 1 else inf
            u = jnp.clip(z, low, high)
            consider(u, (level - a) ** 2 + weight * (u - z) ** 2)
        return jnp.where(on, best_u, self.activation.prox(a, z, weight))


def ramped(activation: Activation, ramp) -> Activation | _Ramped:
    """``activation`` with its jumps ramped by ``ramp`` (in [0, 1]) if it is piecewise constant, else itself."""
    return _Ramped(activation, ramp) if activation.piecewise_constant else activation


@dataclasses.dataclass(frozen=True)
class AnnealedThreeSplitting(Zeng):
    """Zeng et al.'s three-splitting whose staircase activations start as ramps that shrink to the
    exact jumps over the sweeps (see the module docstring for why).

    Attributes:
      ramp: the ramp of the first sweep, in [0, 1] (1: every staircase starts as its clipped
        identity; 0: the plain three-splitting from the start).
      (others): Zeng's options; ``splitting`` is always ``"three"``.
    """

    ramp: float = 1.0

    Hyper: ClassVar[type] = AnnealedHyper

    def __post_init__(self):
        if self.splitting != "three":
            raise ValueError(f"splitting: the annealed family is a three-splitting; got {self.splitting!r}")
        super().__post_init__()
        object.__setattr__(self, "ramp", check_float("ramp", self.ramp, low=0, high=1))

    @property
    def paper(self) -> str:
        return "Zeng et al. (ICML 2019), three-splitting BCD, staircase jumps annealed from ramps"

    def resolve(self, network: Network, hyper: AnnealedHyper) -> Network:
        network = super().resolve(network, hyper)
        check_float("hyper.ramp_decay", hyper.ramp_decay, low=0, high=1, low_open=True)
        check_float("hyper.ramp_min", hyper.ramp_min, low=0)
        return network

    def _sigmas(self, network: Network, ramp):
        return tuple(ramped(act, ramp) for act in network.layer_activations)

    def init(self, weights, data: Data, network: Network) -> AnnealedBlocks:
        """The forward pass of the TRUE network (as Zeng's), and the first sweep's ramp."""
        blocks = super().init(weights, data, network)
        return AnnealedBlocks(blocks.W, blocks.V, blocks.U, jnp.asarray(self.ramp, data.X.dtype))

    def step(self, blocks: AnnealedBlocks, data: Data, cache, hyper: AnnealedHyper, network: Network):
        ramp = blocks.ramp
        sigmas = self._sigmas(network, ramp)
        zeng = ZengBlocks(blocks.W, blocks.V, blocks.U)
        new = self._three_splitting(zeng, data, hyper, network, sigmas)
        output, act, lin = self._gaps(new, data, network, sigmas)
        end = self._value(new, data, hyper, output, act, lin)
        following = ramp * hyper.ramp_decay
        following = jnp.where(following < hyper.ramp_min, jnp.zeros_like(following), following)
        return AnnealedBlocks(new.W, new.V, new.U, following.astype(ramp.dtype)), AnnealedExtras(
            output, act, lin, ramp, end
        )

    @staticmethod
    def _value(blocks, data, hyper, output, act, lin):
        """F / n from the gaps (Zeng's three-splitting objective)."""
        penalty = 0.5 * hyper.weight_decay * sum(jnp.sum(w * w) for w in blocks.W) / data.X.shape[0]
        return output + 0.5 * hyper.gamma * jnp.sum(act) + 0.5 * hyper.rho * jnp.sum(lin) + penalty

    def objective(self, blocks: AnnealedBlocks, data: Data, hyper: AnnealedHyper, network: Network):
        """F / n at the blocks' ramp (the objective the next sweep descends; the true F once it is 0)."""
        sigmas = self._sigmas(network, blocks.ramp)
        output, act, lin = self._gaps(ZengBlocks(blocks.W, blocks.V, blocks.U), data, network, sigmas)
        return self._value(blocks, data, hyper, output, act, lin)
