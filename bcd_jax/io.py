"""Writing files safely: atomic replacement, the umask honoured, NaN-safe JSON.

Every file bcd_jax writes goes through :func:`atomic_write`: the bytes go to a temporary
file in the same folder, are flushed to disk, and replace the target with ``os.replace``, so a
reader (or a crash) sees either the old file or the new one, never half of one. Temporary
files are named ``.<target>.<random>.tmp``; :func:`remove_stale_temporaries` deletes those a
killed process left behind.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "json_ready",
    "dumps_json",
    "remove_stale_temporaries",
    "FolderLock",
    "LOCK_FILE",
]

TEMP_SUFFIX = ".tmp"


def _file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, data: bytes | Callable[[IO[bytes]], None]) -> Path:
    """Writes ``data`` (bytes, or a function that writes to a binary file object) to ``path`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())  # mkstemp creates 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, text.encode())


def remove_stale_temporaries(folder: str | Path, target: str) -> list[Path]:
    """Deletes ``.<target>.*.tmp`` files in ``folder`` (left by a killed writer); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(f".{target}.*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def json_ready(value: Any) -> Any:
    """Arrays and NumPy scalars as nested lists of Python numbers; NaN and infinity as None.

    Strict JSON has neither NaN nor infinity, so they are written as ``null``.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
        a = np.asarray(value)
        if a.dtype.kind == "f":
            return np.where(np.isfinite(a), a.astype(object), None).tolist()
        return a.tolist()
    return value


def dumps_json(value: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`json_ready` ``(value)``, refusing NaN (strict JSON)."""
    return json.dumps(json_ready(value), allow_nan=False, **kwargs)


LOCK_FILE = ".bcd_jax.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class FolderLock:
    """An advisory lock on an output folder: ``<folder>/.bcd_jax.lock`` holding the owner's pid.

    ``acquire()`` creates the file exclusively. If it exists and names a live process on this
    host, the folder is in use: a ``ValueError`` names the folder and that process. A lock whose
    process is gone (a killed run) is stale: it is reported with a ``RuntimeWarning`` and taken
    over. Use as a context manager; the file is removed on release.
    """

    def __init__(self, folder: str | Path, what: str = "out_dir"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self.held = False

    def _owner(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def holder(self) -> dict[str, Any] | None:
        """The lock file's owner if it is a live run (on this host, or on another one), else None."""
        if not self.path.exists():
            return None
        owner = self._owner()
        pid = owner.get("pid")
        if isinstance(pid, int) and (owner.get("host") != socket.gethostname() or _pid_alive(pid)):
            return owner
        return None

    def check_free(self) -> None:
        """Raises ``ValueError`` naming the folder and the other run if a live run holds the lock."""
        owner = self.holder()
        if owner is not None:
            raise ValueError(
                f"{self.what}: {str(self.folder)!r} is in use by another run (pid {owner.get('pid')} on "
                f"{owner.get('host')}, since {owner.get('started')}); wait for it to finish or choose another "
                f"folder (if that run is gone, delete {str(self.path)!r})"
            )

    def acquire(self) -> FolderLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{self.what}: cannot create {str(self.folder)!r} ({exc.strerror or exc})") from None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _file_mode())
            except FileExistsError:
                self.check_free()
                owner = self._owner()
                warnings.warn(
                    f"{self.what}: {str(self.folder)!r} had a stale lock from pid {owner.get('pid')} (no longer "
                    "running); taking it over",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.path.unlink(missing_ok=True)
                continue
            except OSError as exc:
                raise ValueError(f"{self.what}: cannot write in {str(self.folder)!r} ({exc.strerror or exc})") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise ValueError(f"{self.what}: could not lock {str(self.folder)!r}; another run keeps taking it")

    def release(self) -> None:
        if self.held:
            if self._owner().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
