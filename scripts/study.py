"""Every bcd_jax family against the baselines a practitioner would run: mini-batch Adam and SGD with
momentum (optax) on the same loss as the family and on the data set's natural loss, tuned on a
validation split, with logistic regression and an RBF SVM (scikit-learn) as context.

Problems (``PROBLEMS``): scikit-learn's digits on a wide one-hidden-layer network and on the
depth-3 width-64 network of the earlier real-data study, breast cancer, diabetes, the 10-layer
width-64 MLP on the digits from bcd_jax's own initialisation and from N(0, 0.01^2), and Zeng et
al.'s deep-notebook network (10 ReLU layers of width 600, a bias per layer, their initialisation
``0.01 * randn`` with biases 0.1). Every problem uses ``bcd_jax.datasets.load_dataset(name,
validation_fraction=0.15, seed=0)``: the pinned test split, and 15 % of the training part as a
validation split.

The selection rule is the same for every method. Each method has a grid of settings; each
setting runs for a budget of iterations (epochs for backprop, sweeps for BCD) with 3 seeds, and
records the validation and test metrics after every iteration inside the timed run. The kept
(setting, iteration count) maximises the validation accuracy averaged over the seeds (ties: the
lower mean validation loss, then the earlier iteration; regression: the lowest mean validation
MSE). A method's test number is its test metric at that iteration (mean +- sd over the seeds): a
run stopped at that iteration, which is what retraining to that count gives (the mini-batch order
of epoch k does not depend on the epoch budget). The test set plays no part in any choice.

The baselines (``BASELINES``): Adam (``optax.adam``) and SGD with momentum 0.9 (``optax.sgd(lr,
momentum=0.9)``), mini-batches of 64 reshuffled every epoch, the L2 penalty ``lambda/2 sum ||W||^2``
with lambda in ``WEIGHT_DECAYS``, learning rates ``ADAM_RATES`` / ``SGD_RATES``, each on the
squared loss on one-hot classes (the BCD families' loss) and on the natural loss (cross-entropy,
logistic, squared), on the problem's network with a bias in every layer, from a fan-in Gaussian
initialisation (``N(0, 1/fan_in)``), or from the problem's own initialisation where it has one.
The strongest baseline of a problem is the backprop row with the best mean test metric: every
comparison is against it. The reference rows (scikit-learn, deterministic): logistic regression
(ridge for regression) over C in {0.01, 0.1, 1, 10, 100} and an RBF SVM (SVR) over C in {0.1, 1,
10, 100} and gamma in {scale, scale/3, 3 scale}, chosen on the same validation split.

Reported per method: the kept setting and iteration count, validation and test metric, train
accuracy, seconds per iteration, the seconds to the kept iteration, the seconds to reach the
strongest baseline's test metric (first iteration whose test metric reaches its mean, per seed,
median over seeds; "—" when a seed never does), and the seconds the whole grid took per seed.
Wall times exclude compilation.

    python scripts/study.py --write-configs configs/study   # the study (about 45 minutes on a loaded 2-core CPU)
    python scripts/study.py --problems digits breast_cancer --seeds 1
    python scripts/study.py --quick                         # a smoke run (about 3 minutes)
    python scripts/study.py --from results/study.json       # re-render the tables (and configs) only

Writes results/study.json, results/study.md (the tables) and results/study_<problem>.png (test
metric against wall time, seed 0 of each kept setting). Needs optax, scikit-learn and matplotlib
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import os
import sys

# One thread per XLA program unless --all-threads: on a shared, loaded machine XLA's CPU thread pool
# spin-waits for cores it does not get, which slowed the BCD sweeps here up to tenfold and made
# timings erratic. It must be set before JAX starts its backend.
if "--all-threads" not in sys.argv:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

import argparse
import dataclasses
import io
import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import bcd_jax
from bcd_jax.baselines import fit_backprop
from bcd_jax.datasets import load_dataset
from bcd_jax.driver.functional import checked_data
from bcd_jax.experiments import DataSpec, Experiment, rate_summary
from bcd_jax.io import atomic_write, atomic_write_text, dumps_json

ROOT = Path(__file__).resolve().parent.parent
VALIDATION_FRACTION = 0.15
BATCH_SIZE = 64
ADAM_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
SGD_RATES = (3e-3, 1e-2, 3e-2, 1e-1)
WEIGHT_DECAYS = (1e-4, 1e-3)
SMALL_STD = 0.01
LOGREG_C = (0.01, 0.1, 1.0, 10.0, 100.0)
SVM_C = (0.1, 1.0, 10.0, 100.0)
SVM_GAMMA = (1.0, 1 / 3, 3.0)  # times scikit-learn's "scale", 1 / (d_in * Var(X))


def sgd_momentum(learning_rate):
    """SGD with heavy-ball momentum 0.9 (a module-level factory: its compiled program is reused)."""
    import optax

    return optax.sgd(learning_rate, momentum=0.9)


def adam(learning_rate):
    import optax

    return optax.adam(learning_rate)


BASELINES = {"Adam": (adam, ADAM_RATES), "SGD+momentum": (sgd_momentum, SGD_RATES)}


@dataclasses.dataclass(frozen=True)
class Family:
    """One BCD family on a problem: its algorithm, loss (None: the problem's BCD loss), bias layout,
    sweep budget and grid of traced numbers; ``suffix`` tells two rows of one algorithm apart."""

    label: str
    algorithm: Any
    bias: Any
    sweeps: int
    grid: tuple
    loss: str | None = None
    suffix: str = ""


@dataclasses.dataclass(frozen=True)
class Problem:
    """A problem: a bundled data set, a network, the natural and the BCD loss, the families, the
    baselines' epoch budget and grids, and the start (``init``: "default", "small" = N(0, 0.01^2)
    for every method, "family" = the first family's own initialisation for every method)."""

    dataset: str
    network: dict
    natural: str
    families: tuple
    epochs: int
    bcd_loss: str = "squared_multiclass"
    init: str = "default"
    baseline_bias: Any = "all"
    weight_decays: tuple = WEIGHT_DECAYS
    rates: dict | None = None  # per optimiser: a smaller learning-rate grid
    seeds: int | None = None  # at most this many seeds (the costly problems)
    reference: bool = True
    timing_rounds: int = 2  # interleaved reruns of every kept setting (seed 0) for the times
    note: str = ""


LEAKY = dict(activation="leaky_relu", negative_slope=0.5)
EXACT = bcd_jax.WholeObjective(inner="exact", k_v=1, k_w=1, spectral_diagnostics=False)
GD = bcd_jax.WholeObjective(k_v=10, k_w=10, spectral_diagnostics=False)
WHOLE_GRID = tuple({"gamma": g, "weight_decay": w} for w in (1e-3, 1e-2) for g in (0.2, 1.0))
# On the 10-layer networks any weight decay (1e-4 included) collapses the whole-objective family to
# chance; decay < 1 weighs the layers near the input less (bcd_jax.WholeObjectiveHyper).
DEEP_WHOLE_GRID = ({"decay": 0.1}, {})
ZENG_GRID = ({}, {"alpha": 1.0})  # the authors' shallow (gamma, rho, alpha) = (1, 1, 5) and deep (1, 1, 1)
ZENG_TWO = bcd_jax.Zeng("two", prox_weights="lipschitz")
ZENG_TWO_GRID = ({"alpha": 1.05}, {"alpha": 2.0})  # alpha times each prox-linear block's Lipschitz constant
ZENG_DEEP = dict(weight_init="normal", init_scale=0.01, init_bias=0.1)  # the authors' deep notebook


def monotone(k: int, sweeps: int, grid=({}, {"gamma": 1.0})) -> Family:
    algorithm = bcd_jax.Akiyama("monotone", k_v=k, k_w=k, step_size="auto", spectral_diagnostics=False)
    return Family(f"monotone (Alg. 1, auto steps, K={k})", algorithm, True, sweeps, grid, loss="natural")


def shallow(sweeps_exact: int, sweeps: int, *, monotone_grid=({}, {"gamma": 1.0})) -> tuple:
    return (
        monotone(20, sweeps, monotone_grid),
        Family("whole_objective (exact)", EXACT, True, sweeps_exact, WHOLE_GRID),
        Family("zeng_three_splitting", bcd_jax.Zeng("three"), "all", sweeps, ZENG_GRID),
        Family("zeng_two_splitting (lipschitz)", ZENG_TWO, "all", sweeps, ZENG_TWO_GRID),
    )


def deep(sweeps: int) -> tuple:
    return (
        monotone(10, sweeps, ({"eta_v": 0.3},)),
        Family("whole_objective (gd, K=10)", GD, True, sweeps, DEEP_WHOLE_GRID),
        Family("zeng_three_splitting", bcd_jax.Zeng("three"), "all", sweeps, ({},)),
        Family("zeng_two_splitting (lipschitz)", ZENG_TWO, "all", sweeps, ({"alpha": 2.0},)),
    )


PROBLEMS = {
    "digits": Problem(
        "digits", dict(depth=2, width=512, **LEAKY), "softmax_cross_entropy", shallow(20, 30, monotone_grid=({},)), 200
    ),
    "digits_narrow": Problem(
        "digits", dict(depth=3, width=64, **LEAKY), "softmax_cross_entropy", shallow(30, 50), 200, seeds=2
    ),
    "breast_cancer": Problem("breast_cancer", dict(depth=2, width=256, **LEAKY), "logistic", shallow(20, 50), 200),
    "diabetes": Problem(
        "diabetes", dict(depth=2, width=256, **LEAKY), "squared", shallow(20, 50), 200, bcd_loss="squared"
    ),
    "deep_mlp_svb": Problem(
        "digits",
        dict(depth=10, width=64, **LEAKY),
        "softmax_cross_entropy",
        deep(50),
        100,
        weight_decays=(1e-4,),
        seeds=2,
        reference=False,
    ),
    "deep_mlp_small": Problem(
        "digits",
        dict(depth=10, width=64, **LEAKY),
        "softmax_cross_entropy",
        deep(50)[1:2],
        200,
        init="small",
        baseline_bias=True,
        weight_decays=(0.0, 1e-4),
        reference=False,
        note="every method starts from N(0, 0.01^2)",
    ),
    "deep_mlp_zeng": Problem(
        "digits",
        dict(depth=11, width=600, activation="relu"),
        "softmax_cross_entropy",
        (
            Family(
                "zeng_three_splitting, Jacobi bias step (the authors')",
                bcd_jax.Zeng("three", bias_update="jacobi", **ZENG_DEEP),
                "all",
                50,
                ({"gamma": 1.0, "rho": 1.0, "alpha": 1.0},),
                suffix="_jacobi",
            ),
            Family(
                "zeng_three_splitting, joint bias step",
                bcd_jax.Zeng("three", bias_update="joint", **ZENG_DEEP),
                "all",
                50,
                ({"gamma": 1.0, "rho": 1.0, "alpha": 1.0},),
            ),
        ),
        20,
        init="family",
        weight_decays=(0.0,),
        rates={"Adam": (1e-4, 1e-3, 1e-2), "SGD+momentum": (3e-3, 3e-2, 3e-1)},
        seeds=1,
        reference=False,
        timing_rounds=0,
        note="Zeng et al.'s deep notebook: every method starts from their initialisation",
    ),
}
DEFAULT_PROBLEMS = list(PROBLEMS)


# -- running --------------------------------------------------------------------------------------


def network_for(problem: Problem, loss: str | None, bias) -> bcd_jax.Network:
    loss = problem.natural if loss == "natural" else (loss or problem.bcd_loss)
    return bcd_jax.Network(**problem.network, bias=bias, loss=loss)


def load(problem: Problem):
    return load_dataset(problem.dataset, validation_fraction=VALIDATION_FRACTION, seed=0)


def first_family_config(problem: Problem, seed: int) -> bcd_jax.Config:
    family = problem.families[0]
    return bcd_jax.Config(network=network_for(problem, family.loss, family.bias), algorithm=family.algorithm, seed=seed)


def initial_weights(problem: Problem, split, config: bcd_jax.Config, seed: int, *, baseline: bool):
    """The start of a run on ``config``'s network, or None for the method's own default.

    "default": BCD families draw their own initialisation (``bcd_jax.fit``'s, from ``seed``); the
    baselines N(0, 1/fan_in) (Zeng's ``fan_in`` draw, bias columns included). "small": every
    method N(0, 0.01^2). "family": every method the first family's own initialisation.
    """
    d_out = checked_data(split.X_train, split.y_train, config)[1].shape[1]
    d_in = split.X_train.shape[1]
    if problem.init == "small":
        shapes = config.resolved_network.layer_shapes(d_in, d_out)
        keys = jax.random.split(jax.random.key(seed + 1000), len(shapes))
        return tuple(SMALL_STD * jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes))
    if problem.init == "family":
        # the first family's draw (its network has the same layer shapes as every method's here)
        return bcd_jax.init_params(jax.random.key(seed), first_family_config(problem, seed), d_in, d_out)
    if baseline:
        fan_in = bcd_jax.Config(network=config.network, algorithm=bcd_jax.Zeng("three"), seed=seed)
        return bcd_jax.init_params(jax.random.key(seed), fan_in, d_in, d_out)
    return None


def curves(history, task: str) -> dict[str, list]:
    """The per-iteration numbers a run keeps: validation and test metric, validation loss, training."""
    metric = "mse" if task == "regression" else "accuracy"
    return {
        "val": np.asarray(getattr(history, f"val_{metric}"), np.float64),
        "val_loss": np.asarray(history.val_loss, np.float64),
        "test": np.asarray(getattr(history, f"test_{metric}"), np.float64),
        "train": np.asarray(getattr(history, f"train_{metric}"), np.float64),
        "train_loss": np.asarray(history.train_loss, np.float64),
    }


def choose(candidates: list[dict], task: str) -> tuple[dict, int]:
    """The (setting, iteration) with the best mean validation metric over seeds (ties: lower mean
    validation loss, then the earlier iteration); iteration >= 1."""
    best, best_key = None, None
    for cand in candidates:
        val = np.mean([r["val"] for r in cand["runs"]], axis=0)
        loss = np.mean([r["val_loss"] for r in cand["runs"]], axis=0)
        primary = -val if task == "regression" else val
        primary = np.where(np.isfinite(primary), primary, -np.inf)
        loss = np.where(np.isfinite(loss), loss, np.inf)
        for k in range(1, len(primary)):
            key = (primary[k], -loss[k], -k)
            if best_key is None or key > best_key:
                best, best_key = (cand, k), key
    return best


def timing_pass(outcomes: list[dict], rows: list[dict], rounds: int) -> None:
    """Reruns seed 0 of every method's kept setting, all methods in turn, ``rounds`` times (the same
    compiled programs), and sets each row's seconds per iteration to the minimum over these reruns
    and its seed runs: on a shared machine the least disturbed measurement, taken close in time for
    every method."""
    samples = {row["method"]: [row["seconds_per_iteration_runs"]] for row in rows}
    for _ in range(rounds):
        for outcome, row in zip(outcomes, rows):
            samples[row["method"]].append(outcome["rerun"](row["setting"]))
    for row in rows:
        row["timing_samples"] = [float(x) for x in samples[row["method"]]]
        row["seconds_per_iteration"] = float(min(samples[row["method"]]))
        row["seconds_to_kept"] = row["iteration"] * row["seconds_per_iteration"]


def run_backprop(problem: Problem, split, name: str, loss: str, seeds, quick: bool) -> dict:
    optimizer, rates = BASELINES[name]
    rates = (problem.rates or {}).get(name, rates)
    decays = problem.weight_decays
    epochs = problem.epochs
    if quick:
        rates, decays, epochs = rates[1:3], decays[:1], min(epochs, 10)
    network = network_for(problem, loss, problem.baseline_bias)
    task = network.loss_fn.task

    def one(seed, rate, decay):
        config = bcd_jax.Config(network=network, algorithm=bcd_jax.Zeng("three"), seed=seed)
        return fit_backprop(
            split.X_train,
            split.y_train,
            config,
            optimizer=optimizer,
            learning_rate=rate,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            weight_decay=decay,
            shuffle_seed=seed,
            init_params=initial_weights(problem, split, config, seed, baseline=True),
            validation=(split.X_val, split.y_val),
            test=(split.X_test, split.y_test),
        )

    def rerun(setting):
        result = one(seeds[0], setting["learning_rate"], setting["weight_decay"])
        return result.wall_time / result.iterations

    candidates = []
    for decay in decays:
        for rate in rates:
            runs = []
            for seed in seeds:
                result = one(seed, rate, decay)
                runs.append(
                    {
                        "seed": seed,
                        **curves(result.history, task),
                        "iterations": result.iterations,
                        "wall_time_s": result.wall_time,
                        "compile_time_s": result.compile_time,
                    }
                )
            candidates.append({"setting": {"learning_rate": rate, "weight_decay": decay}, "runs": runs})
    label = f"{name} ({'same loss as BCD' if loss == problem.bcd_loss else 'natural loss'}: {network.loss})"
    if problem.bcd_loss == problem.natural:
        label = f"{name} ({network.loss})"
    return {
        "method": label,
        "kind": "backprop",
        "loss": network.loss,
        "task": task,
        "candidates": candidates,
        "rerun": rerun,
    }


def run_family(problem: Problem, split, family: Family, seeds, quick: bool) -> dict:
    network = network_for(problem, family.loss, family.bias)
    task = network.loss_fn.task
    sweeps, grid = (min(family.sweeps, 3), family.grid[:1]) if quick else (family.sweeps, family.grid)

    def one(seed, hyper):
        config = bcd_jax.Config(network=network, algorithm=family.algorithm, hyper=hyper, sweeps=sweeps, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # divergence warnings: a diverged run scores -inf
            return bcd_jax.fit(
                split.X_train,
                split.y_train,
                config,
                init_params=initial_weights(problem, split, config, seed, baseline=False),
                validation=(split.X_val, split.y_val),
                test=(split.X_test, split.y_test),
                progress=None,
            )

    def rerun(setting):
        result = one(seeds[0], setting)
        return result.wall_time / max(result.sweeps_completed, 1)

    candidates = []
    for hyper in grid:
        runs = []
        for seed in seeds:
            result = one(seed, hyper)
            h = result.history
            runs.append(
                {
                    "seed": seed,
                    **curves(h, task),
                    "iterations": result.sweeps_completed,
                    "wall_time_s": result.wall_time,
                    "compile_time_s": result.compile_time,
                    "diverged_at": result.diverged_at,
                    "objective": np.asarray(h.objective, np.float64),
                    "movement": np.asarray(h.movement, np.float64),
                }
            )
        candidates.append({"setting": dict(hyper), "runs": runs})
    return {
        "method": family.label,
        "kind": "bcd",
        "family": family,
        "loss": network.loss,
        "task": task,
        "candidates": candidates,
        "rerun": rerun,
    }


def run_reference(split, task: str) -> list[dict]:
    """Logistic regression / ridge and an RBF SVM (SVR), chosen on the validation split."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.svm import SVC, SVR

    X, y = np.asarray(split.X_train, np.float64), np.asarray(split.y_train)
    scale = 1.0 / (X.shape[1] * X.var())
    regression = task == "regression"
    linear = (
        [(f"alpha={c}", lambda c=c: Ridge(alpha=c)) for c in LOGREG_C]
        if regression
        else [(f"C={c}", lambda c=c: LogisticRegression(C=c, max_iter=5000)) for c in LOGREG_C]
    )
    kernel = [
        (
            f"C={c}, gamma={g:.3g} scale",
            (lambda c=c, g=g: SVR(C=c, gamma=g * scale))
            if regression
            else (lambda c=c, g=g: SVC(C=c, gamma=g * scale)),
        )
        for c in SVM_C
        for g in SVM_GAMMA
    ]
    rows = []
    for label, grid in (("ridge" if regression else "logistic regression", linear), ("RBF SVM", kernel)):
        best = None
        for setting, make in grid:
            model = make()
            t0 = time.perf_counter()
            model.fit(X, y)
            seconds = time.perf_counter() - t0

            def metric(Xs, ys):
                pred = model.predict(np.asarray(Xs, np.float64))
                return float(np.mean((pred - ys) ** 2)) if regression else float(np.mean(pred == ys))

            val = metric(split.X_val, split.y_val)
            score = -val if regression else val
            if best is None or score > best[0]:
                best = (score, setting, val, metric(split.X_test, split.y_test), metric(X, y), seconds)
        _, setting, val, test, train, seconds = best
        rows.append(
            {
                "method": f"{label} (scikit-learn)",
                "kind": "reference",
                "setting": setting,
                "val": val,
                "test": test,
                "test_std": 0.0,
                "train": train,
                "fit_s": seconds,
            }
        )
    return rows


def summarise(outcome: dict, target: float | None) -> dict:
    """The row of a method: its kept (setting, iteration) and the numbers at that iteration."""
    task = outcome["task"]
    cand, k = choose(outcome["candidates"], task)
    runs = cand["runs"]
    per_it = [r["wall_time_s"] / max(r["iterations"], 1) for r in runs]
    test = [r["test"][k] for r in runs]
    row = {
        "method": outcome["method"],
        "kind": outcome["kind"],
        "loss": outcome["loss"],
        "setting": cand["setting"],
        "iteration": k,
        "budget": int(runs[0]["iterations"]),
        "val": float(np.mean([r["val"][k] for r in runs])),
        "test": float(np.mean(test)),
        "test_std": float(np.std(test)),
        "train": float(np.mean([r["train"][k] for r in runs])),
        "train_loss": float(np.mean([r["train_loss"][k] for r in runs])),
        "final_test": float(np.mean([r["test"][-1] for r in runs])),
        "seconds_per_iteration_runs": float(min(per_it)),
        "seconds_per_iteration": float(min(per_it)),
        "seconds_to_kept": float(k * min(per_it)),
        "grid_seconds_per_seed": float(
            sum(r["wall_time_s"] for c in outcome["candidates"] for r in c["runs"]) / len(runs)
        ),
        "compile_seconds": float(max(r["compile_time_s"] for c in outcome["candidates"] for r in c["runs"])),
        "seeds": [int(r["seed"]) for r in runs],
        "diverged": [r.get("diverged_at") for r in runs if r.get("diverged_at") is not None],
        "grid": [
            {
                "setting": c["setting"],
                "best_iteration": (kk := choose([c], task)[1]),
                "val": float(np.mean([r["val"][kk] for r in c["runs"]])),
                "test": float(np.mean([r["test"][kk] for r in c["runs"]])),
            }
            for c in outcome["candidates"]
        ],
        # seed 0's curves of the kept setting (the plot)
        "curve": {"test": runs[0]["test"].tolist()},
        "_runs": runs,
    }
    if "objective" in runs[0]:
        row["rate"] = rate_summary(runs[0]["objective"], runs[0]["movement"], teacher=False)
    return row


def time_to(row: dict, target: float, task: str) -> None:
    """Adds the seconds to reach ``target``: per seed the first iteration whose test metric reaches
    it, the median over seeds, times the row's seconds per iteration (None if a seed never does)."""
    hits = []
    for r in row.pop("_runs"):
        curve = r["test"][1:]
        ok = np.flatnonzero(curve <= target * (1 + 1e-9) if task == "regression" else curve >= target - 1e-9)
        hits.append(int(ok[0]) + 1 if ok.size else None)
    row["iterations_to_target"] = hits
    reached = [h for h in hits if h is not None]
    row["seconds_to_target"] = (
        float(np.median(reached)) * row["seconds_per_iteration"] if len(reached) == len(hits) else None
    )
    row["reached_target"] = f"{len(reached)}/{len(hits)}"


def run_problem(name: str, problem: Problem, seeds, quick: bool) -> dict:
    split = load(problem)
    task = split.task if split.task == "regression" else "classification"
    seeds = seeds[: problem.seeds] if problem.seeds else seeds
    print(
        f"== {name}: {split.name}, n = {len(split.X_train)} train, {len(split.X_val)} validation, "
        f"{len(split.X_test)} test; seeds {list(seeds)}",
        flush=True,
    )
    started = time.perf_counter()
    losses = [problem.bcd_loss] + ([problem.natural] if problem.natural != problem.bcd_loss else [])
    outcomes = []
    for name_ in BASELINES:
        for loss in losses:
            print(f"   {name_} on {loss}", flush=True)
            outcomes.append(run_backprop(problem, split, name_, loss, seeds, quick))
    for family in problem.families:
        print(f"   {family.label}", flush=True)
        outcomes.append(run_family(problem, split, family, seeds, quick))
    rows = [summarise(o, None) for o in outcomes]
    rounds = min(problem.timing_rounds, 1) if quick else problem.timing_rounds
    if rounds:
        print(f"   timing: {rounds} interleaved reruns of every kept setting", flush=True)
        timing_pass(outcomes, rows, rounds)
    backprop = [r for r in rows if r["kind"] == "backprop"]
    pick = min if task == "regression" else max
    strongest = pick(backprop, key=lambda r: r["test"])
    target = strongest["test"]
    for row in rows:
        time_to(row, target, task)
    families = {o["method"]: o["family"] for o in outcomes if o["kind"] == "bcd"}
    for row in rows:
        if row["method"] in families:
            f = families[row["method"]]
            row["algorithm"] = f.algorithm.name
            row["config_suffix"] = f.suffix
    if problem.reference:
        rows += run_reference(split, task)
    return {
        "dataset": problem.dataset,
        "network": {**problem.network},
        "task": task,
        "n_train": len(split.X_train),
        "n_val": len(split.X_val),
        "n_test": len(split.X_test),
        "target": target,
        "strongest": strongest["method"],
        "note": problem.note,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }


# -- reporting ------------------------------------------------------------------------------------


def fmt(value: float | None, task: str) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if task == "regression" else f"{100 * value:.1f}%"


def fmt_s(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def setting_text(row: dict) -> str:
    if row["kind"] == "reference":
        return row["setting"]
    setting = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["setting"].items())
    unit = "epochs" if row["kind"] == "backprop" else "sweeps"
    return f"{setting + ', ' if setting else ''}{row['iteration']}/{row['budget']} {unit}"


def summary(results: dict) -> str:
    """One line per problem: the strongest backprop baseline, the best BCD family on the test set,
    the gap, and each one's seconds to the baseline's test metric; the references as context."""
    lines = [
        "| problem | strongest backprop baseline | best BCD family | BCD − baseline | s to the baseline's "
        "test (BCD / baseline) | scikit-learn |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, block in results["problems"].items():
        task = block["task"]
        regression = task == "regression"
        rows = block["rows"]
        base = next(r for r in rows if r["method"] == block["strongest"])
        bcd = [r for r in rows if r["kind"] == "bcd"]
        best = (min if regression else max)(bcd, key=lambda r: r["test"])
        gap = best["test"] - base["test"]
        gap_text = f"{gap:+.4f}" if regression else f"{100 * gap:+.1f} points"

        def reach(row):
            if row["seconds_to_target"] is not None:
                return fmt_s(row["seconds_to_target"])
            return "never" if row["reached_target"].startswith("0/") else f"— ({row['reached_target']})"

        refs = ", ".join(
            f"{r['method'].split(' (')[0]} {fmt(r['test'], task)}" for r in rows if r["kind"] == "reference"
        )
        lines.append(
            f"| {name} | {base['method']}: {fmt(base['test'], task)} ± {fmt(base['test_std'], task)} "
            f"| {best['method']}: {fmt(best['test'], task)} ± {fmt(best['test_std'], task)} | {gap_text} "
            f"| {reach(best)} / {reach(base)} | {refs} |"
        )
    return "\n".join(lines) + "\n\n"


def table(results: dict) -> str:
    lines = []
    for name, block in results["problems"].items():
        task = block["task"]
        metric = "MSE" if task == "regression" else "acc."
        lines += [
            f"#### {name}",
            "",
            f"{block['dataset']}: n = {block['n_train']} training, {block['n_val']} validation, {block['n_test']} "
            f"test samples; network {block['network']}."
            + (f" {block['note'][0].upper() + block['note'][1:]}." if block.get("note") else ""),
            f"Strongest backprop baseline: **{block['strongest']}**, test {metric} {fmt(block['target'], task)} "
            "(the target of the time column).",
            "",
            f"| method | kept setting (validation) | val {metric} | test {metric} (± sd) | train {metric} "
            "| s / iteration | s to kept | s to target | grid s / seed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in block["rows"]:
            if row["kind"] == "reference":
                lines.append(
                    f"| {row['method']} | {setting_text(row)} | {fmt(row['val'], task)} | {fmt(row['test'], task)} "
                    f"| {fmt(row['train'], task)} | | {fmt_s(row['fit_s'])} (fit) | | |"
                )
                continue
            reach = fmt_s(row["seconds_to_target"])
            if row["seconds_to_target"] is None:
                reach = "never" if row["reached_target"].startswith("0/") else f"— ({row['reached_target']} seeds)"
            name_ = f"**{row['method']}**" if row["method"] == block["strongest"] else row["method"]
            lines.append(
                f"| {name_} | {setting_text(row)} | {fmt(row['val'], task)} "
                f"| {fmt(row['test'], task)} ± {fmt(row['test_std'], task)} | {fmt(row['train'], task)} "
                f"| {row['seconds_per_iteration']:.4f} | {fmt_s(row['seconds_to_kept'])} | {reach} "
                f"| {fmt_s(row['grid_seconds_per_seed'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(name: str, block: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = block["task"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for row in block["rows"]:
        if row["kind"] == "reference":
            ax.axhline(row["test"], color="grey", lw=0.8, ls=":")
            ax.annotate(
                row["method"].split(" (")[0],
                (0.01, row["test"]),
                xycoords=("axes fraction", "data"),
                fontsize=6,
                va="bottom",
                color="grey",
            )
            continue
        curve = np.asarray(row["curve"]["test"])
        t = np.arange(len(curve)) * row["seconds_per_iteration"]
        style = "--" if row["kind"] == "backprop" else "-"
        (line,) = ax.plot(t[1:], curve[1:], style, lw=1.2, label=row["method"])
        k = row["iteration"]
        ax.plot([t[k]], [curve[k]], "o", color=line.get_color(), ms=4)
    ax.set_xscale("log")
    ax.set_xlabel("wall time (s), seed 0; dots: the iteration kept on the validation split")
    ax.set_ylabel("test MSE" if task == "regression" else "test accuracy")
    if task == "regression":
        ax.set_yscale("log")
    else:
        kept = [r["test"] for r in block["rows"]]
        ax.set_ylim(max(0.0, min(kept) - 0.03), min(1.0, max(kept) + 0.02))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def write_configs(folder: Path, results: dict) -> list[Path]:
    """Each family's kept setting on each problem as an experiment file, headed by what the study measured."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, block in results["problems"].items():
        problem = PROBLEMS[name]
        if problem.init == "small":  # a custom initialisation is not part of a config
            continue
        families = {f.label: f for f in problem.families}
        task = block["task"]
        for row in block["rows"]:
            if row["method"] not in families:
                continue
            family = families[row["method"]]
            network = network_for(problem, family.loss, family.bias)
            config = bcd_jax.Config(
                network=network, algorithm=family.algorithm, hyper=row["setting"], sweeps=row["iteration"]
            )
            data = DataSpec(dataset=problem.dataset, validation_fraction=VALIDATION_FRACTION)
            path = folder / f"{name}_{config.algorithm.name}{family.suffix}.toml"
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            header = (
                f"{name}: {row['method']}, the setting and sweep count scripts/study.py kept (best mean validation "
                f"{'MSE' if task == 'regression' else 'accuracy'} over its grid and sweeps).\n"
                f"Measured ({results['command'].strip()}): test {fmt(row['test'], task)} ± "
                f"{fmt(row['test_std'], task)} over {len(row['seeds'])} seed(s), against the strongest backprop "
                f"baseline, {block['strongest']}: {fmt(block['target'], task)}; "
                f"{row['seconds_to_kept']:.2f} s for {row['iteration']} sweeps.\n"
                f"Run: bcd-jax run {shown}"
            )
            atomic_write_text(path, Experiment(config, data).dumps(header))
            written.append(path)
    return written


def jsonable(results: dict) -> dict:
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not k.startswith("_")}
        if isinstance(obj, (list, tuple)):
            return [strip(v) for v in obj]
        if isinstance(obj, np.generic):
            return obj.item()
        return obj

    return strip(results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=DEFAULT_PROBLEMS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method and setting (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 seed, 10 epochs, 3 sweeps, the first grid point"
    )
    parser.add_argument(
        "--all-threads", action="store_true", help="let XLA use its CPU thread pool (default: one thread per program)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="output folder (default results/)")
    parser.add_argument(
        "--write-configs",
        type=Path,
        metavar="DIR",
        help="write each family's kept setting on each problem as DIR/<problem>_<family>.toml (bcd-jax run files)",
    )
    parser.add_argument(
        "--from",
        dest="from_json",
        type=Path,
        metavar="JSON",
        help="train nothing: rewrite OUT/study.md, the plots (and --write-configs) from an earlier run's study.json",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds: expected >= 1, got {args.seeds}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        atomic_write_text(args.out / "study.md", header(results) + summary(results) + table(results))
        for name, block in results["problems"].items():
            plot(name, block, args.out / f"study_{name}.png")
        written = write_configs(args.write_configs, results) if args.write_configs is not None else []
        print(table(results))
        print(f"wrote {args.out}/study.md, the plots and {len(written)} configs")
        return 0
    if args.quick and args.problems == DEFAULT_PROBLEMS:
        args.problems = ["digits", "breast_cancer"]
    seeds = list(range(1 if args.quick else args.seeds))
    results = {
        "command": "python scripts/study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load_average_at_start": os.getloadavg(),
        },
        "protocol": {
            "validation_fraction": VALIDATION_FRACTION,
            "batch_size": BATCH_SIZE,
            "adam_rates": ADAM_RATES,
            "sgd_rates": SGD_RATES,
            "sgd_momentum": 0.9,
            "weight_decays": WEIGHT_DECAYS,
        },
        "problems": {},
    }
    started = time.perf_counter()
    for name in args.problems:
        block = run_problem(name, PROBLEMS[name], seeds, args.quick)
        results["problems"][name] = block
        plot(name, block, args.out / f"study_{name}.png")
        print(table({"problems": {name: block}}), flush=True)
        print(f"   ({block['seconds']:.0f} s, load average {os.getloadavg()[0]:.1f})", flush=True)
    results["total_seconds"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results = jsonable(results)
    atomic_write_text(args.out / "study.json", dumps_json(results, indent=1) + "\n")
    atomic_write_text(args.out / "study.md", header(results) + summary(results) + table(results))
    if args.write_configs is not None:
        write_configs(args.write_configs, results)
    print(f"wrote {args.out}/study.json, study.md and study_<problem>.png ({results['total_seconds']:.0f} s)")
    return 0


def header(results: dict) -> str:
    machine = results["machine"]
    load = machine.get("load_average_at_start"), machine.get("load_average_at_end")
    return (
        f"`{results['command'].strip()}`: {results.get('total_seconds', 0):.0f} s on {machine['cpus']} CPUs, "
        f"jax {machine['jax']}, 1-minute load average {load[0][0]:.1f} at the start and {load[1][0]:.1f} "
        "at the end.\n\n"
        if all(load)
        else f"`{results['command'].strip()}`\n\n"
    )


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing anything
    sys.exit(main())
