"""Run configuration: one frozen, hashable dataclass named after the paper's symbols.

``Config`` splits into a static *structure* (shapes, variant, loop lengths; part of the
compiled program) and traced *step sizes* (gamma and the three etas; plain arrays, so a
sweep over them can be vmapped without recompiling). See ``Config.step_sizes``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp

from bcd_jax.activations import ACTIVATIONS, Activation, get_activation
from bcd_jax.algorithms import ALGORITHMS, AlgorithmSpec, get_algorithm
from bcd_jax.losses import Loss, get_loss

__all__ = ["Config", "StepSizes", "load_config", "EXPERIMENT_TABLES"]

# TOML tables that belong to the experiment scripts, not to the solver (see bcd_jax.experiments).
EXPERIMENT_TABLES = ("data", "experiment")
INNER_MODES = ("gd", "exact")
STEP_SIZE_RULES = ("fixed", "auto")
FIRST_LAYER_FORMS = ("auto", "primal", "gram")


class StepSizes(NamedTuple):
    """The traced numbers of a run (scalars of the data's dtype)."""

    gamma: Any
    eta_v: Any
    eta_w: Any
    eta_w1: Any
    weight_decay: Any = 0.0


@dataclasses.dataclass(frozen=True)
class Config:
    """Configuration of a BCD run; every field has the paper's meaning.

    Attributes:
      algorithm: ``"monotone"`` (Algorithm 1), ``"relu_skip"`` (Algorithm 3) or
        ``"relu_noskip"`` (Algorithm 3 without skips, the paper's Figure 2 ablation).
      activation: a name from ``bcd_jax.ACTIVATIONS`` or an elementwise callable, or a
        sequence of L - 1 of those, one per hidden layer (layer 1 first).
      negative_slope: LeakyReLU slope a in ``max(z, a z)``.
      depth: L, the number of weight matrices (L - 1 hidden layers).
      width: r, the width of every hidden layer.
      gamma: weight of the hidden-layer losses in F.
      eta_v: step size of the V blocks (output layer: ``eta_v``; layer j: ``gamma * eta_v``).
      eta_w: step size of W_2..W_L (hidden: ``gamma * eta_w``; output: ``eta_w``).
      eta_w1: step size of W_1 (``gamma * eta_w1``).
      k_v: K_V, gradient steps per V block per sweep.
      k_w: K_W, gradient steps on W_1 per sweep.
      sweeps: K, the number of outer iterations (sweeps).
      svb: ``(s1, s2)`` bounds of singular value bounding at init; ``None`` takes the
        bounds of the algorithm's theorem ((3/4, 5/4) for Algorithm 1, (0, 1/4) for 3).
      seed: seed used when ``fit`` is given no key.
      inner: ``"gd"`` runs the paper's K_V and K_W gradient loops; ``"exact"`` replaces each
        loop by its limit where a closed form exists (see ``bcd_jax.solver``): the W_1 block
        always, the V blocks for Algorithm 1 with an invertible activation.
      first_layer_form: how the K_W loop on W_1 is computed, ``"primal"`` (on W_1),
        ``"gram"`` (on B with ``W_1 = W_1^0 + B X``, using ``X X^T``; same iterates, fewer
        FLOPs when n < 2 d_in) or ``"auto"`` (the one with fewer FLOPs).
      loss: per-sample output loss: ``"squared"``, ``"softmax_cross_entropy"``,
        ``"logistic"``, ``"hinge"`` (see ``bcd_jax.LOSSES``) or a callable ``(pred, target) -> scalar``.
      num_classes: number of classes when classification targets are integer labels
        (default: the output weight's rows, else the largest label + 1).
      weight_decay: lambda of an L2 penalty ``lambda/2 ||W_j||_F^2`` on every weight block.
      bias: append a constant-1 input feature, which gives W_1 a bias column.
      step_size: ``"fixed"`` (the etas are the step sizes) or ``"auto"`` (each block's step is
        ``eta / (its Lipschitz constant)``, recomputed every sweep from the current W_j and V_j).
      spectral_diagnostics: record the singular values of each W_j and lambda_max(V_j V_j^T)
        every sweep (else NaN). They need LAPACK (svd, eigh); turn them off to ``jax.vmap`` a
        run over many members on CPU, where jaxlib 0.10's batched LAPACK calls can deadlock.
    """

    algorithm: str = "monotone"
    activation: str | Callable = "leaky_relu"
    negative_slope: float = 0.5
    depth: int = 5
    width: int = 30
    gamma: float = 0.2
    eta_v: float = 1.0
    eta_w: float = 1.0
    eta_w1: float = 1.0
    k_v: int = 100
    k_w: int = 100
    sweeps: int = 30
    svb: tuple[float, float] | None = None
    seed: int = 0
    inner: str = "gd"
    first_layer_form: str = "auto"
    loss: str | Callable = "squared"
    num_classes: int | None = None
    weight_decay: float = 0.0
    bias: bool = False
    step_size: str = "fixed"
    spectral_diagnostics: bool = True

    def __post_init__(self):
        for name in ("svb", "activation"):  # TOML arrays arrive as lists; keep the object hashable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)

    # -- derived views -------------------------------------------------------------------
    @property
    def algorithm_spec(self) -> AlgorithmSpec:
        return get_algorithm(self.algorithm)

    @property
    def layer_activations(self) -> tuple[Activation, ...]:
        """The activation of hidden layers 1 .. L-1."""
        return layer_activations(self.activation, self.negative_slope, self.depth)

    @property
    def activation_fn(self) -> Activation:
        """The activation shared by every layer (an error when they differ)."""
        if isinstance(self.activation, tuple):
            raise ValueError("activation: this config has one activation per layer; use layer_activations")
        return get_activation(self.activation, self.negative_slope)

    @property
    def loss_fn(self) -> Loss:
        return get_loss(self.loss)

    @property
    def svb_bounds(self) -> tuple[float, float]:
        return self.svb if self.svb is not None else self.algorithm_spec.default_svb

    def step_sizes(self, dtype=jnp.float32) -> StepSizes:
        """The traced numbers, as scalars of ``dtype``."""
        values = (self.gamma, self.eta_v, self.eta_w, self.eta_w1, self.weight_decay)
        return StepSizes(*(jnp.asarray(v, dtype) for v in values))

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


_INT_FIELDS = ("depth", "width", "k_v", "k_w", "sweeps")
_POSITIVE_FLOAT_FIELDS = ("gamma", "eta_v", "eta_w", "eta_w1")


def _validate(cfg: Config) -> None:
    get_algorithm(cfg.algorithm)
    for name in _INT_FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    for name in ("width", "sweeps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {getattr(cfg, name)}")
    for name in ("k_v", "k_w"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {getattr(cfg, name)}")
    if cfg.depth < 2:
        raise ValueError(f"depth: expected L >= 2 weight matrices (one hidden layer), got {cfg.depth}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ValueError(f"seed: expected an int, got {type(cfg.seed).__name__} {cfg.seed!r}")
    for name in _POSITIVE_FLOAT_FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    slope = cfg.negative_slope
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope < 1:
        raise ValueError(f"negative_slope: expected a number in [0, 1), got {slope!r}")
    if cfg.svb is not None:
        ok = (
            isinstance(cfg.svb, tuple)
            and len(cfg.svb) == 2
            and all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in cfg.svb)
            and 0 <= cfg.svb[0] <= cfg.svb[1]
            and cfg.svb[1] > 0
        )
        if not ok:
            raise ValueError(f"svb: expected (s1, s2) with 0 <= s1 <= s2 and s2 > 0, or None; got {cfg.svb!r}")
    activations = layer_activations(cfg.activation, cfg.negative_slope, cfg.depth)
    if cfg.inner not in INNER_MODES:
        raise ValueError(f"inner: expected one of {INNER_MODES}, got {cfg.inner!r}")
    if cfg.first_layer_form not in FIRST_LAYER_FORMS:
        raise ValueError(f"first_layer_form: expected one of {FIRST_LAYER_FORMS}, got {cfg.first_layer_form!r}")
    spec = get_algorithm(cfg.algorithm)
    if cfg.inner == "exact":
        # W_1 is solved through sigma_1^-1 (unless Algorithm 3's linear surrogate); Algorithm 1's
        # V_{j-1} blocks through sigma_j^-1 for j >= 2.
        needed = [] if spec.linear_first_layer_fit else [0]
        if not (spec.skip or spec.project_nonneg):
            needed += list(range(1, len(activations)))
        for index in needed:
            if activations[index].inverse is None:
                raise ValueError(
                    f"inner: 'exact' needs an invertible activation for {cfg.algorithm!r}, but layer {index + 1}'s "
                    f"{activations[index].name!r} has no inverse; use inner='gd'"
                )
    get_loss(cfg.loss)
    if cfg.num_classes is not None and (isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, int) or cfg.num_classes < 2):
        raise ValueError(f"num_classes: expected an int >= 2 or None, got {cfg.num_classes!r}")
    wd = cfg.weight_decay
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
        raise ValueError(f"weight_decay: expected a finite number >= 0, got {wd!r}")
    if wd > 0 and cfg.inner == "exact":
        raise ValueError("weight_decay: the closed-form blocks of inner='exact' have no penalty; use inner='gd' with weight_decay > 0")
    if not isinstance(cfg.bias, bool):
        raise ValueError(f"bias: expected True or False, got {cfg.bias!r}")
    if not isinstance(cfg.spectral_diagnostics, bool):
        raise ValueError(f"spectral_diagnostics: expected True or False, got {cfg.spectral_diagnostics!r}")
    if cfg.step_size not in STEP_SIZE_RULES:
        raise ValueError(f"step_size: expected one of {STEP_SIZE_RULES}, got {cfg.step_size!r}")
    if cfg.step_size == "auto":
        for index, act in enumerate(activations):
            if act.lipschitz is None:
                raise ValueError(
                    f"step_size: 'auto' needs the Lipschitz constant of every activation, but layer {index + 1}'s "
                    f"{act.name!r} declares none (wrap it in bcd_jax.Activation(name, fn, lipschitz=...))"
                )


def layer_activations(activation, negative_slope: float, depth: int) -> tuple[Activation, ...]:
    """Resolves ``activation`` (one, or one per hidden layer) to L - 1 activations."""
    if isinstance(activation, (tuple, list)):
        if len(activation) != depth - 1:
            raise ValueError(
                f"activation: a per-layer list needs depth - 1 = {depth - 1} entries (one per hidden layer), "
                f"got {len(activation)}"
            )
        return tuple(get_activation(a, negative_slope) for a in activation)
    return (get_activation(activation, negative_slope),) * (depth - 1)


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> Config:
    """Builds a Config from a mapping, rejecting unknown keys by name."""
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    return Config(**values)


def load_config(path: str | Path) -> Config:
    """Reads a TOML file (see ``configs/``) into a :class:`Config`.

    Top-level keys are Config fields. The tables ``[data]`` and ``[experiment]`` describe
    the experiment around the run and are read by ``bcd_jax.experiments``; anything else
    is an error that names the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no config file at {str(path)!r}")
    with path.open("rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"path: {str(path)!r} is not valid TOML: {exc}") from exc
    solver_keys = {k: v for k, v in raw.items() if k not in EXPERIMENT_TABLES}
    return config_from_dict(solver_keys, source=str(path))
