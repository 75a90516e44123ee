"""The paper's Section 6 experiments, driven by a TOML file in ``configs/``.

An experiment file holds the run's tables (``[network]``, ``[algorithm]``, ``[hyper]``,
``[run]``; see :func:`bcd_jax.load_config`) and two more::

    [data]        # the teacher problem (bcd_jax.teacher_problem) ...
    n = 500
    d_in = 600
    teacher_width = 30
    seed = 0
    n_test = 500  # optional: held-out samples of the same teacher (test metrics)

    [data]        # ... or a bundled real data set (bcd_jax.datasets; needs scikit-learn)
    dataset = "digits"    # "digits", "breast_cancer" or "diabetes"
    test_fraction = 0.25
    seed = 0              # the split's seed

    [experiment]  # extra runs on the same data and initial weights, drawn dashed
    compare = ["relu_noskip"]

:func:`experiment_data` builds the data as a :class:`bcd_jax.datasets.Dataset` (train and
test arrays); ``run_experiment`` trains the main run and each comparison run (``algorithm.name``
swapped, everything else equal) and returns their results; ``plot_experiment`` draws the figure.
Dotted keys (``hyper.gamma``, ``network.width``, ``algorithm.k_v``, ``sweeps``, ``seed``,
``data.n``) change one field of an experiment: :func:`apply_overrides`.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bcd_jax.algorithms import get_algorithm
from bcd_jax.config import Config, load_config, read_toml
from bcd_jax.data import teacher_split
from bcd_jax.datasets import DATASETS, Dataset, load_dataset
from bcd_jax.driver.fit import FitResult, fit
from bcd_jax.driver.functional import checked_data, init_params
from bcd_jax.io import atomic_write
from bcd_jax.network import Network
from bcd_jax.rates import rate_report
from bcd_jax.validation import check_choice, check_float, check_int

__all__ = [
    "DataSpec",
    "ExperimentSpec",
    "apply_overrides",
    "check_override_key",
    "dumps_experiment",
    "experiment_data",
    "load_experiment",
    "plot_experiment",
    "rate_summary",
    "run_metrics",
    "run_experiment",
    "summarize",
    "teacher_data",
]


TEACHER = "teacher"
_TEACHER_FIELDS = ("n", "d_in", "teacher_width", "d_out", "n_test")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """An experiment's data: the teacher problem of Section 6 or a bundled real data set.

    Attributes:
      dataset: ``"teacher"`` (``x ~ N(0, I)``, a one-hidden-layer teacher with the network's
        first activation) or a name of ``bcd_jax.datasets.DATASETS`` (same split and
        preprocessing as ``bcd_jax.datasets.load_dataset``).
      n, d_in, teacher_width, d_out: the teacher problem's sizes (ints >= 1; teacher only).
      n_test: held-out teacher samples (int >= 0; teacher only).
      test_fraction: the held-out share of a real data set (in (0, 1); real data only).
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

    def __post_init__(self):
        for name in ("n", "d_in", "teacher_width", "d_out", "seed", "n_test"):
            low = 0 if name in ("seed", "n_test") else 1
            object.__setattr__(self, name, check_int(f"data.{name}", getattr(self, name), low=low))
        check_choice("data.dataset", self.dataset, (TEACHER, *sorted(DATASETS)))
        object.__setattr__(
            self,
            "test_fraction",
            check_float("data.test_fraction", self.test_fraction, low=0, high=1, low_open=True, high_open=True),
        )
        if self.dataset != TEACHER:
            defaults = DataSpec()
            changed = [f for f in _TEACHER_FIELDS if getattr(self, f) != getattr(defaults, f)]
            if changed:
                raise ValueError(
                    f"data: {changed} describe the teacher problem; with dataset = {self.dataset!r} give only "
                    "dataset, test_fraction and seed"
                )

    def replace(self, **changes) -> DataSpec:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """Comparison runs: registry names of algorithms trained on the same data and initial weights."""

    compare: tuple[str, ...] = ()

    def __post_init__(self):
        compare = self.compare
        if isinstance(compare, str) or not isinstance(compare, (list, tuple)):
            raise ValueError(f"experiment.compare: expected a list of algorithm names, got {compare!r}")
        for name in compare:
            get_algorithm(name)  # an unknown name fails here, naming the registry's names
        object.__setattr__(self, "compare", tuple(compare))


def _table(raw: dict[str, Any], cls, name: str, path: Path):
    values = raw.get(name, {})
    if not isinstance(values, dict):
        raise ValueError(f"{path}: [{name}] must be a table, got {type(values).__name__} {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} in [{name}]; known keys are {known}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: [{name}] {exc}") from None


def load_experiment(path: str | Path) -> tuple[Config, DataSpec, ExperimentSpec]:
    """Reads a Section 6 experiment file: the run's Config, the data and the comparisons."""
    path = Path(path)
    config = load_config(path)
    raw = read_toml(path)
    return config, _table(raw, DataSpec, "data", path), _table(raw, ExperimentSpec, "experiment", path)


def dumps_experiment(config: Config, data: DataSpec, header: str = "") -> str:
    """An experiment file (TOML) that :func:`load_experiment` reads back as ``(config, data)``.

    ``header`` becomes ``#`` comment lines at the top. Fields left at None (TOML has no null)
    are omitted, so they take their defaults, which are None.
    """
    tables = config.to_dict()
    run = tables.pop("run")
    defaults = DataSpec()
    tables["run"] = run
    tables["data"] = {
        f.name: getattr(data, f.name)
        for f in dataclasses.fields(DataSpec)
        if getattr(data, f.name) != getattr(defaults, f.name)
    }
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for table, values in tables.items():
        lines += ["", f"[{table}]"] + [
            f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None
        ]
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"config: cannot write {type(value).__name__} {value!r} to TOML")


def teacher_data(config: Config, data: DataSpec, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """The teacher problem ``data`` describes, with the first hidden layer's activation of ``config`` (Section 6)."""
    if data.dataset != TEACHER:
        raise ValueError(
            f"data.dataset: sweeps (and this helper) train on the teacher problem only, got {data.dataset!r}; "
            "run a real data set with 'bcd-jax run' or bcd_jax.experiments.experiment_data"
        )
    return _teacher_split(config, data, dtype)[:2]


def _teacher_split(config: Config, data: DataSpec, dtype):
    network = config.network
    return teacher_split(
        jax.random.key(data.seed),
        n=data.n,
        d_in=data.d_in,
        teacher_width=data.teacher_width,
        activation=network.layer_activations[0],  # resolved with the network's negative slope
        negative_slope=network.negative_slope,
        d_out=data.d_out,
        dtype=dtype,
        n_test=data.n_test,
    )


def experiment_data(config: Config, data: DataSpec, dtype=jnp.float32) -> Dataset:
    """``data`` as a :class:`bcd_jax.datasets.Dataset`: the training and the test arrays.

    The teacher problem's training set is :func:`bcd_jax.teacher_problem`'s (the Section 6
    data) and its test set ``n_test`` fresh samples of the same teacher (``bcd_jax.data.teacher_split``).
    A real data set is loaded with ``bcd_jax.datasets.load_dataset(dataset, test_fraction=...,
    seed=...)`` (needs scikit-learn).
    """
    if data.dataset != TEACHER:
        return load_dataset(data.dataset, test_fraction=data.test_fraction, seed=data.seed)
    X, Y, X_test, Y_test = _teacher_split(config, data, dtype)
    return Dataset(TEACHER, "regression", None, *(np.asarray(a) for a in (X, Y, X_test, Y_test)))


# --------------------------------------------------------------------------------------
# Dotted keys: one field of an experiment
# --------------------------------------------------------------------------------------

_KEY_FORMS = (
    "'sweeps', 'seed', 'network.<field>', 'algorithm.<field>' (or 'algorithm.name'), 'hyper.<field>' or 'data.<field>'"
)


def check_override_key(key: str, config: Config, algorithm_name: str | None = None) -> None:
    """Raises ``ValueError`` unless ``key`` names a field of an experiment with ``config``.

    ``algorithm_name`` is the algorithm the key applies to when ``algorithm.name`` is changed
    along with it (its structural fields and ``Hyper`` decide what ``algorithm.<f>`` and
    ``hyper.<f>`` may be). A bare field name gets the dotted key it belongs to as a hint.
    """
    if not isinstance(key, str):
        raise ValueError(f"key: expected a string such as 'hyper.gamma', got {type(key).__name__} {key!r}")
    algorithm = get_algorithm(algorithm_name) if algorithm_name is not None else config.algorithm
    fields = {
        "network": [f.name for f in dataclasses.fields(Network)],
        "algorithm": list(algorithm.describe()),
        "hyper": list(algorithm.Hyper._fields),
        "data": [f.name for f in dataclasses.fields(DataSpec)],
    }
    if key in ("sweeps", "seed"):
        return
    role, dot, field = key.partition(".")
    if dot and role in fields:
        if field not in fields[role]:
            raise ValueError(f"unknown key {key!r}; [{role}] has the fields {fields[role]}")
        return
    hints = [f"{r}.{key}" for r, names in fields.items() if key in names]
    hint = f" (did you mean {' or '.join(repr(h) for h in hints)}?)" if hints else ""
    raise ValueError(f"unknown key {key!r}; expected {_KEY_FORMS}{hint}")


def apply_overrides(config: Config, data: DataSpec, overrides: dict[str, Any]) -> tuple[Config, DataSpec]:
    """``(config, data)`` with dotted-key changes: ``{"hyper.gamma": 0.3, "network.width": 8, "data.n": 200}``.

    ``data.<field>`` keys change the teacher problem; every other key goes to
    :meth:`bcd_jax.Config.with_overrides`. Errors name the key.
    """
    new_name = overrides.get("algorithm.name")
    for key in overrides:
        check_override_key(key, config, new_name if isinstance(new_name, str) and key != "algorithm.name" else None)
    data_changes = {k[len("data.") :]: v for k, v in overrides.items() if k.startswith("data.")}
    config_changes = {k: v for k, v in overrides.items() if not k.startswith("data.")}
    if data_changes:
        try:
            data = dataclasses.replace(data, **data_changes)
        except TypeError as exc:
            raise ValueError(f"data: {exc}") from None
    if config_changes:
        config = config.with_overrides(config_changes)
    return config, data


# --------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------


def run_experiment(
    config: Config, data: DataSpec, experiment: ExperimentSpec = ExperimentSpec(), *, progress: Any = "auto"
) -> dict[str, FitResult]:
    """Trains the main run and every comparison run on the experiment's data.

    All runs share the data and the initial weights (drawn once for the main algorithm, so a
    comparison differs only in its update rule); the test set, when there is one, is the
    validation set of every run. Returns ``{algorithm name: FitResult}``. ``progress`` is passed
    to ``bcd_jax.fit``.
    """
    split = experiment_data(config, data)
    X, Y = split.X_train, split.y_train
    validation = (split.X_test, split.y_test) if len(split.X_test) else None
    d_out = checked_data(X, Y, config, None)[1].shape[1]  # the encoded targets' width (classes, outputs)
    params = init_params(jax.random.key(config.seed), config, X.shape[1], d_out, dtype=X.dtype)
    runs = {config.algorithm.name: config}
    runs.update({name: config.with_overrides({"algorithm.name": name}) for name in experiment.compare})
    return {
        name: fit(X, Y, run, init_params=params, validation=validation, progress=progress) for name, run in runs.items()
    }


def run_metrics(result: FitResult, split: Dataset) -> dict[str, Any]:
    """The final numbers of one run on ``split``: training loss, train/test accuracy or MSE, time, rate.

    ``test_*`` entries appear when the split has a test set; for a regression set whose target
    was standardised, ``test_mse_raw`` is the test MSE in the target's own units. ``rate`` is
    :func:`bcd_jax.rates.rate_report`'s summary of the run's objective (F* taken as 0 for the
    teacher problem, else the last value with the fit stopped at 80% of the run).
    """
    h = result.history
    task = result.config.resolved_network.loss_fn.task
    last = {name: float(np.asarray(getattr(h, name))[-1]) for name in ("train_loss", "train_mse", "objective")}
    out: dict[str, Any] = {
        "data": split.name,
        "algorithm": result.config.algorithm.name,
        "sweeps_completed": result.sweeps_completed,
        "diverged_at": result.diverged_at,
        **last,
        "wall_time_s": result.wall_time,
        "compile_time_s": result.compile_time,
    }
    if task != "regression":
        out["train_accuracy"] = float(h.train_accuracy[-1])
    if len(split.X_test):
        if task == "regression":
            out["test_mse"] = float(h.val_mse[-1])
            if split.target_scale != 1.0:
                out["test_mse_raw"] = float(h.val_mse[-1]) * split.target_scale**2
        else:
            out["test_accuracy"] = float(h.val_accuracy[-1])
    out["rate"] = rate_summary(h.objective, result.movement, teacher=split.name == TEACHER)
    return out


def rate_summary(objective, movement, *, teacher: bool) -> str:
    """:func:`bcd_jax.rates.rate_report`'s one-line summary of a run, with the reference the data allow.

    On the teacher problem the global minimum of F is 0 (the paper's over-parameterised setting),
    so F* = 0; on real data F* is unknown: the last value, with the fit stopped at 80% of the run.
    """
    stop = None if teacher else max(3, int(0.8 * len(objective)))
    return rate_report(objective, movement, reference=0.0 if teacher else "final", stop=stop).summary()


def summarize(result: FitResult, at_sweep: int | None = None) -> dict[str, Any]:
    """Headline numbers of one run (all losses are means over samples).

    The layer-loss entries are there for a family whose diagnostics have ``layer_losses``
    (Akiyama's); every family has the rest.
    """
    h = result.history
    mse = np.asarray(h.train_mse, dtype=np.float64)
    k = len(mse) - 1 if at_sweep is None else min(at_sweep, len(mse) - 1)
    out = {
        "algorithm": result.config.algorithm.name,
        "sweeps_completed": result.sweeps_completed,
        "diverged_at": result.diverged_at,
        "initial_train_mse": float(mse[0]),
        "final_train_mse": float(mse[-1]),
        "check_sweep": k,
        "train_mse_at_check": float(mse[k]),
        "ratio_at_check": float(mse[k] / mse[0]),
        "ratio_final": float(mse[-1] / mse[0]),
        "monotone": bool(np.all(np.diff(mse) <= 0)),
    }
    if hasattr(h, "layer_losses"):
        losses = np.asarray(h.layer_losses)
        out["max_layer_loss_final"] = float(np.max(losses[-1]))
        out["max_layer_loss_any_sweep"] = float(np.max(losses[1:] if len(mse) > 1 else losses))
        out["final_layer_losses"] = [float(v) for v in losses[-1]]
    out["seconds_per_sweep"] = result.wall_time / max(result.sweeps_completed, 1)
    out["compile_seconds"] = result.compile_time
    return out


def plot_experiment(results: dict[str, FitResult], path: str | Path, title: str = "") -> None:
    """Log-scale training error (black; comparisons dashed) and per-layer losses against sweeps.

    The PNG is written atomically (``bcd_jax.io.atomic_write``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main_name, main = next(iter(results.items()))
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=150)
    sweeps = np.arange(len(main.history.train_mse))
    ax.plot(sweeps, main.history.train_mse, color="black", lw=2.0, label=f"training error ({main_name})")
    for name, res in list(results.items())[1:]:
        ax.plot(
            np.arange(len(res.history.train_mse)),
            res.history.train_mse,
            color="black",
            lw=1.6,
            ls="--",
            label=f"training error ({name})",
        )
    if hasattr(main.history, "layer_losses"):
        layer_losses = np.asarray(main.history.layer_losses)
        colors = plt.get_cmap("tab10")
        for j in range(layer_losses.shape[1]):
            # Layer losses are exactly 0 at the initial state (V is the forward pass): start at sweep 1.
            ax.plot(sweeps[1:], layer_losses[1:, j], color=colors(j), lw=1.2, label=f"layer {j + 1} loss")
    ax.set_yscale("log")
    ax.set_xlabel("sweep (outer iteration k)")
    ax.set_ylabel("loss (mean over samples)")
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
