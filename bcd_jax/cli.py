"""The ``bcd-jax`` command line: train from an experiment file, run a grid.

    bcd-jax run configs/paper_fig1.toml --set sweeps=10 --set hyper.gamma=0.3   # -> results/paper_fig1/
    bcd-jax run configs/study/digits_whole_objective.toml --set data.validation_fraction=0.1
    bcd-jax run my_experiment.toml --import my_family        # a family registered by your module
    bcd-jax run configs/paper_fig1.toml --checkpoint-every 10 --out results/fig1
    bcd-jax run --resume results/fig1 --set sweeps=80         # continues with the run's own settings
    bcd-jax grid configs/grid_fig1.toml --set sweeps=10       # -> results/grid_fig1/

An experiment file names its data: the paper's teacher problem, a bundled set or your own file
(``[data] path = "my_data.csv"``; see ``bcd_jax.experiments``). ``--set KEY=VALUE`` changes one
field: ``sweeps``, ``seed``, ``network.<field>``, ``algorithm.<field>`` (``algorithm.name``
switches the family), ``hyper.<field>``, ``stop.<field>`` or ``data.<field>``; values follow
TOML (``50``, ``0.3``, ``[0.5, 1.5]``, ``"gd"``). ``python -m bcd_jax`` is the same program.
``bcd-jax sweep`` is the old name of ``bcd-jax grid`` (deprecated).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from bcd_jax.interrupts import interrupts_stop_runs

__all__ = [
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "EXIT_MEMORY",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_MEMORY, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
_EPILOG = """exit status:
  0    the run (every member of a grid) ended as asked: its sweep budget or a stopping rule
  2    an error in the input (one line on stderr naming the argument)
  3    a run, or a member of a grid, diverged (its files are written; the last finite state is kept)
  4    the run needs more memory than the machine has (said before it starts, naming what needs less)
  130  interrupted (Ctrl-C): the run stopped at a sweep boundary, wrote its checkpoint and prints how to resume
"""


class CLIError(ValueError):
    """A user error on the command line: printed as one line, exit status 2."""


def _require_matplotlib(what: str) -> None:
    try:
        import matplotlib  # noqa: F401  (checked before training, not after)
    except ImportError:
        raise CLIError(
            f"{what}: writing the plot needs matplotlib; pip install 'bcd_jax[plot]' (in a checkout: "
            "pip install -e '.[plot]')"
        ) from None


def _overrides(items: list[str]) -> dict[str, Any]:
    from bcd_jax.config import parse_assignments

    return parse_assignments(items, "--set")


def _with_overrides(thing, overrides: dict[str, Any]):
    """``thing.with_overrides(overrides)``; an error names the ``--set`` item it is about."""
    if not overrides:
        return thing
    try:
        return thing.with_overrides(overrides)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        hits = [k for k in overrides if text.startswith((f"{k}:", f"{k.rpartition('.')[2]}:"))]
        if len(overrides) == 1 or len(hits) == 1:
            key = hits[0] if hits else next(iter(overrides))
            raise CLIError(f"--set {key}={overrides[key]!r}: {exc}") from None
        raise CLIError(f"--set: {exc}") from None


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------


def _resumed_experiment(out: Path, config_path: Path | None):
    """The experiment a folder's checkpoint ran (its configuration, data and family's module)."""
    from bcd_jax.driver.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
    from bcd_jax.experiments import experiment_from_dict
    from bcd_jax.experiments.folder import CHECKPOINT_DIR

    checkpoint = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not checkpoint.is_file():
        hint = f" bcd-jax run {config_path} --out {out}" if config_path else f" bcd-jax run CONFIG --out {out}"
        raise CLIError(
            f"--resume: {str(out)!r} holds no checkpoint ({str(checkpoint)!r}): no run there wrote one (a run stopped "
            f"before its first checkpoint leaves nothing to resume); start it afresh:{hint}"
        )
    meta = read_checkpoint_meta(out / CHECKPOINT_DIR)
    tables = dict(meta["config"])
    extra = meta.get("metadata", {})
    tables["data"] = extra.get("data", {})
    tables["experiment"] = {}
    from bcd_jax.algorithms import ALGORITHMS

    name = tables.get("algorithm", {}).get("name")
    if name is not None and name not in ALGORITHMS:
        module = meta.get("algorithm_module")
        raise CLIError(
            f"--resume: the checkpoint's family {name!r} is not registered here; it was registered by the module "
            f"{module!r}: pass --import {module} (or install the package that declares it in the "
            "'bcd_jax.algorithms' entry-point group)"
        )
    return experiment_from_dict(tables, source=str(checkpoint)), meta


def _cmd_run(args, interrupted) -> int:
    from bcd_jax.datasets import describe as describe_split
    from bcd_jax.experiments import experiment_data, load_experiment, run_metrics
    from bcd_jax.experiments.folder import CHECKPOINT_DIR, clear_views, folder_state, write_views
    from bcd_jax.experiments.runs import fit_kwargs
    from bcd_jax.io import FolderLock

    overrides = _overrides(args.set)
    if args.resume is not None:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise CLIError(
                f"--out: {str(args.out)!r} differs from --resume {str(args.resume)!r}; a resumed run writes into its "
                "own folder, so give only --resume"
            )
        out = Path(args.resume)
        experiment, meta = _resumed_experiment(out, args.config)
        if args.config is not None:
            print(f"bcd-jax run: --resume uses the configuration kept in {out}; {args.config} is not read")
        title_name = Path(args.config).stem if args.config else out.name
    else:
        if args.config is None:
            raise CLIError("config: expected an experiment file (e.g. configs/paper_fig1.toml), or --resume DIR")
        experiment = load_experiment(args.config)
        out = Path(args.out) if args.out is not None else Path("results") / Path(args.config).stem
        title_name = Path(args.config).stem
    experiment = _with_overrides(experiment, overrides)
    config = experiment.config
    config.to_dict()  # config.json must record it; fails now, not after training
    _require_matplotlib("run")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out: {str(out)!r} is a file; expected a folder")
    lock = FolderLock(out, "--out")
    lock.check_free()  # another live run in this folder is named before anything else is said about it
    if args.resume is None:
        state = folder_state(out)
        if state.holds_run and not args.overwrite:
            held = state.checkpoint
            what = f"run {held['run_id']} ({held['sweep']} sweeps)" if held else "the files of a run"
            raise CLIError(
                f"--out: {str(out)!r} holds {what}; pass --overwrite to replace it (the old run stays until the new "
                f"one writes its first checkpoint), --resume {out} to continue it, or choose another folder"
            )
        if state.foreign and not args.overwrite:
            raise CLIError(
                f"--out: {str(out)!r} holds files bcd-jax did not write ({', '.join(state.foreign[:5])}); choose "
                "another folder, or pass --overwrite to write next to them (they are never touched)"
            )
    split = experiment_data(experiment)  # a missing scikit-learn or a bad file is named before the folder is touched
    X, Y = split.X_train, split.y_train
    if interrupted.is_set():
        print("bcd-jax run: interrupted before training started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED

    from bcd_jax.driver.fit import BCDDivergenceWarning, fit
    from bcd_jax.driver.memory import MemoryNeedError
    from bcd_jax.stopping import Status

    quiet = args.quiet
    with lock:  # two commands never write one folder
        if args.overwrite and args.resume is None:
            clear_views(out)  # the old run's views go first; its checkpoint stays until ours replaces it
        if not quiet:
            hyper = ", ".join(f"{k}={v:g}" for k, v in config.hyper._asdict().items())
            network = config.network
            print(
                f"bcd-jax run: {config.algorithm.name}, L={network.depth}, r={network.width}, {describe_split(split)}; "
                f"{hyper}, K={config.sweeps}" + (f"; resuming {out}" if args.resume is not None else "")
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BCDDivergenceWarning)
            try:
                result = fit(
                    X,
                    Y,
                    config,
                    checkpoint_dir=out / CHECKPOINT_DIR,
                    checkpoint_every=args.checkpoint_every,
                    resume=args.resume is not None,
                    overwrite=args.overwrite and args.resume is None,
                    progress=None if quiet else args.progress,
                    checkpoint_metadata={"data": experiment.data.to_dict()},
                    **fit_kwargs(split),
                )
            except MemoryNeedError as exc:
                print(f"bcd-jax run: error: {exc}", file=sys.stderr)
                return EXIT_MEMORY
        divergence = [str(w.message) for w in caught if issubclass(w.category, BCDDivergenceWarning)]
        for w in caught:  # anything else is shown as usual, as one line; the divergence is said below
            if not issubclass(w.category, BCDDivergenceWarning):
                print(f"bcd-jax run: warning: {w.message}", file=sys.stderr)
        metrics = run_metrics(result, split)
        write_views(out, result, experiment, metrics, title=f"{title_name}: {config.algorithm.paper}")

    if not quiet:
        h = result.history
        status = result.status
        print(
            f"train loss {h.train_loss[0]:.4g} -> {h.train_loss[-1]:.4g}; {status.message} after "
            f"{result.sweeps_completed} sweeps (run {result.wall_time:.2f} s, compile {result.compile_time:.2f} s)"
        )
        shown = [
            f"{k} {v:.4g}"
            for k, v in metrics.items()
            if k.endswith(("accuracy", "_mse")) and k != "train_mse" and isinstance(v, float)
        ]
        if shown:
            print(", ".join(shown))
        print(f"wrote {out}/: config.json, diagnostics.jsonl, metrics.json, params.npz, loss.png, checkpoint/")
    if result.status == Status.DIVERGED:
        detail = divergence[0] if divergence else f"BCD diverged at sweep {result.diverged_at}"
        print(f"bcd-jax run: {detail} Wrote that state to {out}/.", file=sys.stderr)
        return EXIT_DIVERGED
    if result.status == Status.INTERRUPTED:
        print(
            f"bcd-jax run: interrupted after sweep {result.sweeps_completed}; the checkpoint is in "
            f"{out / CHECKPOINT_DIR}. Continue with: bcd-jax run --resume {out}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


# --------------------------------------------------------------------------------------
# grid
# --------------------------------------------------------------------------------------


def _cmd_grid(args, interrupted) -> int:
    from bcd_jax.experiments import GRID_FILES, load_grid, run_grid_file
    from bcd_jax.experiments.folder import folder_state
    from bcd_jax.io import FolderLock

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        spec = load_grid(args.grid_file)
    for w in caught:
        print(f"bcd-jax grid: warning: {w.message}", file=sys.stderr)
    spec = _with_overrides(spec, _overrides(args.set))
    out = Path(args.out) if args.out is not None else Path("results") / Path(args.grid_file).stem
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out: {str(out)!r} is a file; expected a folder")
    FolderLock(out, "--out").check_free()
    state = folder_state(out)
    if (state.foreign or state.views or state.checkpoint) and not args.overwrite:
        raise CLIError(f"--out: {str(out)!r} exists and is not empty; pass --overwrite to replace its grid files")
    _require_matplotlib("grid")
    swept = spec.keys
    members = spec.members()
    print(f"bcd-jax grid {args.grid_file}: {len(members)} members, varying " + ", ".join(swept))
    if interrupted.is_set():
        print("bcd-jax grid: interrupted before the runs started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    result = run_grid_file(spec, out_dir=out, batch_size=args.batch_size, overwrite=True)
    columns = ["final_train_loss", "val_accuracy", "val_loss", "test_accuracy", "test_mse"]
    columns = [c for c in columns if any(row.get(c) is not None for row in result.rows)]
    print(
        f"{'member':>6}  "
        + "  ".join(f"{k:>10}" for k in swept)
        + "  "
        + "  ".join(f"{c:>14}" for c in columns)
        + "  status"
    )
    for row in result.rows:
        values = "  ".join(f"{row[k]!s:>10}" for k in swept)
        numbers = "  ".join(f"{row[c]:>14.4g}" if row.get(c) is not None else f"{'':>14}" for c in columns)
        print(f"{row['member']:>6}  {values}  {numbers}  {row['status']}")
    for g, group in enumerate(result.groups):
        print(
            f"group {g}: {len(group.members)} members in one program, {group.run.wall_time:.2f} s "
            f"(compile {group.run.compile_time:.2f} s)"
        )
    try:
        best = result.best()
        metric = next(m for m in ("val_accuracy", "val_loss", "final_train_loss") if best.get(m) is not None)
        print(f"best by {metric}: member {best['member']} (" + ", ".join(f"{k}={best[k]}" for k in swept) + ")")
    except ValueError:
        pass
    print(f"wrote {out}/: {', '.join(GRID_FILES)}")
    if result.interrupted:
        print(
            f"bcd-jax grid: interrupted; members {result.interrupted} did not run (their groups had not started); "
            f"the others are in {out}/",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    diverged = result.diverged
    if diverged:
        print(
            f"bcd-jax grid: {len(diverged)} of {len(result.rows)} members diverged (members {diverged}); see the "
            "'status' column of summary.csv",
            file=sys.stderr,
        )
        return EXIT_DIVERGED
    return EXIT_OK


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
    "change one field: sweeps, seed, network.<field>, algorithm.<field> (algorithm.name switches the family), "
    "hyper.<field>, stop.<field> or data.<field>; TOML values, e.g. --set sweeps=50 --set hyper.gamma=0.3 "
    "--set algorithm.svb=[0.5,1.5] --set data.path=my.csv (repeatable)"
)
_IMPORT_HELP = "import MODULE first, so that the families, activations or losses it registers can be named (repeatable)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bcd-jax`` (``run``, ``grid``; ``sweep`` is ``grid``'s old name)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="bcd-jax", description=__doc__, epilog=_EPILOG, formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,grid}")

    run = sub.add_parser(
        "run",
        help="train on an experiment file's data (teacher problem, bundled set or your file); write one output folder",
        epilog=_EPILOG,
        formatter_class=formatter,
        description="Trains bcd_jax.fit on the data of an experiment file ([network], [algorithm], [hyper], [run], "
        "[stop] + [data]; an [experiment] table is ignored) and writes checkpoint/, config.json, "
        "diagnostics.jsonl (one line per sweep, 0 = initial), metrics.json, params.npz and loss.png into the "
        "output folder.",
    )
    run.add_argument("config", type=Path, nargs="?", default=None, help="experiment TOML, e.g. configs/paper_fig1.toml")
    run.add_argument("--out", type=Path, default=None, help="output folder (default results/<config name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    run.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help=_IMPORT_HELP)
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the run in DIR with the configuration kept there (--set may raise sweeps or change stop)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace the run in a folder that holds one")
    run.add_argument("--quiet", action="store_true", help="print nothing and show no progress line")
    run.add_argument(
        "--progress",
        choices=("auto", "none", "text", "tqdm"),
        default="auto",
        help="progress display (default auto: a text line on an interactive terminal)",
    )
    run.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="write OUT/checkpoint every N sweeps (default: at the end and on Ctrl-C); a resumed run is "
        "bit-identical to an uninterrupted one when both use the same N",
    )

    for name, help_text in (
        ("grid", "run a grid file; write a summary table and a plot"),
        ("sweep", "deprecated name of 'grid'"),
    ):
        grid = sub.add_parser(
            name,
            help=help_text,
            epilog=_EPILOG,
            formatter_class=formatter,
            description="Runs every member of a grid file (see configs/grid_fig1.toml), on any data an experiment "
            "file can name; members that differ only in hyper.<field> and seed run in one compiled program. "
            "--set changes the base every member starts from.",
        )
        grid.add_argument("grid_file", type=Path, help="grid TOML, e.g. configs/grid_fig1.toml")
        grid.add_argument("--out", type=Path, default=None, help="output folder (default results/<grid name>)")
        grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
        grid.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help=_IMPORT_HELP)
        grid.add_argument(
            "--batch-size",
            type=_positive_int,
            default=None,
            metavar="B",
            help="run at most B members at once (default: all of a group; one at a time on CPU)",
        )
        grid.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``bcd-jax`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status (see ``--help``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Ctrl-C from the first instant asks for a stop at the next sweep boundary (imports and
    # compilation included); a second one stops at once.
    with interrupts_stop_runs() as interrupted:
        command = argv[0] if argv else ""
        try:
            args = build_parser().parse_args(argv)
            if args.command == "sweep":
                print("bcd-jax sweep: deprecated; the command is now 'bcd-jax grid'", file=sys.stderr)
            from bcd_jax.registry import import_modules

            import_modules(args.imports)
            if args.command == "run":
                return _cmd_run(args, interrupted)
            return _cmd_grid(args, interrupted)
        except (ValueError, OSError, ImportError) as exc:  # user, file-system and missing-extra errors: one line
            print(f"bcd-jax {command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:  # a second Ctrl-C
            print(f"bcd-jax {command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
