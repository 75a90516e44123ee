"""The ``bcd-jax`` command line: train from an experiment file, run a sweep, run the benchmark.

    bcd-jax run configs/paper_fig1.toml --set sweeps=10 --set gamma=0.3   # -> results/paper_fig1/
    bcd-jax run configs/paper_fig1.toml --checkpoint-every 10 --out results/fig1
    bcd-jax run configs/paper_fig1.toml --resume results/fig1 --checkpoint-every 10 --set sweeps=80
    bcd-jax sweep configs/sweep_fig1.toml                                # -> results/sweep_fig1/
    bcd-jax bench --quick                                                # scripts/bench.py --quick

``python -m bcd_jax`` is the same program. Errors in the input (an unknown ``--set`` key, a
bad value, an existing output folder) print one line naming the argument and exit with 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import runpy
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_overrides", "apply_overrides"]

_RUN_FILES = ("config.json", "diagnostics.jsonl", "params.npz", "loss.png")


class CLIError(ValueError):
    """A user error on the command line: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------
# --set key=value
# --------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parses ``--set key=value`` items; values follow TOML (``50``, ``0.3``, ``[0.5, 1.5]``, ``"gd"``).

    A value that is not valid TOML is taken as a plain string, so ``--set inner=exact`` works.
    Keys are checked by :func:`apply_overrides`.
    """
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--set: expected key=value, got {item!r}")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out[key] = value
    return out


def apply_overrides(config, data, overrides: dict[str, Any]):
    """Returns ``(config, data)`` with the overrides applied; keys are Config fields or ``data.<field>``."""
    from bcd_jax.config import Config
    from bcd_jax.experiments import DataSpec
    from bcd_jax.sweeps import check_data_spec

    config_keys = [f.name for f in dataclasses.fields(Config)]
    data_keys = [f.name for f in dataclasses.fields(DataSpec)]
    for key, value in overrides.items():
        shown = f"--set {key}={value!r}"
        try:
            if key in config_keys:
                config = config.replace(**{key: value})
            elif key.startswith("data.") and key[5:] in data_keys:
                data = check_data_spec(dataclasses.replace(data, **{key[5:]: value}))
            else:
                raise CLIError(
                    f"--set: unknown key {key!r}; expected a Config field {config_keys} or data.<field> with a "
                    f"field of {data_keys}"
                )
        except CLIError:
            raise
        except (ValueError, TypeError) as exc:
            raise CLIError(f"{shown}: {exc}") from None
    return config, data


# --------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _json_ready(value):
    """An array as nested lists of Python numbers; NaN and inf become None (strict JSON has neither)."""
    import numpy as np

    a = np.asarray(value)
    if a.dtype.kind != "f":
        return a.tolist()
    return np.where(np.isfinite(a), a.astype(object), None).tolist()


def _cmd_run(args) -> int:
    import jax
    import numpy as np

    from bcd_jax.checkpoint import CHECKPOINT_FILE, config_to_dict
    from bcd_jax.experiments import teacher_data
    from bcd_jax.experiments import load_experiment, plot_experiment
    from bcd_jax.solver import fit

    config, data, _ = load_experiment(args.config)
    config, data = apply_overrides(config, data, parse_overrides(args.set))
    try:
        import matplotlib  # noqa: F401  (loss.png; checked before training, not after)
    except ImportError:
        raise CLIError("run: writing loss.png needs matplotlib; pip install 'bcd_jax[plot]'") from None
    if args.resume is not None:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise CLIError(f"--out: {str(args.out)!r} differs from --resume {str(args.resume)!r}; a resumed run "
                           "writes into its own folder, so give only --resume")
        out = Path(args.resume)
        if not (out / "checkpoint" / CHECKPOINT_FILE).is_file():
            raise CLIError(f"--resume: no checkpoint at {str(out / 'checkpoint' / CHECKPOINT_FILE)!r}; expected the "
                           "output folder of an earlier 'bcd-jax run'")
    else:
        out = Path(args.out) if args.out is not None else Path("results") / Path(args.config).stem
        if _is_nonempty_dir(out) and not args.overwrite:
            raise CLIError(f"--out: {str(out)!r} exists and is not empty; pass --overwrite to replace its run, "
                           "or --resume to continue it")
    checkpoint_dir = out / "checkpoint"
    if args.overwrite and args.resume is None:
        (checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # a fresh run, not a continuation
    out.mkdir(parents=True, exist_ok=True)

    X, Y = teacher_data(config, data)
    if not args.quiet:
        print(f"bcd-jax run {args.config}: {config.algorithm}, L={config.depth}, r={config.width}, n={data.n}, "
              f"d_in={data.d_in}, K_V={config.k_v}, K_W={config.k_w}, gamma={config.gamma}, K={config.sweeps}"
              + (f", resuming {out}" if args.resume is not None else ""))
    result = fit(X, Y, config, key=jax.random.key(config.seed), checkpoint_dir=checkpoint_dir,
                 checkpoint_every=args.checkpoint_every, resume=args.resume is not None, quiet=args.quiet,
                 callback=None)

    resolved = {**config_to_dict(config), "data": dataclasses.asdict(data)}
    _atomic_write(out / "config.json", json.dumps(resolved, indent=2) + "\n")
    h = result.history
    lines = []
    for k in range(len(h.train_mse)):
        lines.append(json.dumps({"sweep": k, **{name: _json_ready(v[k]) for name, v in h._asdict().items()}}))
    _atomic_write(out / "diagnostics.jsonl", "\n".join(lines) + "\n")
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".params.npz.")
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, **{f"W_{j}": np.asarray(w) for j, w in enumerate(result.params, start=1)})
    os.replace(tmp, out / "params.npz")
    tmp_png = out / ".loss.tmp.png"
    title = f"{Path(args.config).stem}: {config.algorithm_spec.paper}"
    plot_experiment({config.algorithm: result}, tmp_png, title=title)
    os.replace(tmp_png, out / "loss.png")

    if not args.quiet:
        mse = h.train_mse
        state = f"diverged at sweep {result.diverged_at}" if result.diverged_at else f"{result.sweeps_completed} sweeps"
        print(f"train MSE {mse[0]:.3e} -> {mse[-1]:.3e} ({state}; run {result.wall_time:.2f} s, "
              f"compile {result.compile_time:.2f} s)")
        print(f"wrote {out}/: {', '.join(_RUN_FILES)}, checkpoint/")
    return 0


def _cmd_sweep(args) -> int:
    from bcd_jax.sweeps import load_sweep, run_sweep

    spec = load_sweep(args.sweep_config)
    out = Path(args.out) if args.out is not None else Path("results") / Path(args.sweep_config).stem
    if _is_nonempty_dir(out) and not args.overwrite:
        raise CLIError(f"--out: {str(out)!r} exists and is not empty; pass --overwrite to replace its files")
    n_members = len(spec.members())
    print(f"bcd-jax sweep {args.sweep_config}: {n_members} members, swept " + ", ".join(k for k, _ in spec.grid))
    result = run_sweep(spec, out_dir=out, batch_size=args.batch_size, overwrite=True)
    swept = [k for k, _ in spec.grid]
    print(f"{'member':>6}  " + "  ".join(f"{k:>10}" for k in swept) + f"  {'final mse':>10}  {'min mse':>10}  diverged")
    for row in result.rows:
        values = "  ".join(f"{str(row[k]):>10}" for k in swept)
        diverged = f"at sweep {row['first_nonfinite_sweep']}" if row["diverged"] else "no"
        mse = f"{row['final_train_mse']:>10.3e}  {row['min_train_mse']:>10.3e}"
        print(f"{row['member']:>6}  {values}  {mse}  {diverged}")
    for g, group in enumerate(result.groups):
        print(f"group {g}: {len(group.members)} members in one program, {group.batch.wall_time:.2f} s "
              f"(compile {group.batch.compile_time:.2f} s)")
    print(f"wrote {out}/: summary.csv, summary.jsonl, train_mse.png, sweep.json")
    return 0


def _bench_script() -> Path | None:
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (root / "scripts" / "bench.py").is_file():
            return root / "scripts" / "bench.py"
    return None


def _cmd_bench(argv: list[str]) -> int:
    """Runs ``scripts/bench.py`` with ``argv``: its ``main(argv)`` if it has one, else as ``__main__``."""
    script = _bench_script()
    if script is None:
        raise CLIError("bench: scripts/bench.py not found next to the package or in the current folder; "
                       "run it from a checkout of the repository")
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))  # as `python scripts/bench.py` would have it
    spec = importlib.util.spec_from_file_location("_bcd_jax_bench", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        if callable(getattr(module, "main", None)):
            return int(module.main(argv) or 0)
        runpy.run_path(str(script), run_name="__main__")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
        sys.modules.pop(spec.name, None)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bcd-jax`` (``run``, ``sweep``, ``bench``)."""
    parser = argparse.ArgumentParser(
        prog="bcd-jax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,sweep,bench}")

    run = sub.add_parser("run", help="train on an experiment file's teacher data; write one output folder",
                         description="Trains bcd_jax.fit on the teacher problem of an experiment file (Config fields "
                                     "+ [data]; an [experiment] table is ignored) and writes config.json, "
                                     "diagnostics.jsonl (one line per sweep, 0 = initial), params.npz, loss.png and "
                                     "checkpoint/ into the output folder.")
    run.add_argument("config", type=Path, help="experiment TOML, e.g. configs/paper_fig1.toml")
    run.add_argument("--out", type=Path, default=None, help="output folder (default results/<config name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a Config field or data.<field>; TOML values, e.g. --set sweeps=50 "
                          "--set svb=[0.5,1.5] --set data.n=200 (repeatable)")
    run.add_argument("--resume", type=Path, default=None, metavar="DIR",
                     help="continue the run whose output folder is DIR (from DIR/checkpoint); writes into DIR")
    run.add_argument("--overwrite", action="store_true", help="replace the run in a non-empty output folder")
    run.add_argument("--quiet", action="store_true", help="print nothing and show no progress line")
    run.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                     help="write OUT/checkpoint every N sweeps (default: only at the end); a resumed run is "
                          "bit-identical to an uninterrupted one when both use the same N")

    sweep = sub.add_parser("sweep", help="run a sweep file; write a summary table and a comparison plot",
                           description="Runs every member of a sweep file (see configs/sweep_fig1.toml); members "
                                       "that share shapes run in one compiled program.")
    sweep.add_argument("sweep_config", type=Path, help="sweep TOML, e.g. configs/sweep_fig1.toml")
    sweep.add_argument("--out", type=Path, default=None, help="output folder (default results/<sweep name>)")
    sweep.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                       help="run at most B members at once (default: all of a group)")
    sweep.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")

    sub.add_parser("bench", help="run scripts/bench.py with the remaining arguments", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``bcd-jax`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        if argv and argv[0] == "bench":
            return _cmd_bench(argv[1:])
        args = parser.parse_args(argv)
        return _cmd_run(args) if args.command == "run" else _cmd_sweep(args)
    except (ValueError, FileExistsError) as exc:
        command = argv[0] if argv else ""
        print(f"bcd-jax {command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
