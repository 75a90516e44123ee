"""Reproduces the paper's Figure 1 or Figure 2 (Section 6) from an experiment file.

    python scripts/paper_figures.py configs/paper_fig1.toml            # -> results/paper_fig1/
    python scripts/paper_figures.py configs/paper_fig2.toml --out DIR
    python scripts/paper_figures.py configs/paper_fig1.toml --quick    # 3 sweeps -> results/paper_fig1-quick/

Prints a short table, and writes into the output folder: ``figure.png`` (log-scale training
error and per-layer losses against sweeps), ``history_<algorithm>.csv`` (every diagnostic of
every sweep) and ``summary.json`` (the headline numbers). Only those three kinds of files
are written, each atomically; anything else in the folder is left alone.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

from bcd_jax.experiments import load_experiment, plot_experiment, run_experiment, summarize
from bcd_jax.io import atomic_write_text, dumps_json

QUICK_SWEEPS = 3

# Column names of the paper's diagnostics (index j is 1-based: W_j, V_j, layer j).
_COLUMNS = {
    "layer_losses": "layer{}_loss",
    "sv_min": "sv_min_W{}",
    "sv_max": "sv_max_W{}",
    "v_gram_max": "lambda_max_VVt_{}",
}


def _fields(record, prefix=""):
    """``(name, array)`` of every leaf of a record, extras flattened (``extras.spectral.sv_min`` -> ``sv_min``)."""
    for name, value in record._asdict().items():
        if hasattr(value, "_asdict"):
            yield from _fields(value, prefix)
        else:
            yield name, value


def _history_csv(result) -> str:
    """One row per history entry (entry 0: the initial state), one column per recorded value."""
    h = result.history
    fields = dict(_fields(h))
    names = ["train_mse"] + [f for f in fields if f != "train_mse"]  # the paper's figure plots train_mse
    header, columns = ["sweep"], []
    for name in names:
        values = np.asarray(fields[name], dtype=np.float64)
        if values.ndim == 1:
            header.append(name)
            columns.append(values[:, None])
        else:
            pattern = _COLUMNS.get(name, name + "_{}")
            header += [pattern.format(j) for j in range(1, values.shape[1] + 1)]
            columns.append(values)
    table = np.concatenate(columns, axis=1)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for k, row in enumerate(table):
        writer.writerow([k] + [f"{v:.9e}" for v in row])
    return buf.getvalue()


def _describe(config, data) -> str:
    network, algorithm = config.resolved_network, config.algorithm
    structure = ", ".join(f"{k}={v}" for k, v in algorithm.describe().items() if k != "name")
    hyper = ", ".join(f"{k}={v:g}" for k, v in config.hyper._asdict().items())
    return (
        f"{algorithm.name} ({structure}), {network.activation}, L={network.depth}, r={network.width}, "
        f"n={data.n}, d_in={data.d_in}, {hyper}, K={config.sweeps}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="experiment TOML, e.g. configs/paper_fig1.toml")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default results/<config name>, with --quick results/<config name>-quick)",
    )
    parser.add_argument("--sweeps", type=int, default=None, help="override the number of sweeps K")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_SWEEPS} sweeps")
    parser.add_argument(
        "--check-sweep", type=int, default=30, help="sweep at which the table reports the ratio (default 30)"
    )
    args = parser.parse_args(argv)

    experiment = load_experiment(args.config)
    sweeps = QUICK_SWEEPS if args.quick and args.sweeps is None else args.sweeps
    if sweeps is not None:
        experiment = experiment.with_overrides({"sweeps": sweeps})
    config, data = experiment.config, experiment.data
    default_out = Path("results") / (args.config.stem + ("-quick" if args.quick else ""))
    out = args.out if args.out is not None else default_out
    out.mkdir(parents=True, exist_ok=True)

    print(f"bcd_jax: {args.config}  ({_describe(config, data)})")
    print(
        f"device: {jax.devices()[0].platform} ({platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores), jax {jax.__version__}"
    )
    results = run_experiment(experiment)

    main_name = config.algorithm.name
    main_hist = results[main_name].history
    entries = len(main_hist.train_mse)
    show = sorted({0, 1, 2, 5, 10, 20, 30, 40, 50, 100, entries - 1} & set(range(entries)))
    names = list(results)
    layer_losses = getattr(main_hist.extras, "layer_losses", None)
    layers = [] if layer_losses is None else list(range(1, np.shape(layer_losses)[1] + 1))
    head = (
        f"{'sweep':>5}  "
        + "  ".join(f"{'mse ' + n:>22}" for n in names)
        + "  "
        + "  ".join(f"{'layer' + str(j):>9}" for j in layers)
    )
    print(head)
    for k in show:
        cells = []
        for n in names:
            mse = results[n].history.train_mse
            cells.append(f"{mse[k]:>22.3e}" if k < len(mse) else f"{'-':>22}")
        row = "  ".join(f"{v:>9.2e}" for v in layer_losses[k]) if layers and k > 0 else ""
        print(f"{k:>5}  " + "  ".join(cells) + "  " + row)

    summary = {
        "config": str(args.config),
        "run": config.to_dict(),
        "data": {
            "n": data.n,
            "d_in": data.d_in,
            "teacher_width": data.teacher_width,
            "d_out": data.d_out,
            "seed": data.seed,
        },
        "machine": {
            "platform": jax.devices()[0].platform,
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "python": sys.version.split()[0],
        },
        "runs": {n: summarize(r, at_sweep=args.check_sweep) for n, r in results.items()},
    }
    for n, s in summary["runs"].items():
        layer_note = f", max layer loss {s['max_layer_loss_any_sweep']:.2e}" if "max_layer_loss_any_sweep" in s else ""
        print(
            f"{n}: train MSE {s['initial_train_mse']:.3e} -> {s['final_train_mse']:.3e} "
            f"(x{s['ratio_final']:.2e}; at sweep {s['check_sweep']}: x{s['ratio_at_check']:.2e}), "
            f"monotone={s['monotone']}{layer_note}, "
            f"{1e3 * s['seconds_per_sweep']:.1f} ms/sweep, compile {s['compile_seconds']:.2f} s"
        )
    if len(names) > 1:
        base = summary["runs"][main_name]["final_train_mse"]
        for n in names[1:]:
            ratio = summary["runs"][n]["final_train_mse"] / base
            summary["runs"][n]["final_mse_over_main"] = ratio
            print(f"{n} ends {ratio:.1f}x higher than {main_name} after {config.sweeps} sweeps")

    for n, r in results.items():
        atomic_write_text(out / f"history_{n}.csv", _history_csv(r))
    atomic_write_text(out / "summary.json", dumps_json(summary, indent=2) + "\n")
    plot_experiment(results, out / "figure.png", title=f"{args.config.stem}: {config.algorithm.paper}")
    print(f"wrote {out / 'figure.png'}, {out / 'summary.json'}, history_*.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
