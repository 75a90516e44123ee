"""Running an experiment and reporting it: the main run and its comparisons, their final numbers."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bcd_jax.datasets import Dataset
from bcd_jax.driver.fit import FitResult, fit
from bcd_jax.driver.functional import checked_data, init_params
from bcd_jax.experiments.data import experiment_data
from bcd_jax.experiments.spec import TEACHER, Experiment
from bcd_jax.rates import rate_report

__all__ = ["fit_kwargs", "run_experiment", "run_metrics", "rate_summary", "summarize"]


def fit_kwargs(split: Dataset) -> dict[str, Any]:
    """``validation=`` and ``test=`` for ``bcd_jax.fit`` from a split (only the parts it has)."""
    out = {}
    if split.X_val is not None and len(split.X_val):
        out["validation"] = (split.X_val, split.y_val)
    if split.X_test is not None and len(split.X_test):
        out["test"] = (split.X_test, split.y_test)
    return out


def run_experiment(experiment: Experiment, *, progress: Any = "auto") -> dict[str, FitResult]:
    """Trains the main run and every comparison run on the experiment's data.

    All runs share the data and the initial weights (drawn once for the main algorithm, so a
    comparison differs only in its update rule). Returns ``{algorithm name: FitResult}``.
    """
    config = experiment.config
    split = experiment_data(experiment)
    X, Y = split.X_train, split.y_train
    d_out = checked_data(X, Y, config, None)[1].shape[1]  # the encoded targets' width (classes, outputs)
    params = init_params(jax.random.key(config.seed), config, X.shape[1], d_out, dtype=X.dtype)
    runs = {config.algorithm.name: config}
    runs.update({name: config.with_overrides({"algorithm.name": name}) for name in experiment.compare})
    return {
        name: fit(X, Y, run, init_params=params, progress=progress, **fit_kwargs(split)) for name, run in runs.items()
    }


def run_metrics(result: FitResult, split: Dataset) -> dict[str, Any]:
    """The final numbers of one run: status, training loss and accuracy or MSE, validation and
    test metrics where the split has them, time, and the convergence rate.

    For a regression set whose target was standardised, ``test_mse_raw`` is the test MSE in the
    target's own units. ``rate`` is :func:`bcd_jax.rates.rate_report`'s summary of the run's
    objective (F* taken as 0 for the teacher problem, else the last value with the fit stopped
    at 80% of the run).
    """
    h = result.history
    task = result.config.resolved_network.loss_fn.task
    final = result.final()
    out: dict[str, Any] = {
        "run_id": result.run_id,
        "data": split.name,
        "algorithm": result.config.algorithm.name,
        "status": result.status.name.lower(),
        "status_code": int(result.status),
        "sweeps_completed": result.sweeps_completed,
        "diverged_at": result.diverged_at,
        "objective": final["objective"],
        "train_loss": final["train_loss"],
        "train_mse": final["train_mse"],
        "wall_time_s": result.wall_time,
        "compile_time_s": result.compile_time,
    }
    parts = ["train"]
    if split.X_val is not None and len(split.X_val):
        parts.append("val")
    if split.X_test is not None and len(split.X_test):
        parts.append("test")
    for part in parts:
        if task == "regression":
            out[f"{part}_mse"] = final[f"{part}_mse"]
            if part != "train" and split.target_scale != 1.0:
                out[f"{part}_mse_raw"] = final[f"{part}_mse"] * split.target_scale**2
        else:
            out[f"{part}_accuracy"] = final[f"{part}_accuracy"]
            if part != "train":
                out[f"{part}_loss"] = final[f"{part}_loss"]
    out["rate"] = rate_summary(h.objective, h.movement, teacher=split.name == TEACHER)
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

    The layer-loss entries are there for a family whose extras have ``layer_losses`` (Akiyama's,
    the whole-objective family's); every family has the rest.
    """
    h = result.history
    mse = np.asarray(h.train_mse, dtype=np.float64)
    k = len(mse) - 1 if at_sweep is None else min(at_sweep, len(mse) - 1)
    out = {
        "algorithm": result.config.algorithm.name,
        "status": result.status.name.lower(),
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
    losses = getattr(h.extras, "layer_losses", None)
    if losses is not None:
        losses = np.asarray(losses)
        out["max_layer_loss_final"] = float(np.max(losses[-1]))
        out["max_layer_loss_any_sweep"] = float(np.nanmax(losses[1:] if len(mse) > 1 else losses))
        out["final_layer_losses"] = [float(v) for v in losses[-1]]
    out["seconds_per_sweep"] = result.wall_time / max(result.sweeps_completed, 1)
    out["compile_seconds"] = result.compile_time
    return out
