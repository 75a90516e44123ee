"""Run configuration, by role: the network, the algorithm, its hyperparameters, the run.

* ``network`` (:class:`bcd_jax.Network`): depth, width, activations, bias, skip form, loss;
* ``algorithm`` (an :class:`bcd_jax.algorithms.Algorithm`, or a registry name): the family and
  its structural options (inner iteration counts, inner mode, step rule);
* ``hyper``: the algorithm's traced numbers (its ``Hyper`` NamedTuple; a dict of some of its
  fields; or None for the defaults);
* ``sweeps`` and ``seed``: the run.

The static/traced split is defined here once: everything but ``hyper`` (and the init seed) is
structure, part of the compiled program (:meth:`Config.structure`); ``hyper`` is traced.
TOML files mirror the roles as tables ``[network]``, ``[algorithm]``, ``[hyper]`` and ``[run]``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from bcd_jax.activations import activation_name
from bcd_jax.algorithms import Algorithm, get_algorithm
from bcd_jax.losses import loss_name
from bcd_jax.network import Network
from bcd_jax.validation import check_int

__all__ = ["Config", "load_config", "config_from_dict", "read_toml", "CONFIG_TABLES", "EXPERIMENT_TABLES"]

# The TOML tables of a Config, and those that belong to the experiment around a run.
CONFIG_TABLES = ("network", "algorithm", "hyper", "run")
EXPERIMENT_TABLES = ("data", "experiment")
_RUN_KEYS = ("sweeps", "seed")


@dataclasses.dataclass(frozen=True)
class Config:
    """A BCD run: ``Config(network=Network(...), algorithm="monotone", hyper={...}, sweeps=30)``.

    Attributes:
      network: the :class:`bcd_jax.Network` (default: the paper's Figure 1 network).
      algorithm: an :class:`bcd_jax.algorithms.Algorithm`, a registry name from
        ``bcd_jax.ALGORITHMS`` or a table ``{"name": ..., **options}``.
      hyper: the algorithm's ``Hyper`` (e.g. :class:`bcd_jax.AkiyamaHyper`), a dict of some of
        its fields, or None (its defaults). Stored as the ``Hyper`` NamedTuple.
      sweeps: K, the number of outer iterations.
      seed: seed of the initial weights when ``fit`` is given no key.
    """

    network: Network = Network()
    algorithm: Algorithm | str = "monotone"
    hyper: Any = None
    sweeps: int = 30
    seed: int = 0

    def __post_init__(self):
        network = self.network
        if isinstance(network, dict):
            network = _from_table(Network, network, "network")
        if not isinstance(network, Network):
            raise ValueError(f"network: expected a bcd_jax.Network, got {type(network).__name__}")
        algorithm = get_algorithm(self.algorithm)
        hyper = self.hyper
        if hyper is None or isinstance(hyper, dict):
            hyper = algorithm.make_hyper(hyper)
        elif isinstance(hyper, algorithm.Hyper):
            hyper = algorithm.check_hyper(hyper)
        else:
            raise ValueError(
                f"hyper: expected {algorithm.Hyper.__name__} (the numbers of {algorithm.name!r}), a dict or None, "
                f"got {type(hyper).__name__}"
            )
        object.__setattr__(self, "network", network)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "hyper", hyper)
        object.__setattr__(self, "sweeps", check_int("sweeps", self.sweeps, low=1))
        object.__setattr__(self, "seed", check_int("seed", self.seed, low=0))
        resolved = algorithm.resolve_network(network)
        algorithm.check(resolved, hyper)
        object.__setattr__(self, "_resolved_network", resolved)

    # -- derived views -------------------------------------------------------------------
    @property
    def resolved_network(self) -> Network:
        """``network`` with its skip form decided by the algorithm where it was left unset."""
        return self._resolved_network

    def hyper_arrays(self, dtype=jnp.float32):
        """``hyper`` as scalars of ``dtype``: the traced numbers of a compiled run."""
        # NumPy scalars: a compiled program takes them as they are, without one dispatch per number.
        with np.errstate(over="ignore"):
            values = [np.asarray(v, dtype) for v in self.hyper]
        for name, value, given in zip(self.hyper._fields, values, self.hyper):
            if not np.isfinite(value):
                raise ValueError(
                    f"hyper.{name}: {given!r} does not fit in {np.dtype(dtype).name}; expected a smaller value"
                )
        return type(self.hyper)(*values)

    def structure(self) -> Config:
        """This config with the traced numbers and the seed at their defaults: what a compiled
        program depends on. Two configs with equal structures share every compiled program."""
        return dataclasses.replace(self, hyper=None, seed=0)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """This config with dotted-key changes: ``{"hyper.gamma": 0.3, "network.width": 8,
        "algorithm.k_v": 10, "algorithm.name": "relu_skip", "sweeps": 20}``.

        ``algorithm.name`` switches the algorithm and keeps the structural options it shares
        with the old one; the hyperparameters are kept when the new one has the same kind.
        """
        network = {f.name: getattr(self.network, f.name) for f in dataclasses.fields(Network)}
        algorithm = self.algorithm.describe()
        hyper = dict(self.hyper._asdict())
        run = {"sweeps": self.sweeps, "seed": self.seed}
        tables = {"network": network, "algorithm": algorithm, "hyper": hyper}
        for key, value in overrides.items():
            role, dot, field = key.partition(".")
            if not dot and key in run:
                run[key] = value
            elif dot and role in tables and field:
                if role == "network" and field not in network:
                    raise ValueError(f"{key}: unknown network field; expected one of {sorted(network)}")
                tables[role][field] = value
            else:
                raise ValueError(
                    f"{key}: unknown key; expected 'sweeps', 'seed', 'network.<field>', 'algorithm.<field>' "
                    f"(or 'algorithm.name') or 'hyper.<field>'"
                )
        explicit = {key for key in overrides if "." in key}
        if algorithm["name"] != self.algorithm.name:  # carry the options the new algorithm shares
            shared = get_algorithm(algorithm["name"]).describe()
            algorithm = {k: v for k, v in algorithm.items() if k in shared or f"algorithm.{k}" in explicit}
        new_algorithm = get_algorithm(algorithm)
        if new_algorithm.Hyper is not type(self.hyper):  # another kind of numbers: only those given
            hyper = {k: v for k, v in hyper.items() if f"hyper.{k}" in explicit}
        return Config(Network(**network), new_algorithm, hyper, **run)

    # -- a lossless description ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description from which :func:`config_from_dict` rebuilds an equal Config.

        Raises:
          ValueError: the config holds a callable (activation or loss) that has no registry
            name; register it (``bcd_jax.register_activation`` / ``bcd_jax.register_loss``) and
            name it, so that a checkpoint can tell it from any other function.
        """
        network = {}
        for field in dataclasses.fields(Network):
            value = getattr(self.network, field.name)
            if field.name == "activation":
                value = _activation_description(value)
            elif field.name == "loss":
                name = loss_name(value)
                if name is None:
                    raise ValueError(
                        f"loss: the callable {value!r} cannot be recorded losslessly (two functions can share a "
                        "name); register it with bcd_jax.register_loss(bcd_jax.Loss(name, fn, ...)) and pass it"
                    )
                value = name
            network[field.name] = value
        return {
            "network": network,
            "algorithm": self.algorithm.describe(),
            "hyper": {k: float(v) for k, v in self.hyper._asdict().items()},
            "run": {"sweeps": self.sweeps, "seed": self.seed},
        }


def _activation_description(value):
    if isinstance(value, tuple):
        return [_activation_description(v) for v in value]
    name = activation_name(value)
    if name is None:
        raise ValueError(
            f"activation: the callable {value!r} cannot be recorded losslessly (two functions can share a name); "
            "register it with bcd_jax.register_activation(bcd_jax.Activation(name, fn, ...)) and pass it"
        )
    return name


def _from_table(cls, values: dict[str, Any], where: str):
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {known}")
    return cls(**values)


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> Config:
    """Builds a Config from its description (:meth:`Config.to_dict`, or the tables of a TOML file).

    Errors name the table and key (``network.width: expected an int >= 1, got 0``).
    """
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a table, got {type(values).__name__}")
    unknown = sorted(set(values) - set(CONFIG_TABLES))
    if unknown:
        hint = ""
        flat = [k for k in unknown if k in _LEGACY_KEYS]
        if flat:
            hint = "; " + ", ".join(f"{k!r} belongs in [{_LEGACY_KEYS[k]}]" for k in flat)
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected the tables {list(CONFIG_TABLES)}{hint}")
    tables = {}
    for name in CONFIG_TABLES:
        table = values.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"{source}: [{name}] must be a table, got {type(table).__name__} {table!r}")
        tables[name] = table
    bad = sorted(set(tables["run"]) - set(_RUN_KEYS))
    if bad:
        raise ValueError(f"{source}: unknown key(s) {bad} in [run]; known keys are {list(_RUN_KEYS)}")
    where = "network"
    try:
        network = _from_table(Network, tables["network"], "network")
        where = "algorithm"
        algorithm = get_algorithm(dict(tables["algorithm"])) if tables["algorithm"] else get_algorithm("monotone")
        where = "hyper"
        return Config(network, algorithm, dict(tables["hyper"]), **tables["run"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: [{where}] {exc}") from None


# Flat keys of bcd_jax 0.1 config files -> the table they belong in now (for the error message).
_LEGACY_KEYS = {
    "depth": "network",
    "width": "network",
    "activation": "network",
    "negative_slope": "network",
    "bias": "network",
    "loss": "network",
    "num_classes": "network",
    "algorithm": "algorithm",
    "k_v": "algorithm",
    "k_w": "algorithm",
    "inner": "algorithm",
    "first_layer_form": "algorithm",
    "step_size": "algorithm",
    "spectral_diagnostics": "algorithm",
    "svb": "algorithm",
    "gamma": "hyper",
    "eta_v": "hyper",
    "eta_w": "hyper",
    "eta_w1": "hyper",
    "weight_decay": "hyper",
    "sweeps": "run",
    "seed": "run",
}


def read_toml(path: str | Path, what: str = "path") -> dict[str, Any]:
    """Reads a TOML file; a missing, unreadable or invalid file is a ``ValueError`` naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: no file at {str(path)!r}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{what}: {str(path)!r} is not valid TOML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{what}: {str(path)!r} cannot be read as a TOML file ({exc})") from None


def load_config(path: str | Path) -> Config:
    """Reads the ``[network]``, ``[algorithm]``, ``[hyper]`` and ``[run]`` tables of a TOML file.

    The tables ``[data]`` and ``[experiment]`` describe the experiment around the run (see
    ``bcd_jax.experiments``); anything else is an error that names the key.
    """
    raw = read_toml(path)
    return config_from_dict({k: v for k, v in raw.items() if k not in EXPERIMENT_TABLES}, source=str(path))
