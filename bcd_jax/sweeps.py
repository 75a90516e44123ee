"""Hyperparameter sweeps: many BCD runs in one compiled program, ``vmap``ped over the traced numbers.

A sweep file (TOML, see ``configs/sweep_fig1.toml``) is an experiment file plus a ``[sweep]`` table::

    base = "paper_fig1.toml"     # optional: an experiment file, relative to this one
    sweeps = 20                  # Config fields here override the base's
    [data]                       # so do [data] keys
    seed = 0
    [sweep]                      # every combination (the grid) is one member
    gamma = [0.1, 0.2, 0.3, 0.4]
    seed = [1, 2, 3, 4]
    [sweep.data]                 # data keys can be swept too
    seed = [0, 1]

Members that differ only in the traced numbers (the fields of ``bcd_jax.StepSizes``: ``gamma``,
``eta_v``, ``eta_w``, ``eta_w1``, ...) and the init ``seed`` share one compiled program: it draws
each member's initial weights from its key, builds the state and runs the compiled loop of
``bcd_jax.solver``, ``jax.vmap``ped over the members (``jax.lax.map`` over chunks of ``batch_size``
members when memory is short). Any other swept key (``width``, ``depth``, ``k_v``, ``algorithm``,
``sweeps``, ``svb``, data keys, ...) splits the members into groups, one program each; programs
are cached, so running again with other values of the traced numbers compiles nothing.

On CPU the default is one member at a time inside the one program (``batch_size=1``): there
``vmap`` brings no speed (the program is bound by small matrix products either way), and with
jaxlib < 0.11 a vmapped run can hang: the batched LAPACK calls of the diagnostics and of the
initialisation (SVD, eigh) split their batch over XLA:CPU's intra-op thread pool and wait for it
from inside that pool, which deadlocks once as many of them run at once as the pool has threads
(seen on 2 cores from 3 members of the Figure 1 problem). ``batch_size > 1`` on CPU warns.

``run_sweep`` writes ``summary.csv`` and ``summary.jsonl`` (one row per member), ``train_mse.png``
(every member's training error against sweeps) and ``sweep.json`` (the resolved sweep).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import itertools
import json
import math
import os
import tempfile
import time
import tomllib
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bcd_jax.config import Config, StepSizes, config_from_dict
from bcd_jax.experiments import DataSpec, load_experiment, teacher_data
from bcd_jax.model import hidden_forward, init_params, input_features
from bcd_jax.solver import BCDState, Diagnostics, Structure, _checked_data, _Data, _run_impl

__all__ = [
    "TRACED_KEYS",
    "SweepSpec",
    "Member",
    "BatchRun",
    "GroupRun",
    "SweepResult",
    "Throughput",
    "check_data_spec",
    "load_sweep",
    "run_batch",
    "run_sweep",
    "measure_throughput",
]

# Swept keys that share one compiled program (the traced numbers and the init seed); every
# other key makes its own group.
TRACED_KEYS = (*StepSizes._fields, "seed")
_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(Config))
_CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}
_DATA_KEYS = tuple(f.name for f in dataclasses.fields(DataSpec))
# jaxlib < 0.11 runs a batched LAPACK call's batch on XLA:CPU's intra-op pool and blocks on it
# from inside that pool; several such calls at once deadlock it (see the module docstring).
_CPU_BATCHED_LAPACK_MAY_HANG = jax.__version_info__ < (0, 11)


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
      grid: ``{key: values}``, in order; a key is a Config field or ``"data.<field>"``.
        Given as a dict, stored as a tuple of ``(key, tuple(values))`` pairs.
      name: used for the default output folder and the plot title.
    """

    config: Config = Config()
    data: DataSpec = DataSpec()
    grid: Any = ()
    name: str = "sweep"

    def __post_init__(self):
        items = self.grid.items() if isinstance(self.grid, dict) else self.grid
        grid = tuple((key, tuple(_freeze(v) for v in values)) for key, values in items)
        object.__setattr__(self, "grid", grid)
        for key, values in grid:
            if key not in _CONFIG_KEYS and not (key.startswith("data.") and key[5:] in _DATA_KEYS):
                raise ValueError(
                    f"grid: unknown key {key!r}; expected a Config field {list(_CONFIG_KEYS)} "
                    f"or 'data.<field>' with a field of {list(_DATA_KEYS)}"
                )
            if not values:
                raise ValueError(f"grid: {key!r} has no values; expected a non-empty list")
        self.members()  # validates every combination now, not halfway through a sweep

    def members(self) -> list[Member]:
        """Every combination of the grid's values (the last key varies fastest)."""
        keys = [k for k, _ in self.grid]
        out = []
        for i, combo in enumerate(itertools.product(*(v for _, v in self.grid))):
            values = dict(zip(keys, combo))
            cfg = {k: v for k, v in values.items() if not k.startswith("data.")}
            dat = {k[5:]: v for k, v in values.items() if k.startswith("data.")}
            try:
                config = self.config.replace(**cfg)
                data = check_data_spec(dataclasses.replace(self.data, **dat))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"grid: member {i} {values}: {exc}") from None
            out.append(Member(i, values, config, data))
        return out


def _freeze(value):
    """TOML arrays arrive as lists; members need hashable values."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def check_data_spec(data: DataSpec) -> DataSpec:
    """Returns ``data`` if every field is an int in range (``seed >= 0``, the others ``>= 1``), else raises."""
    for name in _DATA_KEYS:
        value = getattr(data, name)
        low = 0 if name == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"data.{name}: expected an int >= {low}, got {value!r}")
    return data


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{what}: no file at {str(path)!r}")
    with path.open("rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{what}: {str(path)!r} is not valid TOML: {exc}") from None


def load_sweep(path: str | Path) -> SweepSpec:
    """Reads a sweep file (see the module docstring) into a :class:`SweepSpec`.

    The base is the experiment file named by ``base`` (relative to the sweep file; its
    ``[experiment]`` table is ignored) or, without ``base``, the library defaults. Top-level
    Config fields and the ``[data]`` table override it; ``[sweep]`` (with an optional
    ``[sweep.data]``) lists the values. Unknown keys are errors that name the key.
    """
    path = Path(path)
    raw = _read_toml(path, "path")
    allowed = {"base", "data", "sweep", *_CONFIG_KEYS}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected Config fields, 'base', [data] or [sweep]")

    config, data = Config(), DataSpec()
    if "base" in raw:
        base = path.parent / raw["base"]
        if not base.is_file():
            raise ValueError(f"{path}: base: no experiment file at {str(base)!r} (resolved relative to the sweep file)")
        config, data, _ = load_experiment(base)
    overrides = {k: v for k, v in raw.items() if k in _CONFIG_KEYS}
    config = config_from_dict({**_config_dict(config), **overrides}, source=str(path))
    data_table = _expect_table(raw.get("data", {}), f"{path}: [data]")
    bad = sorted(set(data_table) - set(_DATA_KEYS))
    if bad:
        raise ValueError(f"{path}: unknown key(s) {bad} in [data]; known keys are {list(_DATA_KEYS)}")
    try:
        data = check_data_spec(dataclasses.replace(data, **data_table))
    except ValueError as exc:
        raise ValueError(f"{path}: [data] {exc}") from None

    sweep = dict(_expect_table(raw.get("sweep", {}), f"{path}: [sweep]"))
    grid = {f"data.{k}": v for k, v in _expect_table(sweep.pop("data", {}), f"{path}: [sweep.data]").items()}
    grid = {**sweep, **grid}
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ValueError(
                f"{path}: [sweep] {key}: expected a list of values, got {type(values).__name__} {values!r}"
            )
    try:
        return SweepSpec(config, data, grid, name=path.stem)
    except ValueError as exc:
        raise ValueError(f"{path}: [sweep] {exc}") from None


def _expect_table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    return value


def _config_dict(config: Config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)}


# --------------------------------------------------------------------------------------
# One compiled program for many members
# --------------------------------------------------------------------------------------


def _member_run(seed, steps: StepSizes, X, Y, config: Config, structure: Structure):
    """One member, traceable: what ``bcd_jax.fit`` does with ``key=jax.random.key(seed)``.

    Initial weights from the key, the exact V initialisation, then the solver's compiled loop.
    """
    params = init_params(jax.random.key(seed), config, X.shape[1], Y.shape[1], dtype=X.dtype)
    state = BCDState(params, hidden_forward(params, X, config), jnp.zeros((), jnp.int32))
    return _run_impl(state, _Data(input_features(X, config.bias), Y), steps, structure, config.sweeps)


def _program(seeds, steps, X, Y, *, config: Config, structure: Structure, batch_size: int | None):
    def member(args):
        return _member_run(*args, X, Y, config, structure)

    if batch_size is None:
        return jax.vmap(member)((seeds, steps))
    if batch_size == 1:
        return lax.map(member, (seeds, steps))
    return lax.map(member, (seeds, steps), batch_size=batch_size)


_program_jit = jax.jit(_program, static_argnames=("config", "structure", "batch_size"))


@functools.lru_cache(maxsize=64)
def _compiled(config: Config, structure: Structure, batch_size, avals, x64: bool):
    """The compiled program for one shape signature (cached: new values never recompile)."""
    del x64  # part of the cache key only
    return _program_jit.lower(*avals, config=config, structure=structure, batch_size=batch_size).compile()


def _static_config(config: Config) -> Config:
    """The config with its traced numbers and seed at their defaults: what the compiled program depends on."""
    return config.replace(**{k: _CONFIG_DEFAULTS[k] for k in TRACED_KEYS})


class BatchRun(NamedTuple):
    """What :func:`run_batch` returns; every array has a leading member axis.

    Attributes:
      state: final :class:`bcd_jax.BCDState` per member (the last finite one if it diverged).
      initial: :class:`bcd_jax.Diagnostics` of each initial state.
      history: per-sweep diagnostics, ``(members, sweeps, ...)``; NaN after a divergence.
      completed: ``(members, sweeps)`` booleans, False from the first non-finite sweep on.
      compile_time: seconds spent compiling (0 when the program was cached).
      wall_time: seconds of the compiled run.
    """

    state: BCDState
    initial: Diagnostics
    history: Diagnostics
    completed: jax.Array
    compile_time: float
    wall_time: float


def run_batch(X, Y, config: Config, steps: StepSizes, seeds, *, batch_size: int | None = None) -> BatchRun:
    """Runs m BCD runs on ``(X, Y)`` in one compiled program, one per entry of ``steps`` and ``seeds``.

    Member i starts from ``bcd_jax.init_params(jax.random.key(seeds[i]), config, ...)`` and uses
    the step sizes ``StepSizes(*(f[i] for f in steps))``; ``config``'s own step sizes and seed are
    ignored. The result equals m separate ``bcd_jax.fit`` calls with those keys and step sizes.

    Args:
      X, Y: the training set, as for ``bcd_jax.fit``.
      config: the shared structure (algorithm, depth, width, K_V, K_W, sweeps, svb, ...).
      steps: a :class:`bcd_jax.StepSizes` of 1-D arrays of length m (a scalar field is shared
        by every member).
      seeds: m integer seeds of the initial weights.
      batch_size: run at most this many members at once (``jax.lax.map`` over chunks, each
        chunk ``vmap``ped). ``None``: all m at once on an accelerator, one at a time on CPU
        (see the module docstring; a value > 1 on CPU warns).
    """
    X, Y = _checked_data(X, Y, config)
    seeds = jnp.asarray(np.asarray(seeds))
    if seeds.ndim != 1 or seeds.shape[0] < 1 or not jnp.issubdtype(seeds.dtype, jnp.integer):
        raise ValueError(f"seeds: expected a non-empty 1-D array of ints, got shape {seeds.shape} dtype {seeds.dtype}")
    m = seeds.shape[0]
    if not isinstance(steps, StepSizes):
        raise ValueError(f"steps: expected a bcd_jax.StepSizes of 1-D arrays, got {type(steps).__name__}")
    steps = StepSizes(*(jnp.asarray(v, X.dtype) for v in steps))
    for name, v in zip(StepSizes._fields, steps):
        if v.shape not in ((m,), ()):
            raise ValueError(f"steps.{name}: expected shape ({m},) (one value per seed) or a scalar, got {v.shape}")
    steps = StepSizes(*(jnp.broadcast_to(v, (m,)) for v in steps))
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: expected None or an int >= 1, got {batch_size!r}")
    on_cpu = {d.platform for d in X.devices()} == {"cpu"}
    if batch_size is None and on_cpu:
        batch_size = 1
    elif on_cpu and _CPU_BATCHED_LAPACK_MAY_HANG and min(batch_size or m, m) > 1:
        warnings.warn(
            f"batch_size: {batch_size} members at once on CPU with jax {jax.__version__}: the batched LAPACK "
            "calls (SVD, eigh) of jaxlib < 0.11 can deadlock XLA:CPU's thread pool (seen from 3 members of "
            "the Figure 1 problem on 2 cores); batch_size=1 (the CPU default) is safe and about as fast",
            RuntimeWarning,
            stacklevel=2,
        )
    batch_size = None if batch_size is None or batch_size >= m else batch_size

    avals = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (seeds, steps, X, Y))
    t0 = time.perf_counter()
    x64 = jnp.result_type(float) == jnp.float64
    compiled = _compiled(_static_config(config), Structure.of(config), batch_size, avals, x64)
    compile_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(seeds, steps, X, Y))
    return BatchRun(*out, compile_time, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupRun:
    """Members that share one compiled program, and that program's output."""

    config: Config  # the shared structure (its traced numbers and seed are not used)
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


def run_sweep(spec: SweepSpec | str | Path, out_dir: str | Path | None = None, batch_size: int | None = None,
              overwrite: bool = False) -> SweepResult:
    """Runs every member of a sweep, one compiled program per group of equal shapes.

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
    if out_dir is not None:
        _require_matplotlib()  # before the runs, not after them
    if out_dir is not None and not overwrite and out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"out_dir: {str(out_dir)!r} exists and is not empty; pass overwrite=True to write into it"
        )

    members = spec.members()
    grouped: dict[tuple, list[Member]] = {}
    for m in members:
        grouped.setdefault((_static_config(m.config), Structure.of(m.config), m.data), []).append(m)

    datasets: dict[tuple, tuple[jax.Array, jax.Array]] = {}
    rows: list[dict[str, Any] | None] = [None] * len(members)
    curves: list[np.ndarray | None] = [None] * len(members)
    groups = []
    for g, ((_, _, data), group) in enumerate(grouped.items()):
        config = group[0].config
        data_key = (data, config.activation, config.negative_slope)
        if data_key not in datasets:
            datasets[data_key] = teacher_data(config, data)
        X, Y = datasets[data_key]
        steps = StepSizes(*(np.array([getattr(m.config, k) for m in group], np.float64) for k in StepSizes._fields))
        batch = run_batch(X, Y, config, steps, [m.config.seed for m in group], batch_size=batch_size)
        groups.append(GroupRun(_static_config(config), data, tuple(m.index for m in group), batch))
        host = jax.tree.map(np.asarray, (batch.initial.train_mse, batch.history.train_mse, batch.completed))
        for i, m in enumerate(group):
            curve, row = _member_summary(*(a[i] for a in host), config.sweeps)
            curves[m.index] = curve
            rows[m.index] = {
                "member": m.index,
                "group": g,
                **{k: _jsonable(v) for k, v in m.values.items()},
                **{k: getattr(m.config, k) for k in TRACED_KEYS if k not in m.values},
                **row,
                "group_seconds": batch.wall_time,
                "seconds_per_member": batch.wall_time / len(group),
                "compile_seconds": batch.compile_time,
            }
    result = SweepResult(spec, rows, curves, groups, out_dir)
    if out_dir is not None:
        _write_outputs(result, out_dir)
    return result


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
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_outputs(result: SweepResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(result.rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: "" if v is None else json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    _atomic_write(out_dir / "summary.csv", buf.getvalue().encode())
    lines = [json.dumps({**{k: _finite_or_none(v) if isinstance(v, float) else v for k, v in row.items()},
                         "train_mse": [_finite_or_none(v) for v in curve]})
             for row, curve in zip(result.rows, result.curves)]
    _atomic_write(out_dir / "summary.jsonl", ("\n".join(lines) + "\n").encode())
    spec = result.spec
    resolved = {"name": spec.name, "config": {k: _jsonable(v) for k, v in _config_dict(spec.config).items()},
                "data": dataclasses.asdict(spec.data), "grid": {k: [_jsonable(v) for v in vs] for k, vs in spec.grid}}
    _atomic_write(out_dir / "sweep.json", (json.dumps(resolved, indent=2, default=str) + "\n").encode())
    _plot(result, out_dir / "train_mse.png")


def _finite_or_none(v: float):
    """Strict JSON has no NaN or infinity: those become null."""
    return float(v) if math.isfinite(v) else None


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
    swept = [k for k, _ in result.spec.grid]
    for row, curve in zip(result.rows, result.curves):
        label = ", ".join(f"{k}={row[k]}" for k in swept) or "base"
        color = cmap(row["member"] / max(n - 1, 1))
        line, = ax.plot(np.arange(len(curve)), curve, color=color, lw=1.2, label=label)
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


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


def measure_throughput(config: Config | None = None, data: DataSpec | None = None, members: int = 16,
                       sweeps: int = 5, batch_size: int | None = None, repeats: int = 1) -> Throughput:
    """Times ``members`` runs (seeds ``config.seed + i``) in one program and one by one.

    Both sides run the same compiled member program (``vmap``ped over all members, or over a
    batch of one); each is compiled and run once before timing, and the best of ``repeats``
    timings is kept. The defaults are the paper's Figure 1 problem (``Config()``, ``DataSpec()``)
    with ``sweeps`` sweeps.
    """
    config = (Config() if config is None else config).replace(sweeps=sweeps)
    data = DataSpec() if data is None else data
    X, Y = teacher_data(config, data)
    seeds = np.arange(members) + config.seed
    steps = StepSizes(*(np.full(members, getattr(config, k)) for k in StepSizes._fields))
    one = [StepSizes(*(v[i:i + 1] for v in steps)) for i in range(members)]

    def batched():
        return run_batch(X, Y, config, steps, seeds, batch_size=batch_size).wall_time

    def sequential():
        t0 = time.perf_counter()
        for i in range(members):
            run_batch(X, Y, config, one[i], seeds[i:i + 1])
        return time.perf_counter() - t0

    batched(), run_batch(X, Y, config, one[0], seeds[:1])  # compile both programs
    return Throughput(min(batched() for _ in range(repeats)), min(sequential() for _ in range(repeats)))
