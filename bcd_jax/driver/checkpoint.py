"""Checkpoints of a BCD run: one ``.npz`` file holding the blocks as a pytree, written atomically.

A checkpoint holds the algorithm's blocks (every leaf, named by its path in the pytree, with
the tree structure recorded), the sweep counter, the PRNG key the run was initialised with,
the history so far, the lossless description of the configuration (:meth:`Config.to_dict`)
and a fingerprint of the training data. Loading refuses a file that is corrupt, that was
written for another configuration (naming the fields that differ), for other data, or whose
blocks do not have the structure and shapes the configuration builds. NumPy and the standard
library suffice: orbax-checkpoint would add a heavy dependency for one small file per run.
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

from bcd_jax.config import Config
from bcd_jax.io import atomic_write

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT",
    "Checkpoint",
    "data_fingerprint",
    "save_checkpoint",
    "load_checkpoint",
    "check_checkpoint_dir",
    "flatten_description",
]

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT = 2
# Fields a resumed run may change without changing the run it continues.
RESUMABLE_CHANGES = ("run.sweeps",)


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns."""

    blocks: Any
    sweep: int
    key_data: np.ndarray
    history: dict[str, np.ndarray]
    config: dict[str, Any]
    movement: np.ndarray


def data_fingerprint(*arrays) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for arr in arrays:
        a = np.ascontiguousarray(np.asarray(arr))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def flatten_description(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hyper": {"gamma": 0.2}}`` -> ``{"hyper.gamma": 0.2}`` (lists become tuples, for comparing)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_description(value, f"{name}."))
        else:
            out[name] = _frozen(value)
    return out


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


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


def save_checkpoint(
    directory, blocks, sweep: int, history, *, config: Config, key_data, fingerprint: str, movement
) -> Path:
    """Writes ``directory/checkpoint.npz`` atomically (a temp file, then ``os.replace``).

    ``movement``: the squared step lengths so far (``FitResult.movement``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(blocks)
    arrays = {f"block.{i}": np.asarray(leaf) for i, (_, leaf) in enumerate(paths_and_leaves)}
    arrays["sweep"] = np.asarray(sweep, np.int64)
    arrays["key_data"] = np.asarray(key_data)
    fields = list(history._fields)
    arrays.update({f"history.{name}": np.asarray(getattr(history, name)) for name in fields})
    arrays["movement"] = np.asarray(movement, np.float64)
    meta = {
        "format": FORMAT,
        "config": config.to_dict(),
        "fingerprint": fingerprint,
        "blocks_treedef": str(treedef),
        "blocks_paths": [jax.tree_util.keystr(path) for path, _ in paths_and_leaves],
        "history_fields": fields,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    target = directory / CHECKPOINT_FILE
    return atomic_write(target, lambda fh: np.savez(fh, **arrays))


def load_checkpoint(directory, *, config: Config, fingerprint: str, template) -> Checkpoint:
    """Reads a checkpoint written by :func:`save_checkpoint` for this config, data and blocks.

    ``template`` is a pytree with the structure, shapes and dtypes of the blocks this run
    builds (``jax.eval_shape`` of the algorithm's ``init``).

    Raises:
      ValueError: no checkpoint, a corrupt file, another config (naming the fields that
        differ), other data, or blocks of another structure or shape.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise ValueError(f"checkpoint_dir: no checkpoint at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint_dir: {str(path)!r} is not a readable bcd_jax checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint_dir: {str(path)!r} has format {meta.get('format')!r}; expected {FORMAT} "
            "(written by another version of bcd_jax)"
        )
    saved = flatten_description(meta["config"])
    current = flatten_description(config.to_dict())
    differ = sorted(
        k for k in set(saved) | set(current) if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    if differ:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in differ)
        raise ValueError(f"checkpoint_dir: {str(path)!r} belongs to another config ({detail})")
    if meta["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint_dir: {str(path)!r} was written for other training data (X, Y differ)")
    expected_paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(p) for p, _ in expected_paths]
    if meta["blocks_paths"] != names or meta["blocks_treedef"] != str(treedef):
        raise ValueError(f"checkpoint_dir: {str(path)!r} holds blocks {meta['blocks_paths']}; this run builds {names}")
    try:
        leaves = []
        for i, (name, (_, want)) in enumerate(zip(names, expected_paths)):
            leaf = arrays[f"block.{i}"]
            if leaf.shape != tuple(want.shape):
                raise ValueError(
                    f"checkpoint_dir: {str(path)!r}: block {name} has shape {leaf.shape}; expected {tuple(want.shape)}"
                )
            leaves.append(leaf.astype(want.dtype))
        history = {name: arrays[f"history.{name}"] for name in meta["history_fields"]}
        sweep, key_data, movement = int(arrays["sweep"]), arrays["key_data"], arrays["movement"]
    except KeyError as exc:
        raise ValueError(f"checkpoint_dir: {str(path)!r} is missing {exc}; the file is incomplete") from None
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    return Checkpoint(tree, sweep, key_data, history, meta["config"], movement)
