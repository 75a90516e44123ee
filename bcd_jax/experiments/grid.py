"""Grid files: an experiment and the values to try, run as few compiled programs as possible.

A grid file (TOML, see ``configs/grid_fig1.toml``) is an experiment file's tables plus a
``[grid]`` table::

    base = "paper_fig1.toml"     # optional: an experiment file, relative to this one
    [run]                        # [network], [algorithm], [hyper], [run], [stop], [data] override the base's
    sweeps = 20
    [grid]                       # every combination is one member; keys are dotted
    "hyper.gamma" = [0.1, 0.2, 0.3, 0.4]
    seed = [1, 2, 3, 4]
    "data.seed" = [0, 1]         # data keys too

(An unquoted dotted key or a sub-table, ``[grid.hyper]`` with ``gamma = [...]``, is the same; the
table's old name ``[sweep]`` is still read, with a deprecation note.) Members that differ only in
traced numbers (``seed`` and ``hyper.<field>``: :func:`traced_keys`) share one compiled program
(:func:`bcd_jax.run_grid`); any other key (``network.width``, ``algorithm.name``, ``sweeps``,
``data.seed``, ...) splits the members into groups by structure and data, one program each.
Every member is built and checked, and every group's data loaded, before the first program
compiles. A first Ctrl-C (during ``bcd-jax grid``) lets the running group finish and skips the
rest; their rows say ``interrupted``. Real data sets and the user's own files work as in
``bcd-jax run``; with a validation split (``data.validation_fraction``) each member is scored
on it, and the test set is reported.

``run_grid_file`` writes ``summary.csv`` and ``summary.jsonl`` (one row per member),
``curves.png`` and ``grid.json`` (the resolved grid).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bcd_jax.config import CONFIG_TABLES, Config, read_toml
from bcd_jax.driver.grid import GridRun, run_grid
from bcd_jax.experiments.data import experiment_data
from bcd_jax.experiments.runs import fit_kwargs
from bcd_jax.experiments.spec import DataSpec, Experiment, experiment_from_dict, load_experiment
from bcd_jax.interrupts import INTERRUPT
from bcd_jax.io import FolderLock, atomic_write, atomic_write_text, dumps_json
from bcd_jax.stopping import Status

__all__ = [
    "GRID_FILES",
    "GridSpec",
    "GridResult",
    "Member",
    "load_grid",
    "run_grid_file",
    "traced_keys",
    "traced_values",
]

GRID_FILES = ("summary.csv", "summary.jsonl", "curves.png", "grid.json")


def traced_keys(config: Config) -> tuple[str, ...]:
    """The keys that share one compiled program: ``hyper.<field>`` of the algorithm's ``Hyper``,
    and ``seed``. Every other key is structure (:meth:`bcd_jax.Config.structure`) or data."""
    return (*(f"hyper.{name}" for name in config.algorithm.Hyper._fields), "seed")


def traced_values(config: Config) -> dict[str, Any]:
    """``{key: value}`` of :func:`traced_keys` for ``config``."""
    return {**{f"hyper.{k}": v for k, v in config.hyper._asdict().items()}, "seed": config.seed}


class Member(NamedTuple):
    """One run of a grid: its index, its grid values, and its resolved experiment."""

    index: int
    values: dict[str, Any]
    experiment: Experiment


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A base experiment and the values to try (every combination is a member).

    Attributes:
      experiment: the base :class:`bcd_jax.experiments.Experiment`.
      grid: ``{key: values}`` in order; a key is dotted (``"hyper.gamma"``, ``"seed"``,
        ``"sweeps"``, ``"network.width"``, ``"algorithm.name"``, ``"data.seed"``). Given as a
        dict, stored as a tuple of ``(key, tuple(values))`` pairs.
      name: the default output folder's name and the plot title.
    """

    experiment: Experiment = Experiment()
    grid: Any = ()
    name: str = "grid"

    def __post_init__(self):
        if not isinstance(self.experiment, Experiment):
            raise ValueError(f"experiment: expected an Experiment, got {type(self.experiment).__name__}")
        items = self.grid.items() if isinstance(self.grid, dict) else self.grid
        grid = tuple((key, tuple(_freeze(v) for v in values)) for key, values in items)
        for key, values in grid:
            if not values:
                raise ValueError(f"grid: {key!r} has no values; expected a non-empty list")
        object.__setattr__(self, "grid", grid)
        self.members()  # builds and checks every combination now, not halfway through a grid

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.grid]

    def members(self) -> list[Member]:
        """Every combination of the grid's values (the last key varies fastest), each checked."""
        out = []
        for i, combo in enumerate(itertools.product(*(v for _, v in self.grid))):
            values = dict(zip(self.keys, combo))
            ordered = dict(sorted(values.items(), key=lambda kv: kv[0] != "algorithm.name"))  # the family first
            try:
                experiment = self.experiment.with_overrides(ordered)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"grid: member {i} {values}: {exc}") from None
            out.append(Member(i, values, experiment))
        return out

    def with_overrides(self, overrides: dict[str, Any]) -> GridSpec:
        """This grid with dotted-key changes to its base (``bcd-jax grid --set``); a key the grid
        varies is refused (every member would override the change)."""
        swept = sorted(set(overrides) & set(self.keys))
        if swept:
            raise ValueError(
                f"{swept[0]}: is varied in [grid] (values {dict(self.grid)[swept[0]]}); every member sets it, so "
                "change the [grid] values instead"
            )
        return GridSpec(self.experiment.with_overrides(overrides), self.grid, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "experiment": self.experiment.to_dict(),
            "grid": {k: [_jsonable(v) for v in vs] for k, vs in self.grid},
        }


def _freeze(value):
    """TOML arrays arrive as lists; members need hashable values."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


def _flatten_table(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten_table(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_GRID_FILE_KEYS = ("base", *CONFIG_TABLES, "data", "experiment", "grid", "sweep")


def load_grid(path: str | Path) -> GridSpec:
    """Reads a grid file (see the module docstring) into a :class:`GridSpec`.

    The base is the experiment file named by ``base`` (relative to the grid file) or, without
    it, the library defaults; the other tables override its fields. Unknown keys, and a missing
    or empty ``[grid]``, are errors naming the key or the table.
    """
    path = Path(path)
    raw = read_toml(path, "path")
    unknown = sorted(set(raw) - set(_GRID_FILE_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {unknown}; expected 'base' and the tables "
            f"{['[' + t + ']' for t in _GRID_FILE_KEYS[1:-1]]}"
        )
    if "sweep" in raw:
        if "grid" in raw:
            raise ValueError(f"{path}: both [grid] and [sweep]; [sweep] is the old name of [grid], keep one")
        warnings.warn(f"{path}: the table [sweep] is now called [grid]; rename it", DeprecationWarning, stacklevel=2)
        raw["grid"] = raw.pop("sweep")
    experiment = Experiment()
    if "base" in raw:
        if not isinstance(raw["base"], str):
            raise ValueError(f"{path}: base: expected the path of an experiment file, got {raw['base']!r}")
        base = path.parent / raw["base"]
        if not base.is_file():
            raise ValueError(f"{path}: base: no experiment file at {str(base)!r} (resolved relative to the grid file)")
        experiment = load_experiment(base)
    overrides: dict[str, Any] = {}
    for table in (*CONFIG_TABLES, "data", "experiment"):
        values = raw.get(table, {})
        if not isinstance(values, dict):
            raise ValueError(f"{path}: [{table}] must be a table, got {type(values).__name__} {values!r}")
        if table == "run":
            overrides.update(values)
        else:
            overrides.update({f"{table}.{k}": v for k, v in values.items()})
    try:
        if "data.path" in overrides or "data.test_path" in overrides:  # relative to this grid file
            tables = experiment.to_dict()
            tables["data"].update({k[5:]: v for k, v in overrides.items() if k.startswith("data.")})
            experiment = experiment_from_dict(tables, source=str(path), folder=path.parent)
            overrides = {k: v for k, v in overrides.items() if not k.startswith("data.")}
        experiment = experiment.with_overrides(overrides)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    table = raw.get("grid", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [grid] must be a table, got {type(table).__name__}")
    grid = _flatten_table(table)
    if not grid:
        raise ValueError(
            f"{path}: no [grid] table (or an empty one); expected one with the values to try, e.g. "
            '[grid] "hyper.gamma" = [0.1, 0.2]'
        )
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ValueError(f"{path}: [grid] {key}: expected a list of values, got {type(values).__name__} {values!r}")
    try:
        return GridSpec(experiment, grid, name=path.stem)
    except ValueError as exc:
        raise ValueError(f"{path}: [grid] {exc}") from None


@dataclasses.dataclass(frozen=True)
class GridGroup:
    """Members that share one compiled program, and its output."""

    config: Config  # the shared structure (hyper and seed at their defaults, the grid's stopping rules)
    data: DataSpec
    members: tuple[int, ...]
    run: GridRun


@dataclasses.dataclass(frozen=True)
class GridResult:
    """What :func:`run_grid_file` returns.

    Attributes:
      spec: the grid.
      rows: the summary table, one dict per member (the rows of ``summary.csv``).
      curves: per member, ``train_loss`` at sweeps ``0 .. sweeps_completed`` (entry 0 = initial).
      groups: one :class:`GridGroup` per compiled program.
      out_dir: where the files were written, or None.
    """

    spec: GridSpec
    rows: list[dict[str, Any]]
    curves: list[np.ndarray]
    groups: list[GridGroup]
    out_dir: Path | None

    @property
    def interrupted(self) -> list[int]:
        """The members a Ctrl-C kept from running (their group had not started)."""
        return [row["member"] for row in self.rows if row["status"] == "interrupted"]

    @property
    def diverged(self) -> list[int]:
        """The members whose run produced non-finite values."""
        return [row["member"] for row in self.rows if row["diverged"]]

    def best(self, metric: str | None = None) -> dict[str, Any]:
        """The row of the best member by ``metric`` (default: validation accuracy or loss if the grid
        has a validation split, else the final training loss); diverged members never win."""
        metric = metric or _default_metric(self.rows)
        higher = metric.endswith("accuracy")
        rows = [r for r in self.rows if not r["diverged"] and r.get(metric) is not None and np.isfinite(r[metric])]
        if not rows:
            raise ValueError(f"metric: no member has a finite {metric!r}")
        return (max if higher else min)(rows, key=lambda r: r[metric])


def _default_metric(rows) -> str:
    row = rows[0]
    for name in ("val_accuracy", "val_loss"):
        if row.get(name) is not None and np.isfinite(row[name]):
            return name
    return "final_train_loss"


def run_grid_file(
    spec: GridSpec | str | Path,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> GridResult:
    """Runs every member of a grid, one compiled program per group of equal structure and data.

    Args:
      spec: a :class:`GridSpec` or the path of a grid file.
      out_dir: folder for :data:`GRID_FILES`; None writes nothing.
      batch_size: at most this many members of a group at once (see :func:`bcd_jax.run_grid`).
      overwrite: allow writing into a non-empty ``out_dir`` (only the files above are replaced).

    Returns:
      A :class:`GridResult`. A member whose run produced non-finite values is flagged in its
      row (``diverged``, ``first_nonfinite_sweep``); the others are unaffected.
    """
    spec = load_grid(spec) if isinstance(spec, (str, Path)) else spec
    if not isinstance(spec, GridSpec):
        raise ValueError(f"spec: expected a GridSpec or a path, got {type(spec).__name__}")
    out_dir = None if out_dir is None else Path(out_dir)
    lock = None
    if out_dir is not None:
        _require_matplotlib()  # before the runs, not after them
        spec.experiment.config.to_dict()  # a config that cannot be recorded in grid.json fails now
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"out_dir: {str(out_dir)!r} is a file; expected a folder")
        if not overwrite and out_dir.is_dir() and any(p.name != ".bcd_jax.lock" for p in out_dir.iterdir()):
            raise FileExistsError(
                f"out_dir: {str(out_dir)!r} exists and is not empty; pass overwrite=True to write into it"
            )
        lock = FolderLock(out_dir, "out_dir").acquire()  # two grids never write one folder
    try:
        result = _run_members(spec, batch_size, out_dir)
        if out_dir is not None:
            _write_outputs(result, out_dir)
    finally:
        if lock is not None:
            lock.release()
    return result


def _run_members(spec: GridSpec, batch_size, out_dir) -> GridResult:
    members = spec.members()
    grouped: dict[tuple, list[Member]] = {}
    for m in members:
        grouped.setdefault((m.experiment.config.structure(), m.experiment.config.stop, m.experiment.data), []).append(m)
    # Every group's data is loaded (and checked) before the first program compiles.
    splits: dict[tuple, Any] = {}
    for structure, _, data in grouped:
        network = structure.network
        key = (data, network.activation, network.negative_slope, network.loss, network.num_classes)
        if key not in splits:
            splits[key] = experiment_data(Experiment(structure, data))
    rows: list[dict[str, Any] | None] = [None] * len(members)
    curves: list[np.ndarray | None] = [None] * len(members)
    groups = []
    for g, ((structure, stop, data), group) in enumerate(grouped.items()):
        if INTERRUPT.is_set():  # a first Ctrl-C: the groups not started are not run (their rows say so)
            for m in group:
                curves[m.index] = np.full(1, np.nan)
                rows[m.index] = {
                    "member": m.index,
                    "group": g,
                    **{k: _jsonable(v) for k, v in m.values.items()},
                    "status": "interrupted",
                    "diverged": False,
                }
            continue
        network = structure.network
        split = splits[(data, network.activation, network.negative_slope, network.loss, network.num_classes)]
        config = structure.replace(stop=stop)
        fields = structure.algorithm.Hyper._fields
        hyper = structure.algorithm.Hyper(
            *(np.array([float(getattr(m.experiment.config.hyper, k)) for m in group], np.float64) for k in fields)
        )
        seeds = [m.experiment.config.seed for m in group]
        run = run_grid(split.X_train, split.y_train, config, hyper, seeds, batch_size=batch_size, **fit_kwargs(split))
        groups.append(GridGroup(config, data, tuple(m.index for m in group), run))
        for i, m in enumerate(group):
            curve, summary = _member_summary(run, i, structure.sweeps)
            curves[m.index] = curve
            rows[m.index] = {
                "member": m.index,
                "group": g,
                **{k: _jsonable(v) for k, v in m.values.items()},
                **{k: v for k, v in traced_values(m.experiment.config).items() if k not in m.values},
                **summary,
                "group_seconds": run.wall_time,
                "seconds_per_member": run.wall_time / len(group),
                "compile_seconds": run.compile_time,
            }
    return GridResult(spec, rows, curves, groups, out_dir)


def _member_summary(run: GridRun, i: int, sweeps: int) -> tuple[np.ndarray, dict[str, Any]]:
    done = int(np.sum(run.completed[i]))
    status = Status(int(run.status[i]))
    curve = np.concatenate([[run.initial.train_loss[i]], run.history.train_loss[i, :done]]).astype(np.float64)
    out = {
        "status": status.name.lower(),
        "initial_train_loss": float(curve[0]),
        "final_train_loss": float(curve[-1]),
        "min_train_loss": float(np.min(curve)),
        "diverged": status == Status.DIVERGED,
        "first_nonfinite_sweep": done + 1 if status == Status.DIVERGED else None,
        "sweeps_completed": done,
        "sweeps": sweeps,
    }

    def last(name):
        values = run.history.__getattribute__(name)[i, :done]
        value = float(values[-1]) if done else float(getattr(run.initial, name)[i])
        return value if np.isfinite(value) else None

    for name in ("train_accuracy", "val_loss", "val_accuracy", "val_mse", "test_loss", "test_accuracy", "test_mse"):
        out[name] = last(name)
    return curve, out


def _write_outputs(result: GridResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in result.rows for k in row))  # members of other families add keys
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: "" if v is None else dumps_json(v) if isinstance(v, list) else v for k, v in row.items()})
    atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    lines = [dumps_json({**row, "train_loss": curve}) for row, curve in zip(result.rows, result.curves)]
    atomic_write_text(out_dir / "summary.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "grid.json", dumps_json(result.spec.to_dict(), indent=2) + "\n")
    _plot(result, out_dir / "curves.png")


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("out_dir: writing curves.png needs matplotlib; pip install 'bcd_jax[plot]'") from None


def _plot(result: GridResult, path: Path) -> None:
    """Training loss against sweeps, one line per member (log scale); a cross marks a divergence."""
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
    ax.set_ylabel("training loss (mean over samples)")
    flagged = "  (x = diverged)" if any(r["diverged"] for r in result.rows) else ""
    ax.set_title(f"{result.spec.name}: {n} members{flagged}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if n <= 24:
        ax.legend(fontsize=6, loc="upper right", ncol=1 + n // 12)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
