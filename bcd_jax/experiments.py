"""The paper's Section 6 experiments, driven by a TOML file in ``configs/``.

A config file holds the solver's ``Config`` fields at top level plus two tables::

    [data]        # the teacher problem (bcd_jax.teacher_problem)
    n = 500
    d_in = 600
    teacher_width = 30
    seed = 0

    [experiment]  # extra runs on the same data and initial weights, drawn dashed
    compare = ["relu_noskip"]

``run_experiment`` trains the main run and each comparison run (``algorithm`` swapped,
everything else equal) and returns their results; ``plot_experiment`` draws the figure.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bcd_jax.algorithms import get_algorithm
from bcd_jax.config import Config, load_config
from bcd_jax.data import teacher_problem
from bcd_jax.model import init_params
from bcd_jax.solver import FitResult, fit

__all__ = ["DataSpec", "ExperimentSpec", "load_experiment", "teacher_data", "run_experiment", "plot_experiment", "summarize"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The teacher problem of Section 6 (``x ~ N(0, I)``, one-hidden-layer teacher, same activation)."""

    n: int = 500
    d_in: int = 600
    teacher_width: int = 30
    d_out: int = 1
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """Comparison runs: algorithm names trained on the same data and initial weights."""

    compare: tuple[str, ...] = ()


def _table(raw: dict[str, Any], cls, name: str, path: Path):
    values = raw.get(name, {})
    if not isinstance(values, dict):
        raise ValueError(f"{path}: [{name}] must be a table, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} in [{name}]; known keys are {sorted(known)}")
    obj = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    for field in dataclasses.fields(cls):
        value = getattr(obj, field.name)
        if field.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < (0 if field.name == "seed" else 1)):
            raise ValueError(f"{path}: [{name}] {field.name}: expected a positive int, got {value!r}")
    return obj


def load_experiment(path: str | Path) -> tuple[Config, DataSpec, ExperimentSpec]:
    """Reads a Section 6 experiment file: the solver Config, the data and the comparisons."""
    path = Path(path)
    config = load_config(path)
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    data = _table(raw, DataSpec, "data", path)
    experiment = _table(raw, ExperimentSpec, "experiment", path)
    for name in experiment.compare:
        try:
            get_algorithm(name)
        except ValueError as exc:
            raise ValueError(f"{path}: [experiment] compare: {exc}") from None
    return config, data, experiment


def teacher_data(config: Config, data: DataSpec) -> tuple[jax.Array, jax.Array]:
    """The teacher problem ``data`` describes, with the activation of ``config`` (Section 6)."""
    return teacher_problem(
        jax.random.key(data.seed),
        n=data.n,
        d_in=data.d_in,
        teacher_width=data.teacher_width,
        activation=config.activation,
        negative_slope=config.negative_slope,
        d_out=data.d_out,
    )


def run_experiment(config: Config, data: DataSpec, experiment: ExperimentSpec = ExperimentSpec()) -> dict[str, FitResult]:
    """Trains the main run and every comparison run on one teacher problem.

    All runs share the data and the initial weights (drawn once for the main algorithm, so
    a comparison differs only in its update rule). Returns ``{algorithm name: FitResult}``.
    """
    X, Y = teacher_data(config, data)
    params = init_params(jax.random.key(config.seed), config, data.d_in, data.d_out, dtype=X.dtype)
    results = {config.algorithm: fit(X, Y, config, init_params=params)}
    for name in experiment.compare:
        results[name] = fit(X, Y, config.replace(algorithm=name), init_params=params)
    return results


def summarize(result: FitResult, at_sweep: int | None = None) -> dict[str, Any]:
    """Headline numbers of one run (all losses are means over samples)."""
    h = result.history
    mse = np.asarray(h.train_mse, dtype=np.float64)
    k = len(mse) - 1 if at_sweep is None else min(at_sweep, len(mse) - 1)
    return {
        "algorithm": result.config.algorithm,
        "sweeps_completed": result.sweeps_completed,
        "diverged_at": result.diverged_at,
        "initial_train_mse": float(mse[0]),
        "final_train_mse": float(mse[-1]),
        "check_sweep": k,
        "train_mse_at_check": float(mse[k]),
        "ratio_at_check": float(mse[k] / mse[0]),
        "ratio_final": float(mse[-1] / mse[0]),
        "monotone": bool(np.all(np.diff(mse) <= 0)),
        "max_layer_loss_final": float(np.max(h.layer_losses[-1])),
        "max_layer_loss_any_sweep": float(np.max(h.layer_losses[1:])) if len(mse) > 1 else float(np.max(h.layer_losses)),
        "final_layer_losses": [float(v) for v in h.layer_losses[-1]],
        "seconds_per_sweep": result.wall_time / max(result.sweeps_completed, 1),
        "compile_seconds": result.compile_time,
    }


def plot_experiment(results: dict[str, FitResult], path: str | Path, title: str = "") -> None:
    """Log-scale training error (black; comparisons dashed) and per-layer losses against sweeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main_name, main = next(iter(results.items()))
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=150)
    sweeps = np.arange(len(main.history.train_mse))
    ax.plot(sweeps, main.history.train_mse, color="black", lw=2.0, label=f"training error ({main_name})")
    for name, res in list(results.items())[1:]:
        ax.plot(np.arange(len(res.history.train_mse)), res.history.train_mse, color="black", lw=1.6, ls="--",
                label=f"training error ({name})")
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
