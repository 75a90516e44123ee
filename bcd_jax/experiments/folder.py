"""A run's output folder, kept consistent at every instant a process can die.

Layout (``bcd-jax run --out OUT``)::

    OUT/checkpoint/checkpoint.npz   the run itself: blocks, history, status, config, run id (the truth)
    OUT/config.json                 the experiment           } views of the checkpoint, each stamped with
    OUT/diagnostics.jsonl           one line per sweep        } the checkpoint's run id and the sweep it
    OUT/metrics.json                the final numbers         } shows; they can always be written again
    OUT/params.npz                  the trained weights       } from the checkpoint (a resumed run does)
    OUT/loss.png                    the figure                }

Every file is written atomically (a temporary file, then a rename), so each file is whole. The
folder as a whole obeys one rule (:func:`check_folder`): every view present carries the run id
of the checkpoint and a sweep no later than the checkpoint's. The order of writes keeps it true:
a fresh run in a folder that held another run first removes that run's views (the old checkpoint
stays, so nothing is lost if the new run fails early), then replaces the checkpoint in one
rename when it writes its first one, then writes its own views. A run killed before its first
checkpoint leaves the folder as it was (or empty): a fresh run may start there without
``--overwrite`` and ``--resume`` says there is nothing to resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bcd_jax.io import LOCK_FILE, TEMP_SUFFIX, atomic_write, atomic_write_text, dumps_json

__all__ = ["VIEW_FILES", "CHECKPOINT_DIR", "FolderState", "folder_state", "clear_views", "write_views", "check_folder"]

VIEW_FILES = ("config.json", "diagnostics.jsonl", "metrics.json", "params.npz", "loss.png")
CHECKPOINT_DIR = "checkpoint"
_OURS = {*VIEW_FILES, CHECKPOINT_DIR, LOCK_FILE}


class FolderState(NamedTuple):
    """What an output folder holds.

    Attributes:
      exists: the folder exists.
      checkpoint: the checkpoint's metadata (run id, sweep, status, config), or None.
      views: the view files present.
      foreign: entries bcd-jax did not write (a user's files), never touched.
    """

    exists: bool
    checkpoint: dict[str, Any] | None
    views: list[str]
    foreign: list[str]

    @property
    def holds_run(self) -> bool:
        return self.checkpoint is not None or bool(self.views)


def _checkpoint_meta(out: Path) -> dict[str, Any] | None:
    from bcd_jax.driver.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta

    if not (out / CHECKPOINT_DIR / CHECKPOINT_FILE).exists():
        return None
    return read_checkpoint_meta(out / CHECKPOINT_DIR)


def folder_state(out: str | Path) -> FolderState:
    """What ``out`` holds (a corrupt checkpoint is a ``ValueError`` naming it)."""
    out = Path(out)
    if not out.is_dir():
        return FolderState(out.exists(), None, [], [])
    names = sorted(p.name for p in out.iterdir())
    views = [n for n in names if n in VIEW_FILES]
    foreign = [n for n in names if n not in _OURS and not (n.startswith(".") and n.endswith(TEMP_SUFFIX))]
    return FolderState(True, _checkpoint_meta(out), views, foreign)


def clear_views(out: str | Path) -> None:
    """Removes the view files (they describe a run that is about to be replaced; its checkpoint stays)."""
    out = Path(out)
    for name in VIEW_FILES:
        (out / name).unlink(missing_ok=True)
    for tmp in out.glob(f".*{TEMP_SUFFIX}"):  # left by a killed writer
        tmp.unlink(missing_ok=True)


def write_views(out: str | Path, result, experiment, metrics: dict[str, Any], title: str) -> None:
    """Writes every view of ``result`` (a :class:`bcd_jax.FitResult` whose checkpoint is in ``out``)."""
    from bcd_jax.driver.loop import SweepInfo
    from bcd_jax.experiments.plots import plot_experiment

    out = Path(out)
    stamp = {"run_id": result.run_id, "sweep": result.sweeps_completed}
    h = result.history
    lines = []
    for k in range(len(h.train_loss)):
        entry = {name: getattr(h, name)[k] for name in SweepInfo._fields if name != "extras"}
        extras = h.extras._asdict() if hasattr(h.extras, "_asdict") else {}
        entry.update({name: _leaves(value, k) for name, value in extras.items()})
        lines.append(dumps_json({"run_id": result.run_id, "sweep": k, **entry}))
    weights = {f"W_{j}": np.asarray(w) for j, w in enumerate(result.params, start=1)}
    weights.update({"run_id": np.asarray(result.run_id), "sweep": np.asarray(result.sweeps_completed)})
    atomic_write(out / "params.npz", lambda fh: np.savez(fh, **weights))
    atomic_write_text(out / "diagnostics.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(out / "metrics.json", dumps_json({**stamp, **metrics}, indent=2) + "\n")
    plot_experiment({result.config.algorithm.name: result}, out / "loss.png", title=title)
    atomic_write_text(out / "config.json", dumps_json({**stamp, **experiment.to_dict()}, indent=2) + "\n")


def _leaves(value, k):
    if hasattr(value, "_asdict"):
        return {name: _leaves(v, k) for name, v in value._asdict().items()}
    return np.asarray(value)[k]


def _view_stamp(path: Path) -> tuple[str | None, int | None]:
    """The run id and sweep a view file carries (None, None if it carries none)."""
    name = path.name
    if name in ("config.json", "metrics.json"):
        data = json.loads(path.read_text())
        return data.get("run_id"), data.get("sweep")
    if name == "diagnostics.jsonl":
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ids = {line.get("run_id") for line in lines}
        return (ids.pop() if len(ids) == 1 else None), len(lines) - 1
    if name == "params.npz":
        with np.load(path, allow_pickle=False) as f:
            return str(f["run_id"]), int(f["sweep"])
    if name == "loss.png":
        from PIL import Image

        with Image.open(path) as image:
            text = image.info.get("Description", "")
        return (text.rsplit(" ", 1)[-1] if text.startswith("bcd_jax run ") else None), None
    return None, None


def check_folder(out: str | Path) -> list[str]:
    """The ways ``out`` breaks the folder rule (empty when it is consistent): a view without a
    checkpoint, a view of another run, a view of a later sweep than the checkpoint, or an
    unreadable file."""
    out = Path(out)
    problems = []
    try:
        state = folder_state(out)
    except ValueError as exc:
        return [f"checkpoint: {exc}"]
    if state.checkpoint is None:
        return [f"{name}: present without a checkpoint" for name in state.views]
    run_id, sweep = state.checkpoint["run_id"], state.checkpoint["sweep"]
    for name in state.views:
        try:
            their_id, their_sweep = _view_stamp(out / name)
        except Exception as exc:  # noqa: BLE001 - any unreadable view is a problem to report
            problems.append(f"{name}: unreadable ({exc})")
            continue
        if their_id != run_id:
            problems.append(f"{name}: run {their_id!r}, checkpoint run {run_id!r}")
        elif their_sweep is not None and their_sweep > sweep:
            problems.append(f"{name}: sweep {their_sweep}, checkpoint sweep {sweep}")
    return problems
