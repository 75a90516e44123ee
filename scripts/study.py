"""Every bcd_jax family against backpropagation (full-batch Adam and SGD, optax), on seven problems.

Problems (``PROBLEMS``): the paper's Figure 1 and Figure 2 teacher problems (with 500 held-out
samples of the same teacher for a test MSE), scikit-learn's digits on a wide one-hidden-layer
network and on the depth-3 width-64 network of the earlier real-data study, breast cancer,
diabetes (same splits and preprocessing as ``bcd_jax.datasets``), and the 10-layer MLP on the
digits from bcd_jax's own initialisation (``svb``) and from N(0, 0.01^2) (``small``).

Each method trains the problem's network (depth, width, activation) from the same initial weights
per seed (a family whose blocks need another layout -- Zeng et al.'s bias in every layer -- draws
the same kind of initialisation for its shapes). Each family has its documented loss (the squared
one-hot loss for the closed-form families, as their authors use it) and a small grid of its
numbers; backprop trains the data set's natural loss (cross-entropy, logistic, squared) with the
learning-rate grids of the earlier studies. For every method the grid point with the lowest mean
FINAL TRAINING LOSS over the seeds is kept (the test set plays no part in the choice). Reported
per method: final training loss, train / test accuracy (or MSE), iterations, wall time, and the
time to reach Adam's final test accuracy (Adam's mean over seeds; for MSE: to get at or below it):
the first iteration whose test metric reaches it times the run's seconds per iteration (both
methods evaluate the test set every iteration inside the timed run); Adam's own row gives the
time each seed takes to reach its own final test metric (median over seeds). Wall times exclude
compilation. The rate column is bcd_jax.rates.rate_report on seed 0's objective.

    python scripts/study.py                 # everything (about 10 minutes on 2 CPU cores)
    python scripts/study.py --problems digits breast_cancer --seeds 1
    python scripts/study.py --quick         # a smoke run

Writes results/study.json, results/study.md (the table) and results/study_<problem>.png
(test metric and training loss against wall time; seed 0 of each kept setting). Needs optax,
scikit-learn and matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bcd_jax
from bcd_jax.baselines import fit_backprop
from bcd_jax.driver.functional import checked_data
from bcd_jax.experiments import DataSpec, dumps_experiment, experiment_data, rate_summary
from bcd_jax.io import atomic_write, atomic_write_text, dumps_json

ROOT = Path(__file__).resolve().parent.parent
ADAM_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
SGD_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
SMALL_STD = 0.01

# A family entry: (label, algorithm, loss or None for the data set's, bias, sweeps, grid of hyper dicts).
ZENG_GRID = ({}, {"gamma": 0.1, "rho": 0.1, "alpha": 1.0})  # the authors' defaults, and weaker penalties
ZENG_TWO_GRID = ({}, {"alpha": 1e3}, {"alpha": 1e4})  # one proximal weight for all blocks: it must exceed W_1's
# decay < 1 weighs the layers near the input less (bcd_jax.WholeObjectiveHyper); it changes nothing at depth 2.
WHOLE_GRID = ({"weight_decay": 1e-3}, {"gamma": 1.0, "weight_decay": 1e-3}, {"decay": 0.1, "weight_decay": 1e-3})
EXACT = bcd_jax.WholeObjective(inner="exact", k_v=1, k_w=1, spectral_diagnostics=False)
GD = bcd_jax.WholeObjective(k_v=10, k_w=10, spectral_diagnostics=False)
PAPER_GD = bcd_jax.WholeObjective(k_v=100, k_w=100, spectral_diagnostics=False)  # the paper's K_V = K_W
GD_GRID = ({}, {"decay": 0.1})


def _families(loss: str | None, sweeps_exact: int, sweeps: int, *, deep: bool = False, paper=None):
    """The four families of a problem; ``loss`` is the closed-form families' loss (None: the data set's).

    ``paper``: the teacher problems' entry for the paper's algorithm (replacing Algorithm 1 with
    auto steps), whose whole-objective run takes the paper's K_V = K_W = 100; ``deep``: the 10-layer
    MLP, with the gd whole-objective sweep (the exact one costs 0.7 s per sweep there).
    """
    k = 10 if deep else 20
    monotone = (
        f"monotone (Alg. 1, auto steps, K={k})",
        bcd_jax.Akiyama("monotone", k_v=k, k_w=k, step_size="auto", spectral_diagnostics=False),
        None,
        True,
        sweeps,
        ({"eta_v": 0.3},) if deep else ({}, {"gamma": 1.0}),
    )
    if paper is not None:
        first, whole = paper, ("whole_objective (gd, K=100)", PAPER_GD, loss, paper[3], sweeps_exact, GD_GRID)
    elif deep:
        first, whole = monotone, ("whole_objective (gd, K=10)", GD, loss, True, sweeps, GD_GRID)
    else:
        first, whole = monotone, ("whole_objective (exact)", EXACT, loss, True, sweeps_exact, WHOLE_GRID)
    return [
        first,
        whole,
        ("zeng_three_splitting", bcd_jax.Zeng("three"), loss, "all", sweeps, ZENG_GRID),
        ("zeng_two_splitting", bcd_jax.Zeng("two"), loss, "all", sweeps, ZENG_TWO_GRID),
    ]


def _real(dataset: str, depth: int, width: int, loss: str, families: list, **extra) -> dict:
    """A problem on a bundled data set: LeakyReLU(0.5), a bias column, 1000 backprop steps."""
    network = dict(depth=depth, width=width, activation="leaky_relu", negative_slope=0.5, bias=True)
    return dict(data=DataSpec(dataset=dataset), network=network, loss=loss, families=families, steps=1000, **extra)


PROBLEMS = {
    "fig1": dict(
        data=DataSpec(n=500, d_in=600, teacher_width=30, n_test=500),
        network=dict(depth=5, width=30, activation="leaky_relu", negative_slope=0.5, bias=False, loss="squared"),
        families=_families(
            None,
            30,
            50,
            paper=("monotone (Alg. 1, paper)", bcd_jax.Akiyama("monotone"), None, False, 50, ({},)),
        ),
        steps=1000,
    ),
    "fig2": dict(
        data=DataSpec(n=500, d_in=600, teacher_width=30, n_test=500),
        network=dict(depth=5, width=30, activation="relu", bias=False, skip=True, loss="squared"),
        families=_families(
            None,
            30,
            50,
            paper=(
                "relu_skip (Alg. 3, paper)",
                bcd_jax.Akiyama("relu_skip", svb=(0.0, 0.25)),
                None,
                False,
                50,
                ({},),
            ),
        ),
        steps=1000,
    ),
    "digits": _real("digits", 2, 512, "softmax_cross_entropy", _families("squared_multiclass", 10, 50)),
    "digits_narrow": _real("digits", 3, 64, "softmax_cross_entropy", _families("squared_multiclass", 30, 100)),
    "breast_cancer": _real("breast_cancer", 2, 256, "logistic", _families("squared_multiclass", 10, 50)),
    "diabetes": _real("diabetes", 2, 256, "squared", _families(None, 10, 50)),
    "deep_mlp_svb": _real(
        "digits", 10, 64, "softmax_cross_entropy", _families("squared_multiclass", 30, 100, deep=True)
    ),
    "deep_mlp_small": _real(
        "digits", 10, 64, "softmax_cross_entropy", _families("squared_multiclass", 30, 100, deep=True), init="small"
    ),
}
# The first hidden layer's weights of the whole-objective family on real data (a bias column but
# no hidden biases) and Algorithm 1 use `bias=True`; Zeng et al.'s networks have a bias per layer.


def network_for(problem: dict, loss: str | None, bias) -> bcd_jax.Network:
    spec = dict(problem["network"])
    spec["loss"] = loss or problem.get("loss") or spec.get("loss", "squared")
    spec["bias"] = bias
    return bcd_jax.Network(**spec)


def initial_weights(problem: dict, split, config: bcd_jax.Config, seed: int):
    """``config``'s initial weights for ``split`` (the problem's kind: drawn by the algorithm, or N(0, 0.01^2))."""
    d_out = checked_data(split.X_train, split.y_train, config)[1].shape[1]  # encoded targets: classes or outputs
    params = bcd_jax.init_params(jax.random.key(seed), config, split.X_train.shape[1], d_out)
    if problem.get("init") != "small":
        return params
    keys = jax.random.split(jax.random.key(seed + 1000), len(params))
    return tuple(SMALL_STD * jax.random.normal(k, w.shape, w.dtype) for k, w in zip(keys, params))


def reached(curve: np.ndarray, target: float, task: str) -> int | None:
    """The first iteration whose test metric reaches ``target`` (accuracy >=, MSE <=), or None."""
    ok = curve <= target * (1 + 1e-6) if task == "regression" else curve >= target - 1e-6
    hits = np.flatnonzero(ok)
    return int(hits[0]) if hits.size else None


def candidate(setting: dict, runs: list[dict]) -> dict:
    """One grid point: its score is the mean final training loss over seeds (inf if any diverged)."""
    final = [r["train_loss"][-1] for r in runs]
    score = float(np.mean(final)) if all(np.isfinite(final)) else np.inf
    return {"setting": setting, "score": score, "runs": runs}


def run_family(problem, split, entry, seeds):
    label, algorithm, loss, bias, sweeps, grid = entry
    network = network_for(problem, loss, bias)
    task = network.loss_fn.task
    if network.depth == 2:  # decay weighs layers against each other: one hidden layer has nothing to weigh
        grid = [h for h in grid if "decay" not in h] or grid[:1]
    candidates = []
    for hyper in grid:
        runs = []
        for seed in seeds:
            config = bcd_jax.Config(network=network, algorithm=algorithm, hyper=hyper, sweeps=sweeps, seed=seed)
            params = initial_weights(problem, split, config, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = bcd_jax.fit(
                    split.X_train,
                    split.y_train,
                    config,
                    init_params=params,
                    validation=(split.X_test, split.y_test),
                    progress=None,
                )
            h = result.history
            curve = np.asarray(h.val_mse if task == "regression" else h.val_accuracy, np.float64)
            runs.append(
                {
                    "seed": seed,
                    "train_loss": np.asarray(h.train_loss, np.float64),
                    "train_metric": float((h.train_mse if task == "regression" else h.train_accuracy)[-1]),
                    "test_curve": curve,
                    "iterations": result.sweeps_completed,
                    "wall_time_s": result.wall_time,
                    "diverged_at": result.diverged_at,
                    "objective": np.asarray(h.objective, np.float64),
                    "movement": result.movement,
                }
            )
        candidates.append(candidate(dict(hyper) or {"defaults": True}, runs))
    return label, task, min(candidates, key=lambda c: c["score"]), candidates


def run_backprop(problem, split, name, seeds):
    import optax

    make, rates = {"Adam": (optax.adam, ADAM_RATES), "SGD": (optax.sgd, SGD_RATES)}[name]
    network = network_for(problem, None, problem["network"].get("bias", False))
    task = network.loss_fn.task
    candidates = []
    for rate in rates:
        runs = []
        for seed in seeds:
            # the initial weights of the problem's first family (fig2: Algorithm 3's)
            config = bcd_jax.Config(network=network, algorithm=problem["families"][0][1], seed=seed)
            params = initial_weights(problem, split, config, seed)
            result = fit_backprop(
                split.X_train,
                split.y_train,
                config,
                optimizer=make,
                learning_rate=rate,
                steps=problem["steps"],
                init_params=params,
                validation=(split.X_test, split.y_test),
                track_validation=True,
            )
            runs.append(
                {
                    "seed": seed,
                    "train_loss": result.train_loss,
                    "train_metric": result.metrics.train_mse if task == "regression" else result.metrics.train_accuracy,
                    "test_curve": result.val_curve,
                    "iterations": result.iterations,
                    "wall_time_s": result.wall_time,
                    "diverged_at": result.diverged_at,
                }
            )
        candidates.append(candidate({"learning_rate": rate, "steps": problem["steps"]}, runs))
    return f"{name} (full batch)", task, min(candidates, key=lambda c: c["score"]), candidates


def summarise(label, task, best, target, is_teacher):
    runs = best["runs"]
    tests = [r["test_curve"][-1] for r in runs]
    times = []
    for r in runs:
        # Adam's own row: the time each seed takes to reach its own final test metric
        goal = r["test_curve"][-1] if label.startswith("Adam") else target
        k = reached(r["test_curve"], goal, task)
        times.append(None if k is None else k * r["wall_time_s"] / max(r["iterations"], 1))
    row = {
        "method": label,
        "setting": best["setting"],
        "train_loss": float(np.mean([r["train_loss"][-1] for r in runs])),
        "train_metric": float(np.mean([r["train_metric"] for r in runs])),
        "test_metric": float(np.mean(tests)),
        "test_metric_std": float(np.std(tests)),
        "iterations": int(np.mean([r["iterations"] for r in runs])),
        "wall_time_s": float(np.mean([r["wall_time_s"] for r in runs])),
        "time_to_target_s": None if any(t is None for t in times) else float(np.median(times)),
        "reached_target": f"{sum(t is not None for t in times)}/{len(times)}",
        "diverged": [r["diverged_at"] for r in runs if r["diverged_at"] is not None],
    }
    if "objective" in runs[0]:
        row["rate"] = rate_summary(runs[0]["objective"], runs[0]["movement"], teacher=is_teacher)
    return row


def plot(name, curves, path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), dpi=110)
    for label, run in curves.items():
        t = np.arange(len(run["train_loss"])) * run["wall_time_s"] / max(run["iterations"], 1)
        style = "--" if label.startswith(("Adam", "SGD")) else "-"
        axes[0].plot(t[1:], run["test_curve"][1:], style, label=label)
        axes[1].plot(t[1:], run["train_loss"][1:], style, label=label)
    axes[0].set_ylabel("test MSE" if task == "regression" else "test accuracy")
    if task == "regression":
        axes[0].set_yscale("log")
    else:
        axes[0].set_ylim(max(0.0, min(0.8, axes[0].get_ylim()[1] - 0.3)), 1.0)
    axes[1].set_ylabel("training loss (each method's own loss)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("wall time (s), seed 0")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(name)
    fig.tight_layout()
    import io

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
        if problem.get("init") == "small":  # a custom initialisation is not part of a config
            continue
        families = {entry[0]: entry for entry in problem["families"]}
        target, task = block["target"], block["task"]
        for row in block["rows"]:
            if row["method"] not in families:  # Adam / SGD
                continue
            _, algorithm, loss, bias, sweeps, _ = families[row["method"]]
            hyper = {k: v for k, v in row["setting"].items() if k != "defaults"}
            network = network_for(problem, loss, bias)
            config = bcd_jax.Config(network=network, algorithm=algorithm, hyper=hyper, sweeps=sweeps)
            path = folder / f"{name}_{config.algorithm.name}.toml"
            header = (
                f"{name}: {row['method']}, the setting scripts/study.py kept (lowest mean final training loss "
                "of its grid).\n"
                f"Measured ({results['command'].strip()}): test {fmt_metric(row['test_metric'], task)} "
                f"(Adam: {fmt_metric(target, task)}), training loss {row['train_loss']:.3g}, "
                f"{row['wall_time_s']:.2f} s for {row['iterations']} sweeps (mean over seeds).\n"
                f"Run: bcd-jax run {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
            )
            atomic_write_text(path, dumps_experiment(config, problem["data"], header))
            written.append(path)
    return written


def problem_target(rows) -> float:
    return next(r["test_metric"] for r in rows if r["method"].startswith("Adam"))


def fmt_metric(value: float, task: str) -> str:
    return f"{value:.4f}" if task == "regression" else f"{100 * value:.1f}%"


def table(results: dict) -> str:
    lines = []
    for name, block in results["problems"].items():
        task = block["task"]
        metric = "MSE" if task == "regression" else "acc."
        lines += [
            f"### {name}",
            "",
            f"Adam's final test {metric}: {fmt_metric(block['target'], task)}, the target of the time column "
            "(Adam's own row: each seed's time to its own final value)",
            "",
            f"| method | kept setting | train loss | train {metric} | test {metric} (± sd) | iterations | wall s "
            "| s to Adam's test | rate (seed 0) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in block["rows"]:
            setting = ", ".join(f"{k}={v}" for k, v in row["setting"].items() if k not in ("name",))
            reach = f"{row['time_to_target_s']:.3f}" if row["time_to_target_s"] is not None else "never"
            if row["time_to_target_s"] is None and not row["reached_target"].startswith("0/"):
                reach = f"— (reached in {row['reached_target']} seeds)"
            lines.append(
                f"| {row['method']} | {setting} | {row['train_loss']:.3g} | {fmt_metric(row['train_metric'], task)} "
                f"| {fmt_metric(row['test_metric'], task)} ± {fmt_metric(row['test_metric_std'], task)} "
                f"| {row['iterations']} | {row['wall_time_s']:.3f} | {reach} | {row.get('rate', '')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method and setting (default 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, few iterations")
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
        help="train nothing: rewrite OUT/study.md (and --write-configs) from an earlier run's study.json",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds: expected >= 1, got {args.seeds}")
    seeds = list(range(1 if args.quick else args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        import json

        results = json.loads(args.from_json.read_text())
        atomic_write_text(args.out / "study.md", f"`{results['command'].strip()}`\n\n" + table(results))
        written = write_configs(args.write_configs, results) if args.write_configs is not None else []
        print(f"wrote {args.out}/study.md and {len(written)} configs")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "command": "python scripts/study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
        "problems": {},
    }
    started = time.perf_counter()
    for name in args.problems:
        problem = dict(PROBLEMS[name])
        if args.quick:
            problem["steps"] = 20
            problem["families"] = [(*f[:4], min(f[4], 3), f[5][:1]) for f in problem["families"]]
        probe = bcd_jax.Config(network=network_for(problem, None, False), algorithm=problem["families"][0][1])
        split = experiment_data(probe, problem["data"])
        is_teacher = split.name == "teacher"
        print(f"== {name}: {split.name}, n = {len(split.X_train)}, test {len(split.X_test)}", flush=True)
        adam = run_backprop(problem, split, "Adam", seeds)
        task = adam[1]
        target = float(np.mean([r["test_curve"][-1] for r in adam[2]["runs"]]))
        outcomes = [adam, run_backprop(problem, split, "SGD", seeds)]
        for entry in problem["families"]:
            print(f"   {entry[0]}", flush=True)
            outcomes.append(run_family(problem, split, entry, seeds))
        rows = [summarise(label, t, best, target, is_teacher) for label, t, best, _ in outcomes]
        curves = {label: best["runs"][0] for label, _, best, _ in outcomes}
        plot(name, curves, args.out / f"study_{name}.png", task)
        grids = {
            label: [{"setting": c["setting"], "mean_final_train_loss": c["score"]} for c in candidates]
            for label, _, _, candidates in outcomes
        }
        results["problems"][name] = {"task": task, "target": target, "rows": rows, "grids": grids}
        print(table({"problems": {name: results["problems"][name]}}), flush=True)
    results["total_seconds"] = time.perf_counter() - started
    atomic_write_text(args.out / "study.json", dumps_json(results, indent=1) + "\n")
    atomic_write_text(args.out / "study.md", f"`{results['command'].strip()}`\n\n" + table(results))
    if args.write_configs is not None:
        write_configs(args.write_configs, results)
    print(f"wrote {args.out}/study.json, study.md and study_<problem>.png ({results['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing anything
    sys.exit(main())
