"""The ``bcd-jax`` command line: train from an experiment file, run a sweep, run the benchmark.

    bcd-jax run configs/paper_fig1.toml --set sweeps=10 --set hyper.gamma=0.3   # -> results/paper_fig1/
    bcd-jax run configs/paper_fig1.toml --checkpoint-every 10 --out results/fig1
    bcd-jax run configs/paper_fig1.toml --resume results/fig1 --checkpoint-every 10 --set sweeps=80
    bcd-jax sweep configs/sweep_fig1.toml --set sweeps=10                        # -> results/sweep_fig1/
    bcd-jax bench --quick                                                       # scripts/bench.py --quick

``--set KEY=VALUE`` changes one field: ``sweeps``, ``seed``, ``network.<field>``,
``algorithm.<field>`` (``algorithm.name`` switches the algorithm), ``hyper.<field>`` or
``data.<field>``; values follow TOML (``50``, ``0.3``, ``[0.5, 1.5]``, ``"gd"``).
``python -m bcd_jax`` is the same program.

Exit status: 0 when every run finished; 2 for an error in the input (an unknown ``--set``
key, a bad value, an existing output folder), printed as one line naming the argument; 3 when
a run (or any member of a sweep) diverged: its files are still written, holding the last
finite state, and the divergence is named on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import runpy
import sys
import tomllib
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_DIVERGED",
    "EXIT_OK",
    "EXIT_USAGE",
    "apply_overrides",
    "bench_script",
    "build_parser",
    "main",
    "parse_overrides",
]

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED = 0, 2, 3
_RUN_FILES = ("config.json", "diagnostics.jsonl", "metrics.json", "params.npz", "loss.png")
_EPILOG = """exit status:
  0  every run finished
  2  an error in the input (one line on stderr naming the argument)
  3  a run, or a member of a sweep, diverged (its files are still written; the last finite state is kept)
"""


class CLIError(ValueError):
    """A user error on the command line: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------
# --set key=value
# --------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parses ``--set key=value`` items; values follow TOML (``50``, ``0.3``, ``[0.5, 1.5]``, ``"gd"``).

    A value that is not valid TOML is taken as a plain string, so ``--set algorithm.inner=exact``
    works. Keys are checked by :func:`apply_overrides`.
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
    """Returns ``(config, data)`` with the overrides applied (see :func:`bcd_jax.experiments.apply_overrides`).

    Each key is applied and checked on its own, so that an error names the ``--set`` item.
    """
    from bcd_jax.experiments import apply_overrides as apply_one
    from bcd_jax.experiments import check_override_key

    new_name = overrides.get("algorithm.name")
    for key in overrides:
        try:
            check_override_key(key, config, new_name if isinstance(new_name, str) and key != "algorithm.name" else None)
        except ValueError as exc:
            raise CLIError(f"--set: {exc}") from None
    try:
        return apply_one(config, data, overrides)
    except (ValueError, TypeError) as exc:
        key = _named_key(exc, overrides)
        shown = f"--set {key}={overrides[key]!r}" if key else " ".join(f"--set {k}={v!r}" for k, v in overrides.items())
        raise CLIError(f"{shown}: {exc}") from None


def _named_key(exc: Exception, overrides: dict[str, Any]) -> str | None:
    """The one override an error is about (its message starts with the key or its field), for a precise message."""
    if len(overrides) == 1:
        return next(iter(overrides))
    text = str(exc)
    hits = [k for k in overrides if text.startswith((f"{k}:", f"{k.rpartition('.')[2]}:"))]
    return hits[0] if len(hits) == 1 else None


# --------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _require_matplotlib(what: str) -> None:
    try:
        import matplotlib  # noqa: F401  (checked before training, not after)
    except ImportError:
        raise CLIError(f"{what}: writing the plot needs matplotlib; pip install 'bcd_jax[plot]'") from None


def _cmd_run(args) -> int:
    import jax
    import numpy as np

    from bcd_jax.driver.checkpoint import CHECKPOINT_FILE
    from bcd_jax.driver.fit import BCDDivergenceWarning, fit
    from bcd_jax.experiments import experiment_data, load_experiment, plot_experiment, run_metrics
    from bcd_jax.io import FolderLock, atomic_write, atomic_write_text, dumps_json

    config, data, _ = load_experiment(args.config)
    config, data = apply_overrides(config, data, parse_overrides(args.set))
    config.to_dict()  # config.json must record it; fails now, not after training
    _require_matplotlib("run")
    if args.resume is not None:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise CLIError(
                f"--out: {str(args.out)!r} differs from --resume {str(args.resume)!r}; a resumed run "
                "writes into its own folder, so give only --resume"
            )
        out = Path(args.resume)
        if not (out / "checkpoint" / CHECKPOINT_FILE).is_file():
            raise CLIError(
                f"--resume: no checkpoint at {str(out / 'checkpoint' / CHECKPOINT_FILE)!r}; expected the "
                "output folder of an earlier 'bcd-jax run'"
            )
    else:
        out = Path(args.out) if args.out is not None else Path("results") / Path(args.config).stem
        if out.exists() and not out.is_dir():
            raise CLIError(f"--out: {str(out)!r} is a file; expected a folder")
    split = experiment_data(config, data)  # a missing scikit-learn is named before any folder is touched
    X, Y = split.X_train, split.y_train
    validation = (split.X_test, split.y_test) if len(split.X_test) else None
    lock = FolderLock(out, "--out")
    lock.check_free()  # another live run in this folder is named before anything else is said about it
    if args.resume is None and _is_nonempty_dir(out) and not args.overwrite:
        raise CLIError(
            f"--out: {str(out)!r} exists and is not empty; pass --overwrite to replace its run, "
            "or --resume to continue it"
        )
    quiet = args.quiet
    progress = None if quiet else args.progress
    with lock:  # two commands never write one folder
        checkpoint_dir = out / "checkpoint"
        if args.overwrite and args.resume is None:
            (checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # a fresh run, not a continuation

        if not quiet:
            hyper = ", ".join(f"{k}={v:g}" for k, v in config.hyper._asdict().items())
            network = config.network
            held_out = f", {len(split.X_test)} test" if validation is not None else ""
            print(
                f"bcd-jax run {args.config}: {config.algorithm.name}, L={network.depth}, r={network.width}, "
                f"{split.name} n={X.shape[0]}{held_out}, d_in={X.shape[1]}, {hyper}, K={config.sweeps}"
                + (f", resuming {out}" if args.resume is not None else "")
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BCDDivergenceWarning)
            result = fit(
                X,
                Y,
                config,
                key=jax.random.key(config.seed),
                checkpoint_dir=checkpoint_dir,
                checkpoint_every=args.checkpoint_every,
                resume=args.resume is not None,
                progress=progress,
                validation=validation,
            )
        divergence = [str(w.message) for w in caught if issubclass(w.category, BCDDivergenceWarning)]
        for w in caught:  # anything else is shown as usual; the divergence becomes one line below
            if not issubclass(w.category, BCDDivergenceWarning):
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)

        atomic_write_text(
            out / "config.json", dumps_json({**config.to_dict(), "data": dataclasses.asdict(data)}, indent=2) + "\n"
        )
        h = result.history
        lines = [
            dumps_json({"sweep": k, **{name: v[k] for name, v in h._asdict().items()}, "movement": result.movement[k]})
            for k in range(len(h.train_mse))
        ]
        atomic_write_text(out / "diagnostics.jsonl", "\n".join(lines) + "\n")
        metrics = run_metrics(result, split)
        atomic_write_text(out / "metrics.json", dumps_json(metrics, indent=2) + "\n")
        weights = {f"W_{j}": np.asarray(w) for j, w in enumerate(result.params, start=1)}
        atomic_write(out / "params.npz", lambda fh: np.savez(fh, **weights))
        plot_experiment(
            {config.algorithm.name: result},
            out / "loss.png",
            title=f"{Path(args.config).stem}: {config.algorithm.paper}",
        )

    if not quiet:
        mse = h.train_mse
        state = f"diverged at sweep {result.diverged_at}" if result.diverged_at else f"{result.sweeps_completed} sweeps"
        print(
            f"train MSE {mse[0]:.3e} -> {mse[-1]:.3e} ({state}; run {result.wall_time:.2f} s, "
            f"compile {result.compile_time:.2f} s)"
        )
        tested = [f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("test_")]
        if tested:
            print(", ".join(tested))
        print(f"wrote {out}/: {', '.join(_RUN_FILES)}, checkpoint/")
    if result.diverged_at is not None:
        detail = divergence[0] if divergence else f"BCD diverged at sweep {result.diverged_at}"
        print(f"bcd-jax run: {detail} Wrote that state to {out}/.", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK


def _cmd_sweep(args) -> int:
    from bcd_jax.driver.sweeps import SWEEP_FILES, load_sweep, run_sweep
    from bcd_jax.io import FolderLock

    spec = load_sweep(args.sweep_config)
    overrides = parse_overrides(args.set)
    if overrides:
        apply_overrides(spec.config, spec.data, overrides)  # an error names the --set item
        try:
            spec = spec.with_overrides(overrides)
        except ValueError as exc:
            named = any(str(exc).startswith(f"{key}:") for key in overrides)
            raise CLIError(f"--set {exc}" if named else f"--set: {exc}") from None
    out = Path(args.out) if args.out is not None else Path("results") / Path(args.sweep_config).stem
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out: {str(out)!r} is a file; expected a folder")
    FolderLock(out, "--out").check_free()
    if _is_nonempty_dir(out) and not args.overwrite:
        raise CLIError(f"--out: {str(out)!r} exists and is not empty; pass --overwrite to replace its files")
    _require_matplotlib("sweep")
    swept = spec.keys
    print(f"bcd-jax sweep {args.sweep_config}: {len(spec.members())} members, swept " + ", ".join(swept))
    result = run_sweep(spec, out_dir=out, batch_size=args.batch_size, overwrite=True)
    print(f"{'member':>6}  " + "  ".join(f"{k:>10}" for k in swept) + f"  {'final mse':>10}  {'min mse':>10}  diverged")
    for row in result.rows:
        values = "  ".join(f"{row[k]!s:>10}" for k in swept)
        diverged = f"at sweep {row['first_nonfinite_sweep']}" if row["diverged"] else "no"
        mse = f"{row['final_train_mse']:>10.3e}  {row['min_train_mse']:>10.3e}"
        print(f"{row['member']:>6}  {values}  {mse}  {diverged}")
    for g, group in enumerate(result.groups):
        print(
            f"group {g}: {len(group.members)} members in one program, {group.batch.wall_time:.2f} s "
            f"(compile {group.batch.compile_time:.2f} s)"
        )
    print(f"wrote {out}/: {', '.join(SWEEP_FILES)}")
    diverged = result.diverged
    if diverged:
        print(
            f"bcd-jax sweep: {len(diverged)} of {len(result.rows)} members diverged (members {diverged}); see the "
            "'diverged' column of summary.csv",
            file=sys.stderr,
        )
        return EXIT_DIVERGED
    return EXIT_OK


def bench_script() -> Path | None:
    """``scripts/bench.py`` of the checkout this package lives in (never one in the current folder)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
    return script if script.is_file() else None


def _cmd_bench(argv: list[str]) -> int:
    """Runs ``scripts/bench.py`` with ``argv``: its ``main(argv)`` if it has one, else as ``__main__``."""
    script = bench_script()
    if script is None:
        root = Path(__file__).resolve().parents[1]
        raise CLIError(
            f"bench: scripts/bench.py not found next to the package (in {str(root)!r}); "
            "install bcd_jax from a checkout of the repository (pip install -e .)"
        )
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
        return EXIT_OK
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


_SET_HELP = (
    "change one field: sweeps, seed, network.<field>, algorithm.<field> (algorithm.name switches the "
    "algorithm), hyper.<field> or data.<field>; TOML values, e.g. --set sweeps=50 --set hyper.gamma=0.3 "
    "--set algorithm.svb=[0.5,1.5] --set data.n=200 (repeatable)"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bcd-jax`` (``run``, ``sweep``, ``bench``)."""
    from bcd_jax.driver.progress import PROGRESS_CHOICES

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="bcd-jax", description=__doc__, epilog=_EPILOG, formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,sweep,bench}")

    run = sub.add_parser(
        "run",
        help="train on an experiment file's teacher data; write one output folder",
        epilog=_EPILOG,
        formatter_class=formatter,
        description="Trains bcd_jax.fit on the teacher problem of an experiment file ([network], "
        "[algorithm], [hyper], [run] + [data]; an [experiment] table is ignored) and "
        "writes config.json, diagnostics.jsonl (one line per sweep, 0 = initial), "
        "params.npz, loss.png and checkpoint/ into the output folder.",
    )
    run.add_argument("config", type=Path, help="experiment TOML, e.g. configs/paper_fig1.toml")
    run.add_argument("--out", type=Path, default=None, help="output folder (default results/<config name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the run whose output folder is DIR (from DIR/checkpoint); writes into DIR",
    )
    run.add_argument("--overwrite", action="store_true", help="replace the run in a non-empty output folder")
    run.add_argument("--quiet", action="store_true", help="print nothing and show no progress line")
    run.add_argument(
        "--progress",
        choices=PROGRESS_CHOICES,
        default="auto",
        help="progress display (default auto: a text line on an interactive terminal)",
    )
    run.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="write OUT/checkpoint every N sweeps (default: only at the end); a resumed run is "
        "bit-identical to an uninterrupted one when both use the same N",
    )

    sweep = sub.add_parser(
        "sweep",
        help="run a sweep file; write a summary table and a comparison plot",
        epilog=_EPILOG,
        formatter_class=formatter,
        description="Runs every member of a sweep file (see configs/sweep_fig1.toml); members "
        "that differ only in hyper.<field> and seed run in one compiled program. "
        "--set changes the base every member starts from.",
    )
    sweep.add_argument("sweep_config", type=Path, help="sweep TOML, e.g. configs/sweep_fig1.toml")
    sweep.add_argument("--out", type=Path, default=None, help="output folder (default results/<sweep name>)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    sweep.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="B",
        help="run at most B members at once (default: all of a group; one at a time on CPU)",
    )
    sweep.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")

    sub.add_parser("bench", help="run scripts/bench.py of this checkout with the remaining arguments", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``bcd-jax`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        if argv and argv[0] == "bench":
            return _cmd_bench(argv[1:])
        args = parser.parse_args(argv)
        return _cmd_run(args) if args.command == "run" else _cmd_sweep(args)
    except (ValueError, OSError, ImportError) as exc:  # user, file-system and missing-extra errors: one line
        command = argv[0] if argv else ""
        print(f"bcd-jax {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
