"""Writing files safely: atomic replacement, the umask honoured, NaN-safe JSON.

Every file bcd_jax writes goes through :func:`atomic_write`: the bytes go to a temporary
file in the same folder, are flushed to disk, and replace the target with ``os.replace``, so a
reader (or a crash) sees either the old file or the new one, never half of one. Temporary
files are named ``.<target>.<random>.tmp``; :func:`remove_stale_temporaries` deletes those a
killed process left behind.

:class:`FolderLock` keeps two runs out of one output folder with a lock the kernel makes exclusive
and lets go of when its process ends.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

try:
    import fcntl
except ImportError:  # not a POSIX system: FolderLock says so when used
    fcntl = None

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

# A contender that finds the lock taken tries again for this long before it gives up: a run that
# is just taking the lock (or a check_free() probing it) holds it for microseconds, and a run that
# really holds it has written its record by then, so the refusal can name it.
_CONTENDED_WAIT_S = 0.05
_CONTENDED_TRIES = 6
# acquire() starts again when the lock file it locked was unlinked under it (a release racing
# with it); each new try opens the file now linked at the path, so a few tries always suffice
# unless runs keep taking and releasing the folder as fast as they can.
_REPLACED_TRIES = 20


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OverflowError, ValueError):  # not a pid at all
        return False
    return True


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (Linux); None where that is unknown.

    With the pid it names one process: a pid reused by a later process has a later start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name (field 2) may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _raw_record(fd: int) -> dict | None:
    """The record in the lock file as written, whoever wrote it (for the trace)."""
    try:
        record = json.loads(os.pread(fd, 1 << 16, 0))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _running(pid: int, start: int | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs (not gone, not a zombie, not reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] != "Z" and (start is None or int(fields[19]) == start)


def _trace(event: str, folder: Path, previous: dict | None = None) -> None:
    """With ``BCD_JAX_LOCK_TRACE=<file>`` set, one line per acquire and release (time, pid, folder),
    appended in a single write: the fault-injection script reads it to prove that no two processes
    ever held a folder at once. An acquire also says whether the run whose record it found in the
    lock file (a killed holder's) still runs at that instant: if it did, two would hold the folder.
    Unset (the normal case), nothing happens."""
    path = os.environ.get("BCD_JAX_LOCK_TRACE")
    if not path:
        return
    before = "none"
    if previous and isinstance(previous.get("pid"), int) and previous["pid"] != os.getpid():
        alive = _running(previous["pid"], previous.get("process_start"))
        before = f"{previous['pid']}:{'running' if alive else 'gone'}"
    line = f"{time.time():.6f} {os.getpid()} {event} {before} {Path(folder).resolve()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class FolderLock:
    """An exclusive lock on an output folder, so that two runs never write one folder.

    The lock is a ``flock(LOCK_EX)`` on ``<folder>/.bcd_jax.lock``, held on an open file for as
    long as the run holds the lock. The kernel makes it exclusive (two processes, or two
    ``FolderLock`` objects in one process, cannot both hold it, however close together they start)
    and releases it when the process ends however it ends, so a killed run never leaves the folder
    blocked and nothing has to guess whether a lock is stale: a recorded pid that now belongs to
    another process, or a record written on another host, is no obstacle unless the lock is held.

    The file also holds the owner's record (pid, host, process start time and the ISO time the
    lock was taken) so that a refused run can say who holds the folder. The record is written just
    after the lock is taken, so a run that is starting at that moment is named only as "another
    run". A record left by a run that was killed is overwritten by the next run, without a warning:
    the kernel's lock, not the file, says whether the folder is in use.

    On release the file is removed (the folder is left as the run wrote it). That is safe because
    ``acquire`` checks, once it holds the lock, that the path still names the file it locked; a
    run that opened the file just before another released (and removed) it starts again instead
    of holding a lock on a removed file while a third run locks the new one.

    The file descriptor is not inherited by subprocesses, but ``os.fork`` shares it: a forked
    child that outlives the run keeps the folder locked until it ends too.

    Network file systems: Linux implements ``flock`` on NFS with the server's byte-range locks, so
    with NFS v4 (or v3 with a working lock daemon) the lock is exclusive across hosts, and a crashed
    host's lock is freed when its lease expires (about 90 s). Kernels before 2.6.12 took ``flock``
    on NFS locally only: two hosts could then both hold the lock. A file system that refuses file
    locks (some CIFS and FUSE mounts, Lustre without ``-o flock``) gets a ``ValueError`` naming the
    folder. Needs ``fcntl`` (Linux, macOS and other POSIX systems).

    Use as a context manager, or ``acquire()`` / ``release()``.
    """

    def __init__(self, folder: str | Path, what: str = "out_dir"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._pid: int | None = None  # the process that took the lock (a forked child is not it)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def _flock(self, fd: int, exclusive: bool) -> bool:
        """Takes an exclusive (or shared) flock on ``fd`` without blocking; False if another process holds it.

        A lock held by someone else is tried again for a moment before giving up (see
        ``_CONTENDED_WAIT_S``). A file system that refuses file locks is a ``ValueError``.
        """
        if fcntl is None:
            raise ValueError(
                f"{self.what}: cannot lock {str(self.folder)!r}: this platform has no fcntl.flock; "
                "expected a POSIX system (Linux, macOS)"
            )
        operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        for attempt in range(_CONTENDED_TRIES):
            try:
                fcntl.flock(fd, operation)
                return True
            except BlockingIOError:  # EWOULDBLOCK: someone else holds it
                if attempt + 1 < _CONTENDED_TRIES:
                    time.sleep(_CONTENDED_WAIT_S / (_CONTENDED_TRIES - 1))
            except OSError as exc:  # ENOLCK, EOPNOTSUPP, ENOSYS, ...: no file locks here
                raise ValueError(
                    f"{self.what}: cannot lock {str(self.path)!r}: the file system refused a file lock "
                    f"({exc.strerror or exc}); expected a folder on a file system with flock support "
                    "(a local disk, or NFS v4)"
                ) from None
        return False

    def _same_file(self, fd: int) -> bool:
        """Whether ``self.path`` still names the file open on ``fd`` (not removed, not replaced)."""
        try:
            linked = os.stat(self.path)
        except OSError:
            return False
        opened = os.fstat(fd)
        return (opened.st_dev, opened.st_ino) == (linked.st_dev, linked.st_ino)

    def _record(self, fd: int) -> dict[str, Any] | None:
        """The owner record in the file open on ``fd``; None if it is empty, half written or stale.

        A run that has just taken the lock may not have written its record yet, and the file may
        still hold the record of a run killed earlier: a record naming a process of this host that
        is gone (or a pid now used by a process started later) is not the holder, so it is not named.
        """
        try:
            owner = json.loads(os.pread(fd, 1 << 16, 0))
        except (OSError, ValueError):
            return None
        if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
            return None
        if owner.get("host") == socket.gethostname():
            if not _pid_alive(owner["pid"]):
                return None
            start = owner.get("process_start")
            if start is not None and _process_start(owner["pid"]) not in (None, start):
                return None
        return owner

    def _in_use(self, owner: dict[str, Any] | None) -> ValueError:
        if owner is None:
            who = "another run (it is starting: its pid is not recorded yet)"
        else:
            who = f"another run (pid {owner['pid']} on host {owner.get('host')} since {owner.get('started')})"
        return ValueError(
            f"{self.what}: {str(self.folder)!r} is in use by {who}; wait for it to finish or choose another folder"
        )

    def _probe(self) -> tuple[bool, dict[str, Any] | None]:
        """(whether a run holds the lock, its record), taking a shared lock for a moment if it is free.

        Creates nothing: a folder or lock file that does not exist is free. A shared lock, not an
        exclusive one, so that two runs checking at once do not see each other as the holder.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no folder, no lock file (or unreadable: acquire() will say what is wrong)
            return False, None
        try:
            if self._flock(fd, exclusive=False):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False, None
            return True, self._record(fd)
        finally:
            os.close(fd)

    def holder(self) -> dict[str, Any] | None:
        """The record of the run that holds the lock (an empty dict if it has not written it yet), or None if free."""
        held, owner = self._probe()
        if not held:
            return None
        return owner if owner is not None else {}

    def check_free(self) -> None:
        """Raises ``ValueError`` naming the folder and the other run if a live run holds the lock.

        Takes nothing: the lock is probed and let go at once, so a run can check before it says or
        writes anything and take the lock later (where a run that started in between is refused).
        """
        held, owner = self._probe()
        if held:
            raise self._in_use(owner)

    def _write_record(self, fd: int) -> None:
        """Writes this run's record into the locked file (read by a refused run to name us)."""
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)  # a killed run's record may be longer than ours
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)

    def acquire(self) -> FolderLock:
        """Takes the lock or raises ``ValueError`` naming the folder and the run that holds it; returns self."""
        if self.held:
            raise ValueError(
                f"{self.what}: this FolderLock already holds {str(self.folder)!r}; release it before acquiring again"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"{self.what}: cannot create the folder {str(self.folder)!r} ({exc.strerror or exc}); "
                "expected a folder this user can write"
            ) from None
        for _ in range(_REPLACED_TRIES):
            try:
                # No O_TRUNC: the file may be another run's lock, whose record we must not erase.
                # Not inherited by subprocesses (os.open makes descriptors non-inheritable).
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
            except OSError as exc:
                raise ValueError(
                    f"{self.what}: cannot open the lock file {str(self.path)!r} ({exc.strerror or exc}); "
                    "expected a folder this user can write"
                ) from None
            try:
                if not self._flock(fd, exclusive=True):
                    raise self._in_use(self._record(fd))
                # The holder removes the file on release; if it did so after we opened it, we lock a
                # removed file while another run may lock the new one at the path: start again.
                replaced = not self._same_file(fd)
                if not replaced:
                    previous = _raw_record(fd) if os.environ.get("BCD_JAX_LOCK_TRACE") else None
                    self._write_record(fd)
            except BaseException:
                os.close(fd)
                raise
            if replaced:
                os.close(fd)
                continue
            self._fd, self._pid = fd, os.getpid()
            _trace("acquire", self.folder, previous)
            return self
        raise ValueError(
            f"{self.what}: could not lock {str(self.folder)!r}: its lock file was replaced {_REPLACED_TRIES} times "
            "while we locked it; expected other runs to take and release the folder less often"
        )

    def release(self) -> None:
        """Lets go of the lock and removes the lock file (nothing if not held).

        The file is removed while the lock is still held, and only if the path still names the file
        this object locked (someone may have deleted it and another run created a new one). A forked
        child only closes its copy of the descriptor: the lock and the file stay the parent's.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _trace("release", self.folder)
        try:
            if os.getpid() == self._pid and self._same_file(fd):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # the last descriptor of the open file: the kernel lets go of the lock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
