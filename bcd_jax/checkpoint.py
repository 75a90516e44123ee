"""Checkpoints of a BCD run: one ``.npz`` file, written atomically.

A checkpoint holds the whole state (W, V, sweep counter), the PRNG key the run was
initialised with, the diagnostics so far, the resolved config and a fingerprint of the
training data. Loading refuses a file that is corrupt, that was written for another
config, or for other data, with an error that says which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bcd_jax.config import Config

__all__ = ["CHECKPOINT_FILE", "config_to_dict", "data_fingerprint", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FILE = "checkpoint.npz"
_FORMAT = 1
# Fields a resumed run may change without changing the run it continues.
_RESUMABLE_CHANGES = ("sweeps",)


def config_to_dict(config: Config) -> dict[str, Any]:
    """A JSON-ready view of a Config (a callable activation is recorded by its name)."""
    out = dataclasses.asdict(config)
    if callable(out["activation"]):
        out["activation"] = f"<callable {getattr(config.activation, '__name__', type(config.activation).__name__)}>"
    if out["svb"] is not None:
        out["svb"] = list(out["svb"])
    return out


def data_fingerprint(X, Y) -> str:
    """SHA-256 of the training data's shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for arr in (X, Y):
        a = np.ascontiguousarray(np.asarray(arr))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(directory, state, history, *, config: Config, key_data, fingerprint: str) -> Path:
    """Writes ``directory/checkpoint.npz`` atomically (a temp file, then ``os.replace``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"W_{j}": np.asarray(w) for j, w in enumerate(state.weights, start=1)}
    arrays.update({f"V_{j}": np.asarray(v) for j, v in enumerate(state.hidden, start=1)})
    arrays["sweep"] = np.asarray(state.sweep)
    arrays["key_data"] = np.asarray(key_data)
    arrays.update({f"history.{name}": np.asarray(value) for name, value in history._asdict().items()})
    meta = {"format": _FORMAT, "config": config_to_dict(config), "fingerprint": fingerprint}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    target = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CHECKPOINT_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(directory, *, config: Config, fingerprint: str):
    """Reads a checkpoint written by :func:`save_checkpoint` for this config and data.

    Returns ``(weights, hidden, sweep, key_data, history_dict)``.

    Raises:
      ValueError: no checkpoint, a corrupt file, another config (naming the fields that
        differ) or other data.
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
    if meta.get("format") != _FORMAT:
        raise ValueError(f"checkpoint_dir: {str(path)!r} has format {meta.get('format')!r}; expected {_FORMAT}")
    saved, current = meta["config"], config_to_dict(config)
    differ = sorted(k for k in set(saved) | set(current) if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if differ:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in differ)
        raise ValueError(f"checkpoint_dir: {str(path)!r} belongs to another config ({detail})")
    if meta["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint_dir: {str(path)!r} was written for other training data (X, Y differ)")
    try:
        depth = config.depth
        weights = tuple(jax.numpy.asarray(arrays[f"W_{j}"]) for j in range(1, depth + 1))
        hidden = tuple(jax.numpy.asarray(arrays[f"V_{j}"]) for j in range(1, depth))
        sweep = int(arrays["sweep"])
        key_data = arrays["key_data"]
        history = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("history.")}
    except KeyError as exc:
        raise ValueError(f"checkpoint_dir: {str(path)!r} is missing {exc}; the file is incomplete") from None
    return weights, hidden, sweep, key_data, history
