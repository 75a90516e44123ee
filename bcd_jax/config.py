"""Run configuration, by role, and the one place that reads and writes it.

* ``network`` (:class:`bcd_jax.Network`): depth, width, activations, bias, skip form, loss;
* ``algorithm`` (an :class:`bcd_jax.Algorithm`, or a registry name): the family and its
  structural options (inner iteration counts, inner mode, step rule);
* ``hyper``: the family's traced numbers (its ``Hyper`` NamedTuple, a dict of some of its
  fields, or None for the defaults);
* ``sweeps`` and ``seed``: the run; ``stop`` (:class:`bcd_jax.Stop`): its stopping rules.

The static/traced split is defined here once: everything but ``hyper``, ``stop`` and the seed is
structure, part of the compiled program (:meth:`Config.structure`). TOML files mirror the roles
as tables ``[network]``, ``[algorithm]``, ``[hyper]``, ``[run]`` and ``[stop]``.

This module is also the one configuration layer of the package: dotted keys
(``hyper.gamma``, ``network.width``, ``sweeps``; :func:`apply_dotted`, :meth:`Config.with_overrides`),
``KEY=VALUE`` assignments (:func:`parse_assignments`) and TOML (:func:`read_toml`,
:func:`dumps_toml`) are handled here for runs, grids and resumed runs alike.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from bcd_jax.activations import activation_name
from bcd_jax.algorithms import Algorithm, get_algorithm
from bcd_jax.losses import loss_name
from bcd_jax.network import Network
from bcd_jax.stopping import Stop
from bcd_jax.validation import check_int

__all__ = [
    "Config",
    "CONFIG_TABLES",
    "RUN_KEYS",
    "apply_dotted",
    "config_from_dict",
    "dumps_toml",
    "flatten",
    "load_config",
    "parse_assignments",
    "parse_value",
    "read_toml",
]

CONFIG_TABLES = ("network", "algorithm", "hyper", "run", "stop")
RUN_KEYS = ("sweeps", "seed")


@dataclasses.dataclass(frozen=True)
class Config:
    """A BCD run: ``Config(network=Network(...), algorithm="monotone", hyper={...}, sweeps=30)``.

    Attributes:
      network: the :class:`bcd_jax.Network` (default: the paper's Figure 1 network).
      algorithm: an :class:`bcd_jax.Algorithm`, a registry name from ``bcd_jax.ALGORITHMS`` or
        a table ``{"name": ..., **options}``.
      hyper: the algorithm's ``Hyper`` (e.g. :class:`bcd_jax.AkiyamaHyper`), a dict of some of
        its fields, or None (its defaults). Stored as the ``Hyper`` NamedTuple of floats.
      sweeps: K, the budget of outer iterations.
      seed: seed of the initial weights when ``fit`` is given no key.
      stop: stopping rules (:class:`bcd_jax.Stop`, or a dict of its fields); none by default.
    """

    network: Network = Network()
    algorithm: Algorithm | str = "monotone"
    hyper: Any = None
    sweeps: int = 30
    seed: int = 0
    stop: Stop = Stop()

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
            hyper = algorithm.make_hyper(hyper._asdict())
        else:
            raise ValueError(
                f"hyper: expected {algorithm.Hyper.__name__} (the numbers of {algorithm.name!r}), a dict or None, "
                f"got {type(hyper).__name__}"
            )
        stop = self.stop
        if isinstance(stop, dict):
            stop = _from_table(Stop, stop, "stop")
        if not isinstance(stop, Stop):
            raise ValueError(f"stop: expected a bcd_jax.Stop, a dict of its fields or None, got {type(stop).__name__}")
        object.__setattr__(self, "network", network)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "hyper", hyper)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "sweeps", check_int("sweeps", self.sweeps, low=1))
        object.__setattr__(self, "seed", check_int("seed", self.seed, low=0))
        object.__setattr__(self, "_resolved_network", algorithm.resolve(network, hyper))

    # -- derived views -------------------------------------------------------------------
    @property
    def resolved_network(self) -> Network:
        """``network`` with what the algorithm decides (the skip form) filled in."""
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
        """This config with the traced numbers, the stopping rules and the seed at their defaults:
        what a compiled program depends on. Two configs with equal structures share every program."""
        return dataclasses.replace(self, hyper=None, seed=0, stop=Stop())

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """This config with dotted-key changes: ``{"hyper.gamma": 0.3, "network.width": 8,
        "algorithm.k_v": 10, "algorithm.name": "relu_skip", "sweeps": 20, "stop.patience": 5}``.

        ``algorithm.name`` switches the family and keeps the structural options and the
        hyperparameters the two families share (by name). Errors name the key.
        """
        tables = self._tables(lossless=False)  # an unnamed callable stays in place: fit takes it without a checkpoint
        return config_from_dict(apply_dotted(tables, overrides, config_fields), source="overrides")

    # -- a lossless description ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-ready description from which :func:`config_from_dict` rebuilds an equal Config.

        Raises:
          ValueError: the config holds a callable (activation or loss) that has no registry
            name; register it (``bcd_jax.register_activation`` / ``bcd_jax.register_loss``) and
            name it, so that a checkpoint can tell it from any other function.
        """
        return self._tables(lossless=True)

    def _tables(self, lossless: bool) -> dict[str, Any]:
        """:meth:`to_dict`; with ``lossless=False`` an unnamed callable is kept as it is instead of refused."""
        network = {}
        for field in dataclasses.fields(Network):
            value = getattr(self.network, field.name)
            if field.name == "activation":
                value = _activation_description(value, lossless)
            elif field.name == "loss":
                name = loss_name(value)
                if name is None and not lossless:
                    name = value
                elif name is None:
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
            "stop": self.stop.to_dict(),
        }


def _activation_description(value, lossless: bool = True):
    if isinstance(value, tuple):
        return [_activation_description(v, lossless) for v in value]
    name = activation_name(value)
    if name is None and not lossless:
        return value
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


def config_from_dict(values: dict[str, Any], *, source: str = "config", module: str | None = None) -> Config:
    """Builds a Config from its description (:meth:`Config.to_dict`, or the tables of a TOML file).

    Errors name the table and key (``config.toml: [network] width: expected an int >= 1, got 0``).
    ``module`` is the module that registered the algorithm, when the description was recorded
    (a checkpoint's), for the message if that name is unknown here.
    """
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a table, got {type(values).__name__}")
    unknown = sorted(set(values) - set(CONFIG_TABLES))
    if unknown:
        hint = ""
        flat = [k for k in unknown if k in _TABLE_OF]
        if flat:
            hint = "; " + ", ".join(f"{k!r} belongs in [{_TABLE_OF[k]}]" for k in flat)
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected the tables {list(CONFIG_TABLES)}{hint}")
    tables = {}
    for name in CONFIG_TABLES:
        table = values.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"{source}: [{name}] must be a table, got {type(table).__name__} {table!r}")
        tables[name] = table
    bad = sorted(set(tables["run"]) - set(RUN_KEYS))
    if bad:
        raise ValueError(f"{source}: unknown key(s) {bad} in [run]; known keys are {list(RUN_KEYS)}")
    try:
        run = {
            "sweeps": check_int("sweeps", tables["run"].get("sweeps", 30), low=1),
            "seed": check_int("seed", tables["run"].get("seed", 0), low=0),
        }
    except ValueError as exc:
        raise ValueError(f"{source}: [run] {exc}") from None
    where = "network"
    try:
        network = _from_table(Network, tables["network"], "network")
        where = "algorithm"
        description = dict(tables["algorithm"]) or {"name": "monotone"}
        algorithm = get_algorithm(description, module=module)
        where = "stop"
        stop = _from_table(Stop, tables["stop"], "stop")
        where = "hyper"
        return Config(network, algorithm, dict(tables["hyper"]), stop=stop, **run)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: [{where}] {exc}") from None


# Fields of 0.1's flat config files -> the table they belong in (for the error message).
_TABLE_OF = {
    **{k: "network" for k in ("depth", "width", "activation", "negative_slope", "bias", "loss", "num_classes")},
    **{k: "algorithm" for k in ("k_v", "k_w", "inner", "first_layer_form", "step_size", "spectral_diagnostics")},
    **{k: "hyper" for k in ("gamma", "eta_v", "eta_w", "eta_w1", "weight_decay")},
    "svb": "algorithm",
    "algorithm": "algorithm",
    "sweeps": "run",
    "seed": "run",
}


def load_config(path: str | Path) -> Config:
    """Reads the run's tables of a TOML file (``[data]``, ``[experiment]`` and ``[grid]`` belong
    to the experiment around the run, :mod:`bcd_jax.experiments`, and are skipped here)."""
    raw = read_toml(path)
    return config_from_dict(
        {k: v for k, v in raw.items() if k in CONFIG_TABLES or k not in _EXPERIMENT_TABLES}, source=str(path)
    )


_EXPERIMENT_TABLES = ("data", "experiment", "grid", "base")


# --------------------------------------------------------------------------------------
# Dotted keys
# --------------------------------------------------------------------------------------


def config_fields(tables: dict[str, Any], table: str) -> list[str] | None:
    """The fields a dotted key may name in ``table`` of a Config description (None: not a Config table)."""
    if table == "network":
        return [f.name for f in dataclasses.fields(Network)]
    if table == "algorithm":
        return ["name", *(k for k in get_algorithm(tables["algorithm"]).describe() if k != "name")]
    if table == "hyper":
        return list(get_algorithm(tables["algorithm"]).Hyper._fields)
    if table == "run":
        return list(RUN_KEYS)
    if table == "stop":
        return [f.name for f in dataclasses.fields(Stop)]
    return None


def _key_forms(tables) -> str:
    forms = ", ".join(f"'{t}.<field>'" for t in tables)
    return f"'sweeps', 'seed', {forms} (or 'algorithm.name')"


def apply_dotted(
    tables: dict[str, Any], overrides: dict[str, Any], fields: Callable[[dict, str], list[str] | None]
) -> dict[str, Any]:
    """``tables`` (a nested description) with dotted-key ``overrides`` applied; a new dict.

    ``fields(tables, table)`` lists what each table may hold. ``sweeps`` and ``seed`` are short
    for ``run.sweeps`` and ``run.seed``. ``algorithm.name`` is applied first: the new family
    keeps the structural options and the hyperparameters it shares with the old one (by name);
    every other key is then checked against the (new) family's fields. An unknown key is a
    ``ValueError`` naming it, with the dotted key a bare field name belongs to as a hint.
    """
    tables = copy.deepcopy(tables)
    if not isinstance(overrides, dict):
        raise ValueError(f"overrides: expected a dict of dotted keys, got {type(overrides).__name__}")
    name = overrides.get("algorithm.name")
    if name is not None and "algorithm" in tables and name != tables["algorithm"].get("name"):
        new = get_algorithm(name)  # an unknown name is named here
        options = new.describe()
        tables["algorithm"] = {"name": name, **{k: v for k, v in tables["algorithm"].items() if k in options}}
        tables["algorithm"]["name"] = name
        tables["hyper"] = {k: v for k, v in tables.get("hyper", {}).items() if k in new.Hyper._fields}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ValueError(f"key: expected a string such as 'hyper.gamma', got {type(key).__name__} {key!r}")
        table, dot, field = key.partition(".")
        if not dot and key in RUN_KEYS:
            table, field = "run", key
        known = fields(tables, table)
        if known is None or not field:
            hints = [f"{t}.{key}" for t in tables if key in (fields(tables, t) or [])]
            hint = f" (did you mean {' or '.join(repr(h) for h in hints)}?)" if hints else ""
            raise ValueError(f"{key}: unknown key; expected {_key_forms(tables)}{hint}")
        if field not in known:
            raise ValueError(f"{key}: unknown field of [{table}]; expected one of {known}")
        tables.setdefault(table, {})[field] = value
    return tables


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hyper": {"gamma": 0.2}}`` -> ``{"hyper.gamma": 0.2}`` (lists become tuples, for comparing)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = _frozen(value)
    return out


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------------------
# TOML and KEY=VALUE
# --------------------------------------------------------------------------------------


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


def dumps_toml(tables: dict[str, dict[str, Any]], header: str = "") -> str:
    """TOML text of ``{table: {key: value}}`` that :func:`read_toml` reads back; ``header`` becomes
    ``#`` comment lines. ``None`` values are left out (TOML has no null; they are the defaults)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for table, values in tables.items():
        if not values:
            continue
        lines += ["", f"[{table}]"]
        lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else '"' + key.replace('"', '\\"') + '"'


def _toml_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(value.item() if isinstance(value, np.generic) else value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"config: cannot write {type(value).__name__} {value!r} to TOML")


def parse_value(text: str):
    """A TOML value (``50``, ``0.3``, ``[0.5, 1.5]``, ``"gd"``, ``true``), or the plain string
    when it is not valid TOML (so ``inner=exact`` needs no quotes)."""
    text = text.strip()
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items, what: str = "--set") -> dict[str, Any]:
    """``["hyper.gamma=0.3", "sweeps=50"]`` -> ``{"hyper.gamma": 0.3, "sweeps": 50}``; keys are
    checked where they are applied (:func:`apply_dotted`)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{what}: expected key=value, got {item!r}")
        out[key] = parse_value(text)
    return out
