"""An experiment: the run's configuration, its data, and the comparison runs — read, changed, written.

An experiment file (TOML) holds the run's tables (``[network]``, ``[algorithm]``, ``[hyper]``,
``[run]``, ``[stop]``; see :func:`bcd_jax.load_config`) and two more::

    [data]        # the teacher problem of Section 6 (bcd_jax.teacher_problem) ...
    n = 500
    d_in = 600
    teacher_width = 30
    seed = 0
    n_test = 500              # optional: held-out samples of the same teacher (test metrics)

    [data]        # ... or a real data set: a bundled one (needs scikit-learn) or your own file
    dataset = "digits"        # "digits", "breast_cancer", "diabetes"; or
    path = "my_data.csv"      # .npz (X, y), .npy, .csv/.tsv (label column), an MNIST IDX file or folder
    label = "label"           # the label column (csv), its index (npy) or the IDX labels file
    test_path = "test.csv"    # optional separate test file; else a seeded split:
    test_fraction = 0.25
    validation_fraction = 0.1 # carved out of the training part: fit's validation set
    seed = 0                  # the split's seed
    standardize = true        # features by the training part's mean and sd (default on for real data)
    labels = "check"          # "remap": map the distinct labels to 0..C-1 (documented in bcd_jax.datasets)

    [experiment]  # extra runs on the same data and initial weights, drawn dashed
    compare = ["relu_noskip"]

Dotted keys change one field (``data.seed``, ``hyper.gamma``, ``sweeps``): :meth:`Experiment.with_overrides`,
through the one configuration layer of :mod:`bcd_jax.config`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bcd_jax.algorithms import get_algorithm
from bcd_jax.config import CONFIG_TABLES, Config, apply_dotted, config_fields, config_from_dict, dumps_toml, read_toml
from bcd_jax.datasets import DATASETS
from bcd_jax.validation import check_choice, check_float, check_int

__all__ = ["DataSpec", "Experiment", "load_experiment", "experiment_from_dict", "TEACHER"]

TEACHER = "teacher"
_TEACHER_FIELDS = ("n", "d_in", "teacher_width", "d_out", "n_test")
_FILE_FIELDS = ("path", "label", "test_path", "labels", "task", "validation_fraction")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """An experiment's data: the teacher problem of Section 6, a bundled data set, or a user file.

    Attributes:
      dataset: ``"teacher"`` (``x ~ N(0, I)``, a one-hidden-layer teacher with the network's
        first activation), a name of ``bcd_jax.datasets.DATASETS``, or ``"file"`` (set by ``path``).
      path: a user data file or folder (``bcd_jax.datasets.load_dataset``); relative paths are
        relative to the experiment file.
      label: the label column of a ``.csv``/``.tsv`` (name) or ``.npy`` (index), or the labels
        file of an IDX images file.
      test_path: a separate test file of the same kind (else a ``test_fraction`` split).
      labels: ``"check"`` (labels must be 0..C-1) or ``"remap"`` (map the distinct labels to 0..C-1).
      task: ``"multiclass"``, ``"binary"`` or ``"regression"`` for a data file (None: inferred from
        the labels, see ``bcd_jax.datasets.load_dataset``); it must agree with ``network.loss``.
      n, d_in, teacher_width, d_out, n_test: the teacher problem's sizes (teacher only).
      test_fraction: the held-out share of a real data set without ``test_path``, in (0, 1).
      validation_fraction: share of the training part kept out as the validation set, in [0, 1).
      standardize: scale features by the training part's statistics (None: on for real data).
      seed: the teacher's key, or the real data set's split seed (int >= 0).
    """

    n: int = 500
    d_in: int = 600
    teacher_width: int = 30
    d_out: int = 1
    seed: int = 0
    n_test: int = 0
    dataset: str = TEACHER
    test_fraction: float = 0.25
    validation_fraction: float = 0.0
    standardize: bool | None = None
    path: str | None = None
    label: Any = None
    test_path: str | None = None
    labels: str = "check"
    task: str | None = None

    def __post_init__(self):
        for name in ("n", "d_in", "teacher_width", "d_out", "seed", "n_test"):
            low = 0 if name in ("seed", "n_test") else 1
            object.__setattr__(self, name, check_int(f"data.{name}", getattr(self, name), low=low))
        if self.path is not None:
            if not isinstance(self.path, str) or not self.path:
                raise ValueError(f"data.path: expected the path of a data file (a string), got {self.path!r}")
            if self.dataset not in (TEACHER, "file"):
                raise ValueError(f"data: give either dataset = {self.dataset!r} or path = {self.path!r}, not both")
            object.__setattr__(self, "dataset", "file")
        if self.dataset == "file" and self.path is None:
            raise ValueError("data.dataset: 'file' needs data.path, the file to read")
        check_choice("data.dataset", self.dataset, (TEACHER, "file", *sorted(DATASETS)))
        check_choice("data.labels", self.labels, ("check", "remap"))
        if self.task is not None:
            check_choice("data.task", self.task, ("multiclass", "binary", "regression"))
        object.__setattr__(
            self,
            "test_fraction",
            check_float("data.test_fraction", self.test_fraction, low=0, high=1, low_open=True, high_open=True),
        )
        object.__setattr__(
            self,
            "validation_fraction",
            check_float("data.validation_fraction", self.validation_fraction, low=0, high=1, high_open=True),
        )
        if self.standardize is not None and not isinstance(self.standardize, bool):
            raise ValueError(f"data.standardize: expected true, false or unset, got {self.standardize!r}")
        defaults = _defaults(DataSpec)
        if self.dataset != TEACHER:
            changed = [f for f in _TEACHER_FIELDS if getattr(self, f) != defaults[f]]
            if changed:
                raise ValueError(
                    f"data: {changed} describe the teacher problem; with a real data set give dataset or path, "
                    "test_fraction (or test_path), validation_fraction, standardize, labels and seed"
                )
        else:
            changed = [f for f in _FILE_FIELDS if getattr(self, f) != defaults[f]]
            changed += ["standardize"] if self.standardize else []
            if changed:
                raise ValueError(f"data: {changed} describe a data file; the teacher problem takes n, d_in, ...")
        if self.dataset not in ("file",) and (self.label is not None or self.test_path is not None):
            raise ValueError("data: label and test_path describe a data file; set data.path")

    @property
    def is_teacher(self) -> bool:
        return self.dataset == TEACHER

    def replace(self, **changes) -> DataSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what an experiment file needs)."""
        defaults = _defaults(DataSpec)
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in out.items() if v != defaults[k]}

    def resolved(self, folder: Path | None) -> DataSpec:
        """Relative file paths taken relative to ``folder`` (the experiment file's)."""
        if folder is None:
            return self
        changes = {}
        for name in ("path", "test_path"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_absolute():
                changes[name] = str(Path(folder) / value)
        if self.label is not None and isinstance(self.label, str) and self.path and _is_idx(self.path):
            if not Path(self.label).is_absolute():
                changes["label"] = str(Path(folder) / self.label)
        return self.replace(**changes) if changes else self


def _defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _is_idx(path: str) -> bool:
    name = Path(path).name
    return "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A run's :class:`bcd_jax.Config`, its :class:`DataSpec` and comparison runs (registry names
    trained on the same data and initial weights)."""

    config: Config = Config()
    data: DataSpec = DataSpec()
    compare: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.config, Config):
            raise ValueError(f"config: expected a bcd_jax.Config, got {type(self.config).__name__}")
        if not isinstance(self.data, DataSpec):
            raise ValueError(f"data: expected a DataSpec, got {type(self.data).__name__}")
        compare = self.compare
        if isinstance(compare, str) or not isinstance(compare, (list, tuple)):
            raise ValueError(f"experiment.compare: expected a list of algorithm names, got {compare!r}")
        for name in compare:
            get_algorithm(name)  # an unknown name fails here, naming the registry's names
        object.__setattr__(self, "compare", tuple(compare))

    def to_dict(self) -> dict[str, Any]:
        """Every table of the experiment file (``data`` and ``experiment`` included)."""
        tables = self.config.to_dict()
        tables["data"] = self.data.to_dict()
        tables["experiment"] = {"compare": list(self.compare)} if self.compare else {}
        return tables

    def with_overrides(self, overrides: dict[str, Any]) -> Experiment:
        """This experiment with dotted-key changes (``data.<field>``, ``experiment.compare`` and every
        key :meth:`bcd_jax.Config.with_overrides` takes). Errors name the key."""
        return experiment_from_dict(apply_dotted(self.to_dict(), overrides, experiment_fields), source="overrides")

    def dumps(self, header: str = "") -> str:
        """The experiment file (TOML) that :func:`load_experiment` reads back as this experiment."""
        tables = self.to_dict()
        if tables["algorithm"]:
            tables["algorithm"] = {"name": tables["algorithm"]["name"], **tables["algorithm"]}
        return dumps_toml(tables, header)


def experiment_fields(tables: dict[str, Any], table: str) -> list[str] | None:
    """What a dotted key may name in each table of an experiment description."""
    if table == "data":
        return [f.name for f in dataclasses.fields(DataSpec)]
    if table == "experiment":
        return ["compare"]
    return config_fields(tables, table)


def experiment_from_dict(
    tables: dict[str, Any], *, source: str = "experiment", folder: Path | None = None
) -> Experiment:
    """An :class:`Experiment` from the tables of an experiment file; errors name the file and table."""
    if not isinstance(tables, dict):
        raise ValueError(f"{source}: expected a table, got {type(tables).__name__}")
    config = config_from_dict({k: v for k, v in tables.items() if k not in ("data", "experiment")}, source=source)
    data = _table(tables, DataSpec, "data", source).resolved(folder)
    extra = tables.get("experiment", {})
    if not isinstance(extra, dict):
        raise ValueError(f"{source}: [experiment] must be a table, got {type(extra).__name__} {extra!r}")
    unknown = sorted(set(extra) - {"compare"})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} in [experiment]; known keys are ['compare']")
    try:
        return Experiment(
            config,
            data,
            tuple(extra.get("compare", ())) if not isinstance(extra.get("compare"), str) else extra["compare"],
        )
    except ValueError as exc:
        raise ValueError(f"{source}: [experiment] {exc}") from None


def _table(raw: dict[str, Any], cls, name: str, source):
    values = raw.get(name, {})
    if not isinstance(values, dict):
        raise ValueError(f"{source}: [{name}] must be a table, got {type(values).__name__} {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} in [{name}]; known keys are {known}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: [{name}] {exc}") from None


def load_experiment(path: str | Path) -> Experiment:
    """Reads an experiment file: the run's Config, the data and the comparisons.

    Unknown tables are errors naming them; a data file's relative path is relative to the
    experiment file.
    """
    path = Path(path)
    raw = read_toml(path)
    unknown = sorted(set(raw) - set(CONFIG_TABLES) - {"data", "experiment"})
    if unknown:
        hint = " (a grid file: run it with 'bcd-jax grid')" if {"grid", "sweep"} & set(unknown) else ""
        raise ValueError(f"{path}: unknown table(s) {unknown}; expected {[*CONFIG_TABLES, 'data', 'experiment']}{hint}")
    return experiment_from_dict(raw, source=str(path), folder=path.parent)
