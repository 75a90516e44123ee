"""A deep (10-layer) MLP on the digits: bcd_jax against plain mini-batch SGD backpropagation.

The related-work claim (Zeng et al., ICML 2019): on a 10-layer MLP, BCD keeps making progress
where plain SGD stalls because its gradients vanish. Here both methods train the SAME network --
depth L = 10 (9 hidden layers of width 64), LeakyReLU(0.5), a bias column, softmax cross-entropy,
on scikit-learn's bundled digits (1347 training images) -- from the SAME initial weights, for
two initialisations:

* ``svb``: bcd_jax's own initialisation (Gaussian, then singular value bounding to
  [0.75, 1.25] on W_2..W_L, the paper's Algorithm 2) -- a well-conditioned deep network;
* ``small``: every weight ~ N(0, 0.01^2), the initialisation of Zeng et al.'s SGD baseline
  (their Keras notebook: RandomNormal(stddev=0.01)), under which the signal and the gradients
  shrink geometrically with depth.

bcd_jax runs Algorithm 1 with ``step_size="auto"`` (each block's step is eta over its
Lipschitz constant), ``eta_v = 0.3``, K_V = K_W = 10, one sweep per iteration. SGD runs plain
mini-batch SGD (batch 64, reshuffled every epoch, no momentum) for a learning-rate grid; the
curve drawn solid is the learning rate with the lowest final training loss, the others faint.
For reference (not part of the claim), mini-batch Adam on the same batches is drawn dashed
(``--no-adam`` leaves it out).
One sweep and one epoch both visit every training sample once. Both backprop runs are
``bcd_jax.baselines.fit_backprop`` (mini-batches, the network's loss). Wall times exclude
compilation; the wall-time axis spreads each run's total time evenly over its iterations.

    python scripts/deep_mlp.py            # the full run (a few minutes on 2 CPU cores)
    python scripts/deep_mlp.py --quick    # a smoke run

Writes ``results/deep_mlp.png`` and ``results/deep_mlp.json`` and prints a Markdown table.
Needs scikit-learn (``pip install 'bcd_jax[datasets]'``), optax and matplotlib.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bcd_jax
from bcd_jax import timing
from bcd_jax.baselines import fit_backprop, objective
from bcd_jax.datasets import load_digits
from bcd_jax.io import atomic_write, atomic_write_text, dumps_json

ROOT = Path(__file__).resolve().parent.parent
NETWORK = dict(depth=10, width=64, activation="leaky_relu", negative_slope=0.5, bias=True, loss="softmax_cross_entropy")
BCD = dict(step_size="auto", k_v=10, k_w=10)  # Algorithm 1's structure
BCD_HYPER = dict(eta_v=0.3)
SGD_LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
SGD_BATCH = 64
ADAM_LEARNING_RATES = (1e-3, 1e-2)  # reference line only (not plain SGD); same batches
SMALL_STD = 0.01


def initial_weights(kind: str, config: bcd_jax.Config, d_in: int, d_out: int, seed: int):
    if kind == "svb":
        return bcd_jax.init_params(jax.random.key(seed), config, d_in, d_out)
    shapes = [w.shape for w in bcd_jax.init_params(jax.random.key(seed), config, d_in, d_out)]
    keys = jax.random.split(jax.random.key(seed + 1000), len(shapes))
    return tuple(SMALL_STD * jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes))


def gradient_norms(params, X, Y, config) -> list[float]:
    """Frobenius norm of the full-batch gradient of each W_j (layer 1 first) at ``params``."""
    grads = jax.grad(objective)(tuple(params), jnp.asarray(X), jnp.asarray(Y), config)
    return [float(jnp.linalg.norm(g)) for g in grads]


def run_bcd(data, config, params, repeats: int = 1) -> dict:
    """bcd_jax.fit, run ``repeats`` times (identical results); the fastest wall time is kept."""
    walls, compile_times = [], []
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = bcd_jax.fit(
                data.X_train,
                data.y_train,
                config,
                init_params=params,
                validation=(data.X_test, data.y_test),
                progress=None,
            )
        walls.append(result.wall_time)
        compile_times.append(result.compile_time)
    h = result.history
    return {
        "iterations": result.sweeps_completed,
        "train_loss": h.train_loss.tolist(),
        "train_accuracy": h.train_accuracy.tolist(),
        "test_accuracy": h.val_accuracy.tolist(),
        "layer_losses_final": h.layer_losses[-1].tolist(),
        "wall_time_s": min(walls),
        "wall_times_s": walls,
        "compile_time_s": max(compile_times),
        "diverged_at": result.diverged_at,
        "warnings": sorted({str(w.message)[:200] for w in caught}),
    }


def run_sgd(
    data, config, params, epochs: int, learning_rates, seed: int, repeats: int = 1, optimizer_name: str = "sgd"
) -> list[dict]:
    """Mini-batch backprop (batch ``SGD_BATCH``, reshuffled every epoch) for each learning rate.

    ``optimizer_name`` is ``"sgd"`` (plain, no momentum) or ``"adam"`` (the reference line).
    The learning rate is traced, so the grid compiles once.
    """
    import optax

    make = {"sgd": optax.sgd, "adam": optax.adam}[optimizer_name]
    rows = []
    for lr in learning_rates:
        runs = [
            fit_backprop(
                data.X_train,
                data.y_train,
                config,
                optimizer=make,
                learning_rate=lr,
                epochs=epochs,
                batch_size=SGD_BATCH,
                shuffle_seed=seed + 2000,
                init_params=params,
                validation=(data.X_test, data.y_test),
            )
            for _ in range(repeats)
        ]  # identical results; the fastest wall time is kept
        result = runs[0]
        rows.append(
            {
                "learning_rate": lr,
                "iterations": epochs,
                "train_loss": result.train_loss.tolist(),
                "train_accuracy_final": result.metrics.train_accuracy,
                "test_accuracy_final": result.metrics.val_accuracy,
                "wall_time_s": min(r.wall_time for r in runs),
                "wall_times_s": [r.wall_time for r in runs],
                "compile_time_s": result.compile_time,
            }
        )
    return rows


def compact(obj, digits: int = 6):
    """Floats rounded to ``digits`` significant digits, recursively (keeps the JSON small)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if np.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: compact(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [compact(v, digits) for v in obj]
    return obj


def fmt(x: float) -> str:
    """4 decimals, or 2 significant digits in e-notation below 1e-3."""
    if not np.isfinite(x):
        return "nan"
    return f"{x:.1e}" if x != 0 and abs(x) < 1e-3 else f"{x:.4f}"


def best_sgd(rows):
    finite = [r for r in rows if np.isfinite(r["train_loss"][-1])]
    return min(finite, key=lambda r: r["train_loss"][-1]) if finite else rows[0]


def plot(results: dict, path: Path) -> None:
    """One row per initialisation: training loss against iterations (left) and wall time (right, log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inits = list(results["runs"])
    fig, axes = plt.subplots(len(inits), 2, figsize=(11, 4.0 * len(inits)), squeeze=False)
    for row, init in enumerate(inits):
        run = results["runs"][init]
        bcd, sgd_rows, best = run["bcd"], run["sgd_grid"], run["sgd_best"]
        for col, axis_kind in enumerate(("iterations", "seconds")):
            ax = axes[row, col]

            def curve(r):
                k = np.arange(len(r["train_loss"]))
                y = np.asarray(r["train_loss"], float)
                if axis_kind == "iterations":
                    return k, y
                return (k * r["wall_time_s"] / max(len(k) - 1, 1))[1:], y[1:]  # log axis: from iteration 1

            for r in sgd_rows:
                if r is not best:
                    ax.plot(*curve(r), color="tab:orange", alpha=0.3, lw=0.8)
            ax.plot(
                *curve(best),
                color="tab:orange",
                lw=2,
                label=f"SGD backprop, best lr {best['learning_rate']:g} (faint: the other lr)",
            )
            if "adam_best" in run:
                adam = run["adam_best"]
                ax.plot(
                    *curve(adam),
                    color="tab:green",
                    lw=1.2,
                    ls="--",
                    label=f"reference: mini-batch Adam, best lr {adam['learning_rate']:g}",
                )
            ax.plot(*curve(bcd), color="tab:blue", lw=2, label="bcd_jax (Algorithm 1, auto steps)")
            ax.set_yscale("log")
            if axis_kind == "iterations":
                ax.set_xlabel("sweeps (bcd_jax) = epochs (SGD): passes over the data")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("wall time, s (log; compilation excluded)")
            ax.set_ylabel("training loss (cross-entropy)")
            ax.set_title(f"init '{init}': {results['inits_short'][init]}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        "10-layer MLP (9 hidden layers of width 64, LeakyReLU 0.5) on digits; "
        "same network and initial weights for both methods",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few sweeps/epochs, two learning rates")
    parser.add_argument("--iterations", type=int, default=300, help="bcd_jax sweeps = SGD epochs (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="timed runs per method (identical results); the fastest is reported (default 2)",
    )
    parser.add_argument("--inits", nargs="+", default=["svb", "small"], choices=["svb", "small"])
    parser.add_argument("--no-adam", action="store_true", help="leave out the mini-batch Adam reference line")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "results" / "deep_mlp.png",
        help="the figure; the JSON goes next to it with suffix .json",
    )
    args = parser.parse_args(argv)
    iterations, learning_rates, adam_rates = args.iterations, SGD_LEARNING_RATES, ADAM_LEARNING_RATES
    if args.quick:
        iterations, learning_rates, adam_rates = 5, (0.03, 0.3), (1e-2,)
        args.repeats = 1

    data = load_digits(seed=args.seed)
    config = bcd_jax.Config(
        network=bcd_jax.Network(**NETWORK),
        algorithm=bcd_jax.Akiyama("monotone", **BCD),
        hyper=BCD_HYPER,
        sweeps=iterations,
    )
    Y_onehot = np.eye(data.num_classes, dtype=np.float32)[data.y_train]
    results = {
        "protocol": {
            "network": NETWORK,
            "bcd": {**BCD, **BCD_HYPER, "algorithm": "monotone (Algorithm 1)", "sweeps": iterations},
            "sgd": {
                "batch_size": SGD_BATCH,
                "epochs": iterations,
                "learning_rates": list(learning_rates),
                "momentum": 0,
                "selection": "lowest final training loss",
            },
            "adam_reference": None
            if args.no_adam
            else {
                "batch_size": SGD_BATCH,
                "epochs": iterations,
                "learning_rates": list(adam_rates),
                "selection": "lowest final training loss",
            },
            "data": f"digits, {len(data.y_train)} train / {len(data.y_test)} test, standardised",
            "seed": args.seed,
            "timing": f"compiled run only, fastest of {args.repeats} identical runs; the wall-time axis spreads "
            "each run's total evenly over its iterations",
            "quick": args.quick,
        },
        "inits": {
            "svb": "bcd_jax.init_params (Gaussian + singular value bounding [0.75, 1.25], Algorithm 2)",
            "small": f"all weights ~ N(0, {SMALL_STD}^2) (Zeng et al.'s SGD baseline init)",
        },
        "inits_short": {
            "svb": "bcd_jax.init_params (Algorithm 2, SVB [0.75, 1.25])",
            "small": f"N(0, {SMALL_STD}^2) weights (Zeng et al.'s baseline)",
        },
        "environment": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": timing.load_average(),
        },
        "runs": {},
    }
    for init in args.inits:
        params = initial_weights(init, config, data.num_features, data.num_classes, args.seed)
        print(f"[{init}] bcd_jax ...", file=sys.stderr, flush=True)
        bcd = run_bcd(data, config, params, args.repeats)
        print(f"[{init}] SGD ...", file=sys.stderr, flush=True)
        grid = run_sgd(data, config, params, iterations, learning_rates, args.seed, args.repeats)
        results["runs"][init] = {
            "gradient_norms_at_init": gradient_norms(params, data.X_train, Y_onehot, config),
            "bcd": bcd,
            "sgd_grid": grid,
            "sgd_best": best_sgd(grid),
        }
        if not args.no_adam:
            print(f"[{init}] Adam (reference) ...", file=sys.stderr, flush=True)
            adam = run_sgd(data, config, params, iterations, adam_rates, args.seed, args.repeats, "adam")
            results["runs"][init].update(adam_grid=adam, adam_best=best_sgd(adam))
    results["environment"]["load_average_at_end"] = timing.load_average()

    checkpoints = sorted(k for k in {0, 1, 10, iterations // 10, iterations // 3, iterations} if k <= iterations)
    header = (
        "| init | method | "
        + " | ".join(f"loss @ {k}" for k in checkpoints)
        + " | train acc | test acc | wall s (compile s) |"
    )
    lines = [header, "| " + " | ".join(["---"] * (header.count("|") - 1)) + " |"]
    for init, run in results["runs"].items():
        bcd, best = run["bcd"], run["sgd_best"]
        entries = [
            ("bcd_jax", bcd["train_loss"], bcd["train_accuracy"][-1], bcd["test_accuracy"][-1], bcd),
            (
                f"SGD lr {best['learning_rate']:g}",
                best["train_loss"],
                best["train_accuracy_final"],
                best["test_accuracy_final"],
                best,
            ),
        ]
        if "adam_best" in run:
            a = run["adam_best"]
            entries.append(
                (
                    f"(reference) Adam lr {a['learning_rate']:g}",
                    a["train_loss"],
                    a["train_accuracy_final"],
                    a["test_accuracy_final"],
                    a,
                )
            )
        for method, curve, tr, te, r in entries:
            losses = " | ".join(fmt(curve[k]) if k < len(curve) else "-" for k in checkpoints)
            seconds = f"{r['wall_time_s']:.2f} ({r['compile_time_s']:.1f})"
            lines.append(f"| {init} | {method} | {losses} | {tr:.4f} | {te:.4f} | {seconds} |")
    table = "\n".join(lines)
    print(table)
    print()
    for init, run in results["runs"].items():
        g = run["gradient_norms_at_init"]
        print(f"- {init}: |dL/dW_j| at init, layer 1 .. 10: " + ", ".join(f"{x:.1e}" for x in g))
        for name in ("sgd", "adam"):
            if f"{name}_grid" in run:
                print(
                    f"  {name.upper()} grid (final training loss): "
                    + ", ".join(f"lr {r['learning_rate']:g}: {fmt(r['train_loss'][-1])}" for r in run[f"{name}_grid"])
                )
    results["table_markdown"] = table

    plot(results, args.out)
    json_path = args.out.with_suffix(".json")
    atomic_write_text(json_path, dumps_json(compact(results), indent=1))
    print(f"\nwrote {args.out} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
