"""bcd_jax against Adam on three small real data sets (scikit-learn's bundled copies, offline).

For each data set -- digits (10 classes), breast cancer (binary), diabetes (regression) -- the
same network (depth, width, LeakyReLU, bias column, the same initial weights from
``bcd_jax.init_params``) is trained

* by bcd_jax (``bcd_jax.fit``, Algorithm 1) with ``step_size="auto"``, once with the paper's
  inner gradient loops (``inner="gd"``) and once with their closed-form limits (``inner="exact"``);
* by full-batch Adam (optax) on the same loss with ``bcd_jax.baselines.fit_backprop`` (the
  network of ``bcd_jax.predict``, one compiled ``lax.scan``), for a small learning-rate grid;
  the row shown is the learning rate with the lowest FINAL TRAINING loss (the quantity both
  methods minimise; the test set plays no part in the choice).
  Every grid point is in the JSON.

Test metrics are those of the last iterate (no early stopping for either method). Wall times
exclude compilation (``FitResult.wall_time``; Adam is compiled first, then timed).

    python scripts/real_data.py            # the full run (a few minutes on 2 CPU cores)
    python scripts/real_data.py --quick    # a smoke run (seconds)

Prints a Markdown table and writes ``results/real_data.json``. Needs scikit-learn
(``pip install 'bcd_jax[datasets]'``) and optax.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

import bcd_jax
from bcd_jax import timing
from bcd_jax.baselines import fit_backprop
from bcd_jax.datasets import load_dataset
from bcd_jax.io import atomic_write_text, dumps_json

ROOT = Path(__file__).resolve().parent.parent

# The network and the loss of each data set. Same for both methods.
DATASETS = {
    "digits": dict(loss="softmax_cross_entropy", depth=3, width=64),
    "breast_cancer": dict(loss="logistic", depth=3, width=32),
    "diabetes": dict(loss="squared", depth=3, width=32),
}
NETWORK = dict(activation="leaky_relu", negative_slope=0.5, bias=True)
# bcd_jax runs (Algorithm 1's structure): every block's step is 1 / (its Lipschitz constant), recomputed each sweep.
BCD_VARIANTS = {
    "gd": dict(step_size="auto", inner="gd", k_v=20, k_w=20),
    "exact": dict(step_size="auto", inner="exact"),
}
ADAM_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2)


def run_bcd(data, config: bcd_jax.Config, params, repeats: int = 1) -> dict:
    """One bcd_jax.fit, repeated ``repeats`` times (identical results); the fastest wall time is kept."""
    walls, compile_time = [], None
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
        if compile_time is None:  # later calls hit the cache
            compile_time = result.compile_time
    h = result.history
    task = config.resolved_network.loss_fn.task
    row = {
        "iterations": result.sweeps_completed,
        "train_loss": float(h.train_loss[-1]),
        "wall_time_s": min(walls),
        "wall_times_s": walls,
        "compile_time_s": compile_time,
        "diverged_at": result.diverged_at,
        "warnings": sorted({str(w.message)[:200] for w in caught}),
        "train_loss_curve": h.train_loss.tolist(),
        # BCD's own split objective at the end: the output layer's loss on V_{L-1} and each hidden
        # layer's mismatch mean ||sigma(W_j V_{j-1}) - V_j||^2 (large for layer 1 when n > d_in + 1)
        "output_loss_final": float(h.output_loss[-1]),
        "layer_losses_final": h.layer_losses[-1].tolist(),
    }
    if task == "regression":
        row.update(train_metric=float(h.train_mse[-1]), test_metric=float(h.val_mse[-1]))
    else:
        row.update(train_metric=float(h.train_accuracy[-1]), test_metric=float(h.val_accuracy[-1]))
    return row


def run_adam(data, config: bcd_jax.Config, params, steps: int, learning_rates, repeats: int = 1) -> list[dict]:
    """Full-batch Adam on the network's loss for each learning rate (compiled once: the rate is traced)."""
    import optax

    regression = config.resolved_network.loss_fn.task == "regression"
    rows = []
    for lr in learning_rates:
        runs = [
            fit_backprop(
                data.X_train,
                data.y_train,
                config,
                optimizer=optax.adam,
                learning_rate=lr,
                steps=steps,
                init_params=params,
                validation=(data.X_test, data.y_test),
            )
            for _ in range(repeats)
        ]  # identical results; the fastest wall time is kept
        result, m = runs[0], runs[0].metrics
        rows.append(
            {
                "learning_rate": lr,
                "iterations": steps,
                "train_loss": m.train_loss,
                "train_metric": m.train_mse if regression else m.train_accuracy,
                "test_metric": m.val_mse if regression else m.val_accuracy,
                "wall_time_s": min(r.wall_time for r in runs),
                "wall_times_s": [r.wall_time for r in runs],
                "compile_time_s": result.compile_time,
                "diverged_at": result.diverged_at,
                "train_loss_curve": result.train_loss.tolist(),  # entry k: after k steps
            }
        )
    return rows


def pick_adam(rows: list[dict]) -> dict:
    """The learning rate with the lowest final training loss (a non-finite loss never wins)."""
    finite = [r for r in rows if np.isfinite(r["train_loss"])]
    return min(finite, key=lambda r: r["train_loss"]) if finite else rows[0]


def compact(obj, digits: int = 6):
    """Floats rounded to ``digits`` significant digits, recursively (keeps the JSON small)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if np.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: compact(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [compact(v, digits) for v in obj]
    return obj


def fmt(x, digits=4):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "nan"
    if x != 0 and abs(x) < 10 ** (1 - digits):
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def time_to_target(row: dict, target: float):
    """Iterations and seconds (pro rata of the wall time) until ``row``'s training loss first is <= ``target``."""
    curve = np.asarray(row["train_loss_curve"])
    hits = np.flatnonzero(curve <= target)
    if hits.size == 0:
        return None, None
    k = int(hits[0])
    return k, row["wall_time_s"] * k / max(len(curve) - 1, 1)


def markdown_table(results: dict) -> str:
    lines = [
        "| data set (n train / test, d) | method | iterations | train loss | train acc / MSE | test acc / MSE "
        "| wall s (compile s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["datasets"].items():
        label = f"{name} ({entry['n_train']} / {entry['n_test']}, {entry['num_features']})"
        metric = "MSE" if entry["task"] == "regression" else "acc"
        rows = [(f"bcd_jax, inner={variant}", r) for variant, r in entry["bcd"].items()]
        best = entry["adam_best"]
        rows.append((f"Adam, lr={best['learning_rate']:g}", best))
        for method, r in rows:
            div = f" (diverged at {r['diverged_at']})" if r["diverged_at"] is not None else ""
            lines.append(
                f"| {label} | {method}{div} | {r['iterations']} | {fmt(r['train_loss'])} "
                f"| {metric} {fmt(r['train_metric'])} "
                f"| {metric} {fmt(r['test_metric'])} | {r['wall_time_s']:.2f} ({r['compile_time_s']:.1f}) |"
            )
            label = ""
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few sweeps/steps, two learning rates")
    parser.add_argument("--sweeps", type=int, default=300, help="bcd_jax sweeps (default 300)")
    parser.add_argument("--adam-steps", type=int, default=2000, help="full-batch Adam steps (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the initial weights")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per method (identical results); the fastest is reported (default 3)",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "real_data.json")
    args = parser.parse_args(argv)
    sweeps, steps, learning_rates = args.sweeps, args.adam_steps, ADAM_LEARNING_RATES
    if args.quick:
        sweeps, steps, learning_rates = 10, 50, (3e-3, 3e-2)
        args.repeats = 1

    results = {
        "protocol": {
            "network": NETWORK,
            "bcd": {"algorithm": "monotone (Algorithm 1)", "sweeps": sweeps, "variants": BCD_VARIANTS},
            "adam": {
                "steps": steps,
                "full_batch": True,
                "learning_rates": list(learning_rates),
                "selection": "lowest final training loss (test set not used)",
            },
            "metrics": "last iterate; losses on bcd_jax's reported scale (squared: mean ||f(x)-y||^2); "
            "diabetes targets standardised with training statistics (MSE 1 = predicting the mean)",
            "timing": f"seconds of the compiled run, compilation excluded; fastest of {args.repeats} identical runs",
            "quick": args.quick,
            "seed": args.seed,
        },
        "environment": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": timing.load_average(),
        },
        "datasets": {},
    }
    for name in args.datasets:
        data = load_dataset(name, seed=args.seed)
        spec = DATASETS[name]
        base = bcd_jax.Config(network=bcd_jax.Network(**NETWORK, **spec), algorithm="monotone", sweeps=sweeps)
        d_out = data.num_classes if data.task == "multiclass" else 1
        params = bcd_jax.init_params(jax.random.key(args.seed), base, data.num_features, d_out)
        entry = {
            "task": data.task,
            "n_train": len(data.y_train),
            "n_test": len(data.y_test),
            "num_features": data.num_features,
            "network": {**NETWORK, **spec},
            "bcd": {},
            "bcd_configs": {},
        }
        if data.task == "regression":
            entry["target_scale"] = data.target_scale
        for variant, extra in BCD_VARIANTS.items():
            config = base.replace(algorithm=bcd_jax.Akiyama("monotone", **extra))
            print(f"[{name}] bcd_jax inner={variant} ...", file=sys.stderr, flush=True)
            entry["bcd"][variant] = run_bcd(data, config, params, args.repeats)
            entry["bcd_configs"][variant] = config.to_dict()
        print(f"[{name}] Adam ...", file=sys.stderr, flush=True)
        entry["adam_grid"] = run_adam(data, base, params, steps, learning_rates, args.repeats)
        entry["adam_best"] = pick_adam(entry["adam_grid"])
        results["datasets"][name] = entry

    results["environment"]["load_average_at_end"] = timing.load_average()
    table = markdown_table(results)
    print(table)
    print()
    for name, entry in results["datasets"].items():
        grid = ", ".join(
            f"lr {r['learning_rate']:g}: train loss {fmt(r['train_loss'])}, test {fmt(r['test_metric'])}"
            for r in entry["adam_grid"]
        )
        print(f"- {name}, Adam grid: {grid}")
        best = entry["adam_best"]
        for variant, r in entry["bcd"].items():
            k, t = time_to_target(best, r["train_loss"])
            r["adam_to_this_train_loss"] = {"steps": k, "seconds": t}
            reached = f"after {k} steps ({t:.3f} s)" if k is not None else "never"
            print(
                f"  Adam (lr {best['learning_rate']:g}) reaches bcd_jax inner={variant}'s final training loss "
                f"{fmt(r['train_loss'])} {reached}; bcd_jax took {r['wall_time_s']:.2f} s"
            )
    results["table_markdown"] = table
    for entry in results["datasets"].values():  # Adam's curves: every 10th step (and the last) in the JSON
        for row in entry["adam_grid"]:
            curve = row.pop("train_loss_curve")
            row["train_loss_curve_every_10_steps"] = curve[::10] + ([curve[-1]] if (len(curve) - 1) % 10 else [])
        entry["adam_best"] = pick_adam(entry["adam_grid"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, dumps_json(compact(results), indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
