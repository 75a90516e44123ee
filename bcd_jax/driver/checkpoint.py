"""Checkpoints of a BCD run: one ``.npz`` file holding the blocks as a pytree, written atomically.

A checkpoint holds the algorithm's blocks (every leaf, named by its path in the pytree, with the
tree structure recorded), the sweep counter, the PRNG key the run was initialised with, the
history so far (the driver's records and the family's extras), the stopping rules' state and
the run's status, the lossless description of the configuration (:meth:`Config.to_dict`), the
module that registered the family (named if it is missing when the run is resumed), a
fingerprint of each activation's values (a different function registered under the same name
is refused) and a fingerprint of the training data. Loading refuses a file that is corrupt or
incomplete, whose sweep counter disagrees with its history, that was written for another
configuration (naming the fields that differ), for other data, or whose blocks do not have the
structure and shapes the configuration builds. NumPy and the standard library suffice:
orbax-checkpoint would add a heavy dependency for one small file per run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from bcd_jax.algorithms import ALGORITHMS
from bcd_jax.config import Config, flatten
from bcd_jax.driver.loop import SweepInfo
from bcd_jax.io import atomic_write
from bcd_jax.stopping import Status, StopState

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT",
    "Checkpoint",
    "data_fingerprint",
    "function_fingerprint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "check_checkpoint_dir",
]

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT = 3
# Fields a resumed run may change without changing the run it continues.
RESUMABLE_CHANGES = ("run.sweeps",)
RESUMABLE_TABLES = ("stop.",)


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns."""

    blocks: Any
    sweep: int
    key_data: np.ndarray
    history: SweepInfo
    config: dict[str, Any]
    stop_state: StopState
    status: Status
    stop: dict[str, Any]
    run_id: str


def data_fingerprint(*arrays) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for arr in arrays:
        a = np.ascontiguousarray(np.asarray(arr))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


_PROBE = np.linspace(-3.0, 3.0, 61)


def function_fingerprint(config: Config) -> list[str]:
    """A short hash of every hidden layer's activation values on fixed points, and of the loss's.

    A checkpoint records the names of its activation and loss; these hashes tell whether the
    function behind a name is still the same one when the run is resumed.
    """
    import jax.numpy as jnp

    network = config.resolved_network
    out = []
    with jax.default_device(jax.devices("cpu")[0]):
        for act in network.layer_activations:
            values = np.asarray(act(jnp.asarray(_PROBE, jnp.float32)), np.float32)
            out.append(hashlib.sha256(values.tobytes()).hexdigest()[:16])
        pred = jnp.asarray(_PROBE[:4], jnp.float32)
        target = jnp.asarray([1.0, 0.0, 0.0, 0.0], jnp.float32)
        value = np.asarray(network.loss_fn(pred, target), np.float32)
        out.append(hashlib.sha256(value.tobytes()).hexdigest()[:16])
    return out


def check_checkpoint_dir(directory) -> Path:
    """Refuses, before any compute, a checkpoint folder that is a file or cannot be written.

    The folder is created, and a probe file written and removed in it: permission bits alone
    do not tell (a read-only file system, or a superuser who ignores them).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"checkpoint_dir: {str(directory)!r} is a file; expected a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ValueError(
            f"checkpoint_dir: cannot write checkpoints in {str(directory)!r} ({exc.strerror or exc})"
        ) from None
    return directory


def _paths(tree) -> tuple[list[str], Any, list]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in flat], treedef, [leaf for _, leaf in flat]


def save_checkpoint(
    directory,
    blocks,
    sweep: int,
    history: SweepInfo,
    *,
    config: Config,
    key_data,
    fingerprint: str,
    stop_state,
    status: Status,
    run_id: str,
    metadata: dict | None = None,
) -> Path:
    """Writes ``directory/checkpoint.npz`` atomically (a temp file, then ``os.replace``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    block_paths, treedef, leaves = _paths(blocks)
    arrays = {f"block.{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    history_paths, history_treedef, history_leaves = _paths(history)
    arrays.update({f"history.{i}": np.asarray(leaf) for i, leaf in enumerate(history_leaves)})
    arrays.update({f"stop_state.{name}": np.asarray(v) for name, v in zip(StopState._fields, stop_state)})
    arrays["sweep"] = np.asarray(sweep, np.int64)
    arrays["key_data"] = np.asarray(key_data)
    name = config.algorithm.name
    meta = {
        "format": FORMAT,
        "run_id": run_id,
        "sweep": int(sweep),
        "status": int(status),
        "config": config.to_dict(),
        "algorithm_module": ALGORITHMS.module_of(name),
        "functions": function_fingerprint(config),
        "fingerprint": fingerprint,
        "blocks_treedef": str(treedef),
        "blocks_paths": block_paths,
        "history_treedef": str(history_treedef),
        "history_paths": history_paths,
        "metadata": metadata or {},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return atomic_write(directory / CHECKPOINT_FILE, lambda fh: np.savez(fh, **arrays))


def read_checkpoint_meta(directory) -> dict[str, Any]:
    """The metadata of the checkpoint in ``directory`` (its configuration, run id, sweep, status).

    Raises ``ValueError`` for a missing, corrupt or foreign file.
    """
    return _read(Path(directory) / CHECKPOINT_FILE)[1]


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"checkpoint_dir: no checkpoint at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint_dir: {str(path)!r} is not a readable bcd_jax checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(
            f"checkpoint_dir: {str(path)!r} has format {found!r}; expected {FORMAT} (written by another version of "
            "bcd_jax)"
        )
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint_dir: {str(path)!r} is incomplete: its metadata lacks {missing}")
    return arrays, meta


_META_KEYS = (
    "run_id",
    "sweep",
    "status",
    "config",
    "functions",
    "fingerprint",
    "blocks_treedef",
    "blocks_paths",
    "history_treedef",
    "history_paths",
)


def load_checkpoint(directory, *, config: Config, fingerprint: str, template, history_template) -> Checkpoint:
    """Reads a checkpoint written by :func:`save_checkpoint` for this config, data and blocks.

    ``template`` is a pytree with the structure, shapes and dtypes of the blocks this run
    builds (``jax.eval_shape`` of the algorithm's ``init``); ``history_template`` one record
    (:class:`SweepInfo`) of this run, for the structure of the family's extras.

    Raises:
      ValueError: no checkpoint, a corrupt or incomplete file, a sweep counter that disagrees
        with the history, another config (naming the fields that differ) or another function
        under a registered name, other data, or blocks of another structure or shape.
    """
    path = Path(directory) / CHECKPOINT_FILE
    arrays, meta = _read(path)
    saved = flatten(meta["config"])
    current = flatten(config.to_dict())
    differ = sorted(
        k
        for k in set(saved) | set(current)
        if k not in RESUMABLE_CHANGES and not k.startswith(RESUMABLE_TABLES) and saved.get(k) != current.get(k)
    )
    if differ:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in differ)
        raise ValueError(f"checkpoint_dir: {str(path)!r} belongs to another config ({detail})")
    if meta["functions"] != function_fingerprint(config):
        raise ValueError(
            f"checkpoint_dir: {str(path)!r} was written with other functions under the same names (network.activation "
            "or network.loss): a different function is registered under a name it records; register the original"
        )
    if meta["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint_dir: {str(path)!r} was written for other training data (X, Y differ)")
    expected_paths, treedef, want_leaves = _paths(template)
    if meta["blocks_paths"] != expected_paths or meta["blocks_treedef"] != str(treedef):
        raise ValueError(
            f"checkpoint_dir: {str(path)!r} holds blocks {meta['blocks_paths']}; this run builds {expected_paths}"
        )
    try:
        leaves = []
        for i, (name, want) in enumerate(zip(expected_paths, want_leaves)):
            leaf = arrays[f"block.{i}"]
            if leaf.shape != tuple(want.shape):
                raise ValueError(
                    f"checkpoint_dir: {str(path)!r}: block {name} has shape {leaf.shape}; expected {tuple(want.shape)}"
                )
            leaves.append(leaf.astype(want.dtype))
        history_leaves = [arrays[f"history.{i}"] for i in range(len(meta["history_paths"]))]
        stop_state = StopState(*(arrays[f"stop_state.{name}"] for name in StopState._fields))
        sweep, key_data = int(arrays["sweep"]), arrays["key_data"]
    except KeyError as exc:
        raise ValueError(f"checkpoint_dir: {str(path)!r} is missing {exc}; the file is incomplete") from None
    lengths = {leaf.shape[0] if leaf.ndim else -1 for leaf in history_leaves}
    if sweep != meta["sweep"] or lengths != {sweep + 1}:
        raise ValueError(
            f"checkpoint_dir: {str(path)!r} is inconsistent: its sweep counter is {sweep} (metadata {meta['sweep']}) "
            f"but its history holds {sorted(lengths)} entries; expected {sweep + 1} (initial state + each sweep)"
        )
    try:
        status = Status(int(meta["status"]))
    except ValueError:
        raise ValueError(f"checkpoint_dir: {str(path)!r} has an unknown status {meta['status']!r}") from None
    history = _unflatten_history(meta, history_leaves, path, history_template)
    blocks = jax.tree_util.tree_unflatten(treedef, leaves)
    return Checkpoint(
        blocks,
        sweep,
        key_data,
        history,
        meta["config"],
        stop_state,
        status,
        meta["config"].get("stop", {}),
        meta["run_id"],
    )


def _unflatten_history(meta, leaves, path, history_template) -> SweepInfo:
    """The history pytree, in the structure of this run's records (the family's extras included)."""
    want_paths, treedef, _ = _paths(history_template)
    if meta["history_paths"] != want_paths:
        raise ValueError(
            f"checkpoint_dir: {str(path)!r} holds the history entries {meta['history_paths']}; this run records "
            f"{want_paths}"
        )
    return jax.tree_util.tree_unflatten(treedef, leaves)
