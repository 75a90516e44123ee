"""Hyperparameter sweeps: many BCD runs in one compiled program, mapped over the traced numbers.

A sweep file (TOML, see ``configs/sweep_fig1.toml``) is an experiment file's tables plus a ``[sweep]`` table::

    base = "paper_fig1.toml"     # optional: an experiment file, relative to this one
    [run]                        # [network], [algorithm], [hyper], [run], [data] override the base's
    sweeps = 20
    [data]
    seed = 0
    [sweep]                      # every combination (the grid) is one member; keys are dotted
    "hyper.gamma" = [0.1, 0.2, 0.3, 0.4]
    seed = [1, 2, 3, 4]
    "data.seed" = [0, 1]         # data keys can be swept too

(An unquoted dotted key or a sub-table, ``[sweep.hyper]`` with ``gamma = [...]``, is the same.)
Members that differ only in traced numbers (``seed`` and ``hyper.<field>`` for every field of
the algorithm's ``Hyper``: :func:`traced_keys`) share one compiled program: it draws each
member's initial weights from its key, builds the blocks and runs the driver's loop
(:func:`bcd_jax.driver.loop.run_loop`), mapped over the members. Any other swept key
(``network.width``, ``algorithm.k_v``, ``algorithm.name``, ``sweeps``, ``data.n``, ...) splits
the members into groups by ``(config.structure(), data)``, one program each; programs are
cached, so running again with other values of the traced numbers compiles nothing.

On CPU the default is one member at a time inside the one program (``batch_size=1``, a
``lax.map``): there ``vmap`` brings no speed (the program is bound by small matrix products
either way), and with jaxlib < 0.11 a vmapped run can hang: the batched LAPACK calls of the
diagnostics and of the initialisation (SVD, eigh) split their batch over XLA:CPU's intra-op
thread pool and wait for it from inside that pool, which deadlocks once as many of them run at
once as the pool has threads (seen on 2 cores from 3 members of the Figure 1 problem).
``batch_size > 1`` on CPU warns.

``run_sweep`` writes ``summary.csv`` and ``summary.jsonl`` (one row per member), ``train_mse.png``
(every member's training error against sweeps) and ``sweep.json`` (the resolved sweep).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import itertools
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax import lax

from bcd_jax.algorithms.base import Algorithm, Data, make_data
from bcd_jax.config import CONFIG_TABLES, Config, read_toml
from bcd_jax.driver.functional import checked_data
from bcd_jax.driver.loop import LoopOutput, run_loop
from bcd_jax.experiments import DataSpec, apply_overrides, check_override_key, load_experiment, teacher_data
from bcd_jax.io import FolderLock, atomic_write, atomic_write_text, dumps_json
from bcd_jax.network import Network

__all__ = [
    "CPU_BATCHED_LAPACK_MAY_HANG",
    "SWEEP_FILES",
    "BatchRun",
    "GroupRun",
    "Member",
    "SweepResult",
    "SweepSpec",
    "Throughput",
    "load_sweep",
    "measure_throughput",
    "program_cache_info",
    "run_batch",
    "run_sweep",
    "traced_keys",
    "traced_values",
]

# jaxlib < 0.11 runs a batched LAPACK call's batch on XLA:CPU's intra-op pool and blocks on it
# from inside that pool; several such calls at once deadlock it (see the module docstring).
CPU_BATCHED_LAPACK_MAY_HANG = tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) < (0, 11)
SWEEP_FILES = ("summary.csv", "summary.jsonl", "train_mse.png", "sweep.json")


def traced_keys(algorithm: Algorithm | Config) -> tuple[str, ...]:
    """The swept keys that share one compiled program: ``hyper.<field>`` of the algorithm's
    ``Hyper``, and ``seed``. Every other key is structure (:meth:`bcd_jax.Config.structure`)."""
    algorithm = algorithm.algorithm if isinstance(algorithm, Config) else algorithm
    return (*(f"hyper.{name}" for name in algorithm.Hyper._fields), "seed")


def traced_values(config: Config) -> dict[str, Any]:
    """``{key: value}`` of :func:`traced_keys` for ``config``."""
    return {**{f"hyper.{k}": v for k, v in config.hyper._asdict().items()}, "seed": config.seed}


# --------------------------------------------------------------------------------------
# The sweep description
# --------------------------------------------------------------------------------------


class Member(NamedTuple):
    """One run of a sweep: its index, its swept values, and its resolved Config and data."""

    index: int
    values: dict[str, Any]
    config: Config
    data: DataSpec


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A base experiment and the values to sweep (every combination is a member).

    Attributes:
      config: the base :class:`bcd_jax.Config`.
      data: the base :class:`bcd_jax.experiments.DataSpec` (the teacher problem).
      grid: ``{key: values}``, in order; a key is dotted (``"hyper.gamma"``, ``"seed"``,
        ``"sweeps"``, ``"network.width"``, ``"algorithm.k_v"``, ``"algorithm.name"``,
        ``"data.n"``). Given as a dict, stored as a tuple of ``(key, tuple(values))`` pairs.
      name: used for the default output folder and the plot title.
    """

    config: Config = Config()
    data: DataSpec = DataSpec()
    grid: Any = ()
    name: str = "sweep"

    def __post_init__(self):
        if not isinstance(self.config, Config):
            raise ValueError(f"config: expected a bcd_jax.Config, got {type(self.config).__name__}")
        if not isinstance(self.data, DataSpec):
            raise ValueError(f"data: expected a bcd_jax.experiments.DataSpec, got {type(self.data).__name__}")
        items = self.grid.items() if isinstance(self.grid, dict) else self.grid
        grid = tuple((key, tuple(_freeze(v) for v in values)) for key, values in items)
        object.__setattr__(self, "grid", grid)
        names = [value for key, values in grid if key == "algorithm.name" for value in values]
        for key, values in grid:
            if not values:
                raise ValueError(f"grid: {key!r} has no values; expected a non-empty list")
            # A key must fit the base algorithm or one of the swept ones (checked per member below).
            errors = []
            for name in [None, *names] if key != "algorithm.name" else [None]:
                try:
                    check_override_key(key, self.config, name if isinstance(name, str) else None)
                    break
                except ValueError as exc:
                    errors.append(exc)
            else:
                raise ValueError(f"grid: {errors[0]}")
        self.members()  # validates every combination now, not halfway through a sweep

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.grid]

    def members(self) -> list[Member]:
        """Every combination of the grid's values (the last key varies fastest)."""
        out = []
        for i, combo in enumerate(itertools.product(*(v for _, v in self.grid))):
            values = dict(zip(self.keys, combo))
            try:
                config, data = apply_overrides(self.config, self.data, values)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"grid: member {i} {values}: {exc}") from None
            out.append(Member(i, values, config, data))
        return out

    def with_overrides(self, overrides: dict[str, Any]) -> SweepSpec:
        """This sweep with dotted-key changes to its base (as ``bcd-jax sweep --set``).

        A swept key is refused: every member would override the change.
        """
        swept = sorted(set(overrides) & set(self.keys))
        if swept:
            raise ValueError(
                f"{swept[0]}: is swept in [sweep] (values {dict(self.grid)[swept[0]]}); every member "
                "sets it, so change the [sweep] values instead"
            )
        config, data = apply_overrides(self.config, self.data, overrides)
        return SweepSpec(config, data, self.grid, self.name)


def _freeze(value):
    """TOML arrays arrive as lists; members need hashable values."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _expect_table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    return value


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hyper": {"gamma": [...]}}`` (a sub-table or an unquoted dotted key) -> ``{"hyper.gamma": [...]}``."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_RUN_KEYS = ("sweeps", "seed")
_SWEEP_FILE_KEYS = ("base", *CONFIG_TABLES, "data", "sweep")


def load_sweep(path: str | Path) -> SweepSpec:
    """Reads a sweep file (see the module docstring) into a :class:`SweepSpec`.

    The base is the experiment file named by ``base`` (relative to the sweep file; its
    ``[experiment]`` table is ignored) or, without ``base``, the library defaults. The tables
    ``[network]``, ``[algorithm]``, ``[hyper]``, ``[run]`` and ``[data]`` override its fields;
    ``[sweep]`` lists the values. Unknown keys, and a missing or empty ``[sweep]``, are errors
    that name the key or the table.
    """
    path = Path(path)
    raw = read_toml(path, "path")
    unknown = sorted(set(raw) - set(_SWEEP_FILE_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {unknown}; expected 'base' and the tables "
            f"{['[' + t + ']' for t in _SWEEP_FILE_KEYS[1:]]}"
        )
    config, data = Config(), DataSpec()
    if "base" in raw:
        if not isinstance(raw["base"], str):
            raise ValueError(f"{path}: base: expected the path of an experiment file, got {raw['base']!r}")
        base = path.parent / raw["base"]
        if not base.is_file():
            raise ValueError(f"{path}: base: no experiment file at {str(base)!r} (resolved relative to the sweep file)")
        config, data, _ = load_experiment(base)

    overrides: dict[str, Any] = {}
    for table in (*CONFIG_TABLES, "data"):
        values = _expect_table(raw.get(table, {}), f"{path}: [{table}]")
        if table == "run":
            bad = sorted(set(values) - set(_RUN_KEYS))
            if bad:
                raise ValueError(f"{path}: unknown key(s) {bad} in [run]; known keys are {list(_RUN_KEYS)}")
            overrides.update(values)
        else:
            overrides.update({f"{table}.{k}": v for k, v in values.items()})
    try:
        config, data = apply_overrides(config, data, overrides)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None

    sweep = _flatten(_expect_table(raw.get("sweep", {}), f"{path}: [sweep]"))
    if not sweep:
        raise ValueError(
            f"{path}: no [sweep] table (or an empty one); expected one with the values to sweep, e.g. "
            '[sweep] "hyper.gamma" = [0.1, 0.2]'
        )
    for key, values in sweep.items():
        if not isinstance(values, list):
            raise ValueError(
                f"{path}: [sweep] {key}: expected a list of values, got {type(values).__name__} {values!r}"
            )
    try:
        return SweepSpec(config, data, sweep, name=path.stem)
    except ValueError as exc:
        raise ValueError(f"{path}: [sweep] {exc}") from None


# --------------------------------------------------------------------------------------
# One compiled program for many members
# --------------------------------------------------------------------------------------


def _program(
    seeds, hyper, data: Data, *, algorithm: Algorithm, network: Network, num_sweeps: int, batch_size: int | None
) -> LoopOutput:
    """Every member: what ``bcd_jax.fit`` does with ``key=jax.random.key(seed)`` and that member's hyper."""
    d_in, d_out = data.X.shape[1] - int(network.bias), data.Y.shape[1]
    cache = algorithm.prepare(data, network)  # data-only: once, shared by every member

    def member(args):
        seed, h = args
        weights = algorithm.init_weights(jax.random.key(seed), network, d_in, d_out, data.X.dtype)
        blocks = algorithm.init(weights, data, network)
        return run_loop(blocks, cache, data, h, algorithm=algorithm, network=network, num_sweeps=num_sweeps)

    if batch_size is None:
        return jax.vmap(member)((seeds, hyper))
    if batch_size == 1:
        return lax.map(member, (seeds, hyper))
    return lax.map(member, (seeds, hyper), batch_size=batch_size)


_program_jit = jax.jit(_program, static_argnames=("algorithm", "network", "num_sweeps", "batch_size"))


@functools.lru_cache(maxsize=64)
def _compiled(algorithm: Algorithm, network: Network, num_sweeps: int, batch_size, avals, x64: bool):
    """The compiled program for one structure and shape signature (cached: new values never recompile)."""
    del x64  # part of the cache key only
    return _program_jit.lower(
        *avals, algorithm=algorithm, network=network, num_sweeps=num_sweeps, batch_size=batch_size
    ).compile()


def program_cache_info():
    """Hits and misses of the cache of compiled sweep programs (``functools.lru_cache`` statistics)."""
    return _compiled.cache_info()


def clear_compiled() -> None:
    """Drops the cached compiled sweep programs (see ``bcd_jax.clear_caches``)."""
    _compiled.cache_clear()


class BatchRun(NamedTuple):
    """What :func:`run_batch` returns; every array has a leading member axis.

    Attributes:
      blocks: the algorithm's final blocks per member (the last finite ones if it diverged).
      initial: the algorithm's diagnostics of each initial state.
      history: per-sweep diagnostics, ``(members, sweeps, ...)``; NaN after a divergence.
      completed: ``(members, sweeps)`` booleans, False from the first non-finite sweep on.
      blocks_finite: ``(members, sweeps, number of blocks)``: which blocks each sweep left finite.
      movement: ``(members, sweeps)``: each sweep's squared step length over every block array
        (NaN after a divergence; see :mod:`bcd_jax.rates`).
      compile_time: seconds spent compiling (0 when the program was cached).
      wall_time: seconds of the compiled run.
    """

    blocks: Any
    initial: Any
    history: Any
    completed: jax.Array
    blocks_finite: jax.Array
    movement: jax.Array
    compile_time: float
    wall_time: float


def _checked_hyper(hyper, config: Config, m: int, dtype):
    """``hyper`` (the Hyper of 1-D arrays or scalars) as ``(m,)`` arrays of ``dtype``, each member checked."""
    algorithm, network = config.algorithm, config.resolved_network
    kind = algorithm.Hyper
    if not isinstance(hyper, kind):
        raise ValueError(
            f"hyper: expected a {kind.__name__} (the numbers of {algorithm.name!r}) of 1-D arrays, one "
            f"value per seed, got {type(hyper).__name__}"
        )
    columns = []
    for name, value in zip(kind._fields, hyper):
        column = np.asarray(value, dtype=np.float64)
        if column.shape not in ((m,), ()):
            raise ValueError(
                f"hyper.{name}: expected shape ({m},) (one value per seed) or a scalar, got {column.shape}"
            )
        columns.append(np.broadcast_to(column, (m,)))
    for i in range(m):
        try:
            checked = algorithm.check_hyper(kind(*(float(c[i]) for c in columns)))
            algorithm.check(network, checked)
        except ValueError as exc:
            raise ValueError(f"hyper (member {i}): {exc}") from None
    with np.errstate(over="ignore"):
        cast = [c.astype(dtype) for c in columns]
    for name, column, given in zip(kind._fields, cast, columns):
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            raise ValueError(
                f"hyper.{name}: {float(given[bad[0]])!r} (member {bad[0]}) does not fit in "
                f"{np.dtype(dtype).name}; expected a smaller value"
            )
    return kind(*cast)


def _checked_seeds(seeds) -> np.ndarray:
    given = np.asarray(seeds)
    if given.ndim != 1 or given.shape[0] < 1 or not np.issubdtype(given.dtype, np.integer):
        raise ValueError(f"seeds: expected a non-empty 1-D array of ints, got shape {given.shape} dtype {given.dtype}")
    if np.any(given < 0):
        raise ValueError(f"seeds: expected ints >= 0, got {int(given.min())}")
    # The int type jax.random.key gives a Python int (int32 unless x64): the same keys as fit's.
    dtype = jnp.asarray(0).dtype
    seeds = given.astype(dtype)
    if not np.array_equal(seeds, given):
        raise ValueError(
            f"seeds: expected ints that fit in {dtype.name} (enable jax x64 for larger ones), got {int(given.max())}"
        )
    return seeds


def run_batch(X, Y, config: Config, hyper, seeds, *, batch_size: int | None = None) -> BatchRun:
    """Runs m BCD runs on ``(X, Y)`` in one compiled program, one per entry of ``hyper`` and ``seeds``.

    Member i starts from ``config.algorithm.init_weights(jax.random.key(seeds[i]), ...)`` and uses
    the numbers ``Hyper(*(f[i] for f in hyper))``; ``config``'s own hyper and seed are ignored.
    The result equals m separate ``bcd_jax.fit`` calls with those keys and numbers (the
    host-side look at the initial weights, ``algorithm.check_initial_weights``, is not made).

    Args:
      X, Y: the training set, as for ``bcd_jax.fit``.
      config: the shared structure (network, algorithm, sweeps).
      hyper: the algorithm's ``Hyper`` (e.g. :class:`bcd_jax.AkiyamaHyper`) of 1-D arrays of
        length m (a scalar field is shared by every member).
      seeds: m integer seeds of the initial weights.
      batch_size: run at most this many members at once (``jax.lax.map`` over chunks, each
        chunk ``vmap``ped). ``None``: all m at once on an accelerator, one at a time on CPU
        (see the module docstring; a value > 1 on CPU warns).
    """
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    X, Y = checked_data(X, Y, config)
    seeds = _checked_seeds(seeds)
    m = seeds.shape[0]
    hyper = _checked_hyper(hyper, config, m, X.dtype)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: expected None or an int >= 1, got {batch_size!r}")
    on_cpu = {d.platform for d in X.devices()} == {"cpu"}
    if batch_size is None and on_cpu:
        batch_size = 1
    elif on_cpu and CPU_BATCHED_LAPACK_MAY_HANG and min(batch_size or m, m) > 1:
        warnings.warn(
            f"batch_size: {batch_size} members at once on CPU with jaxlib {jaxlib.__version__}: the batched LAPACK "
            "calls (SVD, eigh) of jaxlib < 0.11 can deadlock XLA:CPU's thread pool (seen from 3 members of "
            "the Figure 1 problem on 2 cores); batch_size=1 (the CPU default) is safe and about as fast",
            RuntimeWarning,
            stacklevel=2,
        )
    batch_size = None if batch_size is None or batch_size >= m else batch_size

    network = config.resolved_network
    data = make_data(X, Y, network)
    avals = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (seeds, hyper, data))
    x64 = jnp.result_type(float) == jnp.float64
    t0 = time.perf_counter()
    compiled = _compiled(config.algorithm, network, config.sweeps, batch_size, avals, x64)
    compile_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(seeds, hyper, data))
    return BatchRun(*out, compile_time, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupRun:
    """Members that share one compiled program, and that program's output."""

    config: Config  # the shared structure (config.structure(): hyper and seed at their defaults)
    data: DataSpec
    members: tuple[int, ...]
    batch: BatchRun


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` returns.

    Attributes:
      spec: the sweep.
      rows: the summary table, one dict per member (the rows of ``summary.csv``).
      curves: per member, ``train_mse`` at sweeps ``0 .. sweeps_completed`` (entry 0 = initial).
      groups: one :class:`GroupRun` per compiled program.
      out_dir: where the files were written, or None.
    """

    spec: SweepSpec
    rows: list[dict[str, Any]]
    curves: list[np.ndarray]
    groups: list[GroupRun]
    out_dir: Path | None

    @property
    def diverged(self) -> list[int]:
        """The members whose run produced non-finite values."""
        return [row["member"] for row in self.rows if row["diverged"]]


def run_sweep(
    spec: SweepSpec | str | Path,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> SweepResult:
    """Runs every member of a sweep, one compiled program per group of equal structure and data.

    Args:
      spec: a :class:`SweepSpec` or the path of a sweep file.
      out_dir: folder for ``summary.csv``, ``summary.jsonl``, ``train_mse.png`` and
        ``sweep.json``; None writes nothing.
      batch_size: at most this many members of a group run at once (see :func:`run_batch`).
      overwrite: allow writing into a non-empty ``out_dir`` (only the files above are replaced).

    Returns:
      A :class:`SweepResult`. A member whose run produced non-finite values is flagged in its
      row (``diverged``, ``first_nonfinite_sweep``); the others are unaffected.
    """
    spec = load_sweep(spec) if isinstance(spec, (str, Path)) else spec
    if not isinstance(spec, SweepSpec):
        raise ValueError(f"spec: expected a SweepSpec or a path, got {type(spec).__name__}")
    out_dir = None if out_dir is None else Path(out_dir)
    lock = None
    if out_dir is not None:
        _require_matplotlib()  # before the runs, not after them
        spec.config.to_dict()  # a config that cannot be recorded in sweep.json fails now, not after the runs
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"out_dir: {str(out_dir)!r} is a file; expected a folder")
        if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
            raise FileExistsError(
                f"out_dir: {str(out_dir)!r} exists and is not empty; pass overwrite=True to write into it"
            )
        lock = FolderLock(out_dir, "out_dir").acquire()  # two sweeps never write one folder
    try:
        result = _run_members(spec, batch_size, out_dir)
        if out_dir is not None:
            _write_outputs(result, out_dir)
    finally:
        if lock is not None:
            lock.release()
    return result


def _run_members(spec: SweepSpec, batch_size, out_dir) -> SweepResult:
    members = spec.members()
    grouped: dict[tuple, list[Member]] = {}
    for m in members:
        grouped.setdefault((m.config.structure(), m.data), []).append(m)

    datasets: dict[tuple, tuple[jax.Array, jax.Array]] = {}
    rows: list[dict[str, Any] | None] = [None] * len(members)
    curves: list[np.ndarray | None] = [None] * len(members)
    groups = []
    for g, ((structure, data), group) in enumerate(grouped.items()):
        network = structure.network
        data_key = (data, network.activation, network.negative_slope)
        if data_key not in datasets:
            datasets[data_key] = teacher_data(structure, data)
        X, Y = datasets[data_key]
        fields = structure.algorithm.Hyper._fields
        hyper = structure.algorithm.Hyper(
            *(np.array([float(getattr(m.config.hyper, k)) for m in group], np.float64) for k in fields)
        )
        batch = run_batch(X, Y, structure, hyper, [m.config.seed for m in group], batch_size=batch_size)
        groups.append(GroupRun(structure, data, tuple(m.index for m in group), batch))
        host = jax.device_get((batch.initial.train_mse, batch.history.train_mse, batch.completed))
        for i, m in enumerate(group):
            curve, summary = _member_summary(*(np.asarray(a[i]) for a in host), structure.sweeps)
            curves[m.index] = curve
            rows[m.index] = {
                "member": m.index,
                "group": g,
                **{k: _jsonable(v) for k, v in m.values.items()},
                **{k: v for k, v in traced_values(m.config).items() if k not in m.values},
                **summary,
                "group_seconds": batch.wall_time,
                "seconds_per_member": batch.wall_time / len(group),
                "compile_seconds": batch.compile_time,
            }
    return SweepResult(spec, rows, curves, groups, out_dir)


def _member_summary(initial_mse, history_mse, completed, sweeps: int) -> tuple[np.ndarray, dict[str, Any]]:
    done = int(np.sum(completed))
    curve = np.concatenate([[initial_mse], history_mse[:done]]).astype(np.float64)
    return curve, {
        "initial_train_mse": float(curve[0]),
        "final_train_mse": float(curve[-1]),
        "min_train_mse": float(np.min(curve)),
        "diverged": done < sweeps,
        "first_nonfinite_sweep": done + 1 if done < sweeps else None,
        "sweeps_completed": done,
        "sweeps": sweeps,
    }


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


# --------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------


def _write_outputs(result: SweepResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in result.rows for k in row))  # members of other families add keys
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: "" if v is None else dumps_json(v) if isinstance(v, list) else v for k, v in row.items()})
    atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    lines = [dumps_json({**row, "train_mse": curve}) for row, curve in zip(result.rows, result.curves)]
    atomic_write_text(out_dir / "summary.jsonl", "\n".join(lines) + "\n")
    spec = result.spec
    resolved = {
        "name": spec.name,
        "config": spec.config.to_dict(),
        "data": dataclasses.asdict(spec.data),
        "grid": {k: [_jsonable(v) for v in vs] for k, vs in spec.grid},
    }
    atomic_write_text(out_dir / "sweep.json", dumps_json(resolved, indent=2) + "\n")
    _plot(result, out_dir / "train_mse.png")


def _require_matplotlib() -> None:
    """Raises a clear error when the plot dependency is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("out_dir: writing train_mse.png needs matplotlib; pip install 'bcd_jax[plot]'") from None


def _plot(result: SweepResult, path: Path) -> None:
    """Training error against sweeps, one line per member (log scale); a cross marks a divergence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    cmap = plt.get_cmap("viridis")
    n = len(result.rows)
    swept = result.spec.keys
    for row, curve in zip(result.rows, result.curves):
        label = ", ".join(f"{k}={row[k]}" for k in swept) or "base"
        color = cmap(row["member"] / max(n - 1, 1))
        (line,) = ax.plot(np.arange(len(curve)), curve, color=color, lw=1.2, label=label)
        if row["diverged"]:
            ax.plot([len(curve) - 1], [curve[-1]], "x", color=line.get_color(), ms=8)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("sweep (outer iteration k)")
    ax.set_ylabel("training error (mean over samples)")
    flagged = "  (x = diverged)" if any(r["diverged"] for r in result.rows) else ""
    ax.set_title(f"{result.spec.name}: {n} members{flagged}")
    ax.grid(True, which="major", alpha=0.3)
    if n <= 24:
        ax.legend(fontsize=6, loc="upper right", ncol=1 + n // 12)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


# --------------------------------------------------------------------------------------
# Throughput: one program for m members against m runs one by one
# --------------------------------------------------------------------------------------


class Throughput(NamedTuple):
    """Seconds for the same m runs, in one program and one by one (compilation excluded)."""

    batched_seconds: float
    sequential_seconds: float

    @property
    def speedup(self) -> float:
        return self.sequential_seconds / self.batched_seconds


def measure_throughput(
    config: Config | None = None,
    data: DataSpec | None = None,
    members: int = 16,
    sweeps: int = 5,
    batch_size: int | None = None,
    repeats: int = 1,
) -> Throughput:
    """Times ``members`` runs (seeds ``config.seed + i``) in one program and one by one.

    Both sides run the same compiled member program (mapped over all members, or over a
    batch of one); each is compiled and run once before timing, and the best of ``repeats``
    timings is kept. The defaults are the paper's Figure 1 problem (``Config()``, ``DataSpec()``)
    with ``sweeps`` sweeps.
    """
    config = (Config() if config is None else config).replace(sweeps=sweeps)
    data = DataSpec() if data is None else data
    X, Y = teacher_data(config, data)
    seeds = np.arange(members) + config.seed
    kind = config.algorithm.Hyper
    hyper = kind(*(np.full(members, float(v)) for v in config.hyper))
    one = [kind(*(v[i : i + 1] for v in hyper)) for i in range(members)]

    def batched():
        return run_batch(X, Y, config, hyper, seeds, batch_size=batch_size).wall_time

    def sequential():
        t0 = time.perf_counter()
        for i in range(members):
            run_batch(X, Y, config, one[i], seeds[i : i + 1])
        return time.perf_counter() - t0

    batched(), run_batch(X, Y, config, one[0], seeds[:1])  # compile both programs
    return Throughput(min(batched() for _ in range(repeats)), min(sequential() for _ in range(repeats)))
