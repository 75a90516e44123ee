"""Reproduces the paper's Figure 1 or Figure 2 (Section 6) from a config file.

    python scripts/paper_figures.py configs/paper_fig1.toml            # -> results/paper_fig1/
    python scripts/paper_figures.py configs/paper_fig2.toml --out DIR

Prints a short table, and writes into the output folder: ``figure.png`` (log-scale training
error and per-layer losses against sweeps), ``history_<algorithm>.csv`` (every diagnostic of
every sweep) and ``summary.json`` (the headline numbers). Only those three kinds of files
are written; anything else in the folder is left alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from bcd_jax.experiments import load_experiment, plot_experiment, run_experiment, summarize


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _history_csv(result) -> str:
    h = result.history
    L = result.config.depth
    header = ["sweep", "train_mse", "objective", "output_loss"]
    header += [f"layer{j}_loss" for j in range(1, L)]
    header += [f"sv_min_W{j}" for j in range(1, L + 1)] + [f"sv_max_W{j}" for j in range(1, L + 1)]
    header += [f"lambda_max_VVt_{j}" for j in range(1, L)]
    rows = []
    for k in range(len(h.train_mse)):
        rows.append(
            [k, h.train_mse[k], h.objective[k], h.output_loss[k], *h.layer_losses[k], *h.sv_min[k], *h.sv_max[k], *h.v_gram_max[k]]
        )
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[0]] + [f"{float(v):.9e}" for v in row[1:]])
    return buf.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="experiment TOML, e.g. configs/paper_fig1.toml")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/<config name>)")
    parser.add_argument("--sweeps", type=int, default=None, help="override the number of sweeps K")
    parser.add_argument("--check-sweep", type=int, default=30, help="sweep at which the table reports the ratio (default 30)")
    args = parser.parse_args(argv)

    config, data, experiment = load_experiment(args.config)
    if args.sweeps is not None:
        config = config.replace(sweeps=args.sweeps)
    out = args.out if args.out is not None else Path("results") / args.config.stem
    out.mkdir(parents=True, exist_ok=True)

    print(f"bcd_jax: {args.config}  ({config.algorithm}, {config.activation}, L={config.depth}, r={config.width}, "
          f"n={data.n}, d_in={data.d_in}, K_V={config.k_v}, K_W={config.k_w}, gamma={config.gamma}, K={config.sweeps})")
    print(f"device: {jax.devices()[0].platform} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), jax {jax.__version__}")
    results = run_experiment(config, data, experiment)

    main_name = config.algorithm
    main_hist = results[main_name].history
    show = sorted({0, 1, 2, 5, 10, 20, 30, 40, 50, 100, len(main_hist.train_mse) - 1} & set(range(len(main_hist.train_mse))))
    names = list(results)
    head = f"{'sweep':>5}  " + "  ".join(f"{'mse ' + n:>22}" for n in names) + "  " + "  ".join(
        f"{'layer' + str(j):>9}" for j in range(1, config.depth)
    )
    print(head)
    for k in show:
        cells = []
        for n in names:
            mse = results[n].history.train_mse
            cells.append(f"{mse[k]:>22.3e}" if k < len(mse) else f"{'-':>22}")
        layers = "  ".join(f"{v:>9.2e}" for v in main_hist.layer_losses[k])
        print(f"{k:>5}  " + "  ".join(cells) + "  " + layers)

    summary = {
        "config": str(args.config),
        "machine": {"platform": jax.devices()[0].platform, "cpu_count": os.cpu_count(), "jax": jax.__version__,
                    "python": sys.version.split()[0]},
        "runs": {n: summarize(r, at_sweep=args.check_sweep) for n, r in results.items()},
    }
    for n, s in summary["runs"].items():
        print(f"{n}: train MSE {s['initial_train_mse']:.3e} -> {s['final_train_mse']:.3e} "
              f"(x{s['ratio_final']:.2e}; at sweep {s['check_sweep']}: x{s['ratio_at_check']:.2e}), "
              f"monotone={s['monotone']}, max layer loss {s['max_layer_loss_any_sweep']:.2e}, "
              f"{1e3 * s['seconds_per_sweep']:.1f} ms/sweep, compile {s['compile_seconds']:.2f} s")
    if len(names) > 1:
        base = summary["runs"][main_name]["final_train_mse"]
        for n in names[1:]:
            ratio = summary["runs"][n]["final_train_mse"] / base
            summary["runs"][n]["final_mse_over_main"] = ratio
            print(f"{n} ends {ratio:.1f}x higher than {main_name} after {config.sweeps} sweeps")

    for n, r in results.items():
        _atomic_write_text(out / f"history_{n}.csv", _history_csv(r))
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    title = f"{args.config.stem}: {results[main_name].config.algorithm_spec.paper}"
    png_tmp = out / ".figure.tmp.png"
    plot_experiment(results, png_tmp, title=title)
    os.replace(png_tmp, out / "figure.png")
    print(f"wrote {out / 'figure.png'}, {out / 'summary.json'}, history_*.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
