"""FolderLock: one run per output folder, decided by the kernel's flock, never by guessing.

Each defect the lock probe found has a regression test here: two runs starting at once (or both
taking over a leftover lock) could both hold the folder; a recorded pid reused by an unrelated
process, or a record written on another host, blocked the folder forever; and taking over a
leftover lock printed a warning with a source line. Processes that hold the lock load
``bcd_jax/io.py`` by path (NumPy only, not JAX), so that each starts in a fraction of a second.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import bcd_jax.io as lock_module
from bcd_jax.io import LOCK_FILE, FolderLock

IO_FILE = str(Path(lock_module.__file__).resolve())

_LOAD = """
import importlib.util, json, os, random, sys, time
spec = importlib.util.spec_from_file_location("_folder_lock_under_test", sys.argv[1])
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
"""

# Takes the lock, says so, and holds it until its stdin closes (or it is killed).
HOLDER = (
    _LOAD
    + """
lock = io.FolderLock(sys.argv[2], "out_dir").acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""
)

# Holds a bare flock on the lock file without writing a record: a run caught just after it took the lock.
BARE_FLOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""

# Takes the lock once and releases it at once, printing nothing unless something is wrong.
ONCE = (
    _LOAD
    + """
io.FolderLock(sys.argv[2], "out_dir").acquire().release()
"""
)

# One racer: waits at the barrier (its stdin), then tries to take the lock until it has held it
# `times` times (0: until `window` seconds have passed) for `hold` seconds each, and writes the
# intervals it held it (monotonic clock, shared by all processes on a host) to `log`.
RACER = (
    _LOAD
    + """
folder, log, hold, window, times = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
print("ready", flush=True)
sys.stdin.read()
deadline = time.monotonic() + window
intervals, refusals = [], 0
while (times == 0 or len(intervals) < times) and time.monotonic() < deadline:
    lock = io.FolderLock(folder, "out_dir")
    try:
        lock.acquire()
    except ValueError:
        refusals += 1
        time.sleep(random.uniform(0, 0.002))
        continue
    start = time.monotonic()
    time.sleep(hold)
    end = time.monotonic()
    lock.release()
    intervals.append([start, end])
with open(log, "w") as fh:
    json.dump({"intervals": intervals, "refusals": refusals}, fh)
"""
)


def _start(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen, ready: str = "held") -> subprocess.Popen:
    line = proc.stdout.readline().strip()
    if line != ready:
        proc.kill()
        raise AssertionError(f"helper process did not start: {line!r} {proc.stderr.read()}")
    return proc


def _spawn(script: str, *args) -> subprocess.Popen:
    """A helper process that has printed "held" (it holds the lock)."""
    return _wait_ready(_start(script, *args))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(folder: Path, pid: int, host: str | None = None) -> Path:
    """A lock file with a record of ``pid`` on ``host`` and no flock held: what a killed run leaves."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2020-01-01 00:00:00"}))
    return path


def _in_use(pid: int) -> str:
    return rf"^out_dir: '.*' is in use by another run \(pid {pid} on host {socket.gethostname()} since .*\); wait"


# Exclusive within one process too: flock belongs to an open file, and each FolderLock opens its own.
def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with FolderLock(tmp_path, "out_dir") as first:
        assert first.held and first.path == tmp_path / LOCK_FILE
        second = FolderLock(tmp_path, "out_dir")
        with pytest.raises(ValueError, match=_in_use(os.getpid()) + " for it to finish or choose another folder$"):
            second.acquire()
        with pytest.raises(ValueError, match=_in_use(os.getpid())):
            second.check_free()
        assert not second.held and second.holder()["pid"] == os.getpid()
        with pytest.raises(ValueError, match=r"^out_dir: this FolderLock already holds '.*'; release it"):
            first.acquire()
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit, the file removed


def test_another_process_holding_the_lock_is_refused_and_named(tmp_path):
    holder = _spawn(HOLDER, IO_FILE, tmp_path)
    try:
        with pytest.raises(ValueError, match=_in_use(holder.pid)):
            FolderLock(tmp_path, "out_dir").acquire()
        with pytest.raises(ValueError, match=_in_use(holder.pid)):
            FolderLock(tmp_path, "out_dir").check_free()
        record = FolderLock(tmp_path).holder()
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
        assert isinstance(record["started"], str) and "T" in record["started"]  # ISO 8601
    finally:
        _stop(holder)


# The kernel lets go of a killed process's lock: the next run takes the folder at once, silently.
def test_killing_the_holder_frees_the_folder_at_once(tmp_path):
    holder = _spawn(HOLDER, IO_FILE, tmp_path)
    try:
        with pytest.raises(ValueError, match=_in_use(holder.pid)):
            FolderLock(tmp_path, "out_dir").acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # its record is left
        assert FolderLock(tmp_path).holder() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with FolderLock(tmp_path, "out_dir") as lock:
                assert FolderLock(tmp_path).holder()["pid"] == os.getpid() and lock.held
    finally:
        _stop(holder)


# Defect 4: taking over a leftover lock printed a RuntimeWarning and the warnings.warn source line.
def test_a_leftover_lock_is_taken_over_without_a_word(tmp_path):
    _leftover(tmp_path, _dead_pid())
    proc = subprocess.run([sys.executable, "-c", ONCE, IO_FILE, tmp_path], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""
    assert not (tmp_path / LOCK_FILE).exists()


# Defect 2: a recorded pid that now names an unrelated live process is no obstacle without the flock.
@pytest.mark.parametrize("pid", ["parent", 1, "sleeper"])
def test_a_record_naming_a_live_unrelated_pid_is_no_obstacle(tmp_path, pid):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid = {"parent": os.getppid(), "sleeper": sleeper.pid}.get(pid, pid)
        path = _leftover(tmp_path, pid)
        lock = FolderLock(tmp_path, "out_dir")
        assert lock.holder() is None
        lock.check_free()
        assert path.exists()  # check_free takes nothing and changes nothing
        with lock:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()


# Defect 3: a record written on another host counted as a live run forever.
def test_a_record_from_another_host_is_no_obstacle(tmp_path):
    _leftover(tmp_path, os.getpid(), host="another-host.example")
    lock = FolderLock(tmp_path, "out_dir")
    assert lock.holder() is None
    lock.check_free()
    with lock:
        assert json.loads(lock.path.read_text())["host"] == socket.gethostname()


# A run that holds the flock but has not written its record yet (or left a killed run's record in
# place) is "another run", not a wrong pid.
@pytest.mark.parametrize("content", ["", '{"pid": 12', "killed"], ids=["empty", "half written", "killed run's"])
def test_a_holder_without_its_record_yet_is_named_another_run(tmp_path, content):
    path = _leftover(tmp_path, _dead_pid()) if content == "killed" else tmp_path / LOCK_FILE
    if content != "killed":
        path.write_text(content)
    holder = _spawn(BARE_FLOCK, path)
    try:
        starting = r"^out_dir: '.*' is in use by another run \(it is starting: its pid is not recorded yet\); wait"
        with pytest.raises(ValueError, match=starting):
            FolderLock(tmp_path, "out_dir").acquire()
        with pytest.raises(ValueError, match=starting):
            FolderLock(tmp_path, "out_dir").check_free()
        assert FolderLock(tmp_path).holder() == {}
    finally:
        _stop(holder)


def _start_racers(folder: Path, racers: int, hold: float, window: float, times: int, started: list) -> tuple:
    logs = [folder.parent / f"{folder.name}-racer{i}.json" for i in range(racers)]
    procs = [_start(RACER, IO_FILE, folder, log, hold, window, times) for log in logs]
    started.extend(procs)
    return folder, logs, procs


def _run_racers(folder: Path, logs: list[Path], procs: list[subprocess.Popen], timeout: float) -> tuple:
    """Releases the racers at once and waits for them: (intervals held, sorted; refusals; racers that never held it)."""
    for proc in procs:  # the barrier: every racer's stdin closes within microseconds
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=timeout) == 0, proc.stderr.read()
    results = [json.loads(log.read_text()) for log in logs]
    assert not (folder / LOCK_FILE).exists()  # the last holder removed it
    intervals = sorted(iv for r in results for iv in r["intervals"])
    return intervals, sum(r["refusals"] for r in results), sum(not r["intervals"] for r in results)


def _overlaps(intervals: list[list[float]]) -> list:
    return [(a, b) for a, b in zip(intervals, intervals[1:]) if b[0] < a[1]]


# Defect 1: at most one holder at any instant. Eight processes are released by one barrier and
# the intervals in which they held the lock must not overlap: twice (once on an empty folder, once
# on a folder where all of them find a killed run's lock) each tries until it has held the lock
# for 0.3 s once; then they hammer it, taking and releasing it (held 1 ms) as fast as they can for
# a second, so that many releases meet many processes opening the file.
def test_racing_processes_never_hold_the_lock_together(tmp_path):
    racers = 8
    rounds = [  # (name, a killed run's lock is there, seconds held, times each, window in s)
        ("empty folder", False, 0.3, 1, racers * 0.3 + 5),
        ("killed run's lock", True, 0.3, 1, racers * 0.3 + 5),
        ("hammered", True, 0.001, 0, 1.0),
    ]
    started, counts = [], {}

    def start_round(i):
        name, leftover, hold, times, window = rounds[i]
        if leftover:
            _leftover(tmp_path / f"out{i}", _dead_pid())
        return _start_racers(tmp_path / f"out{i}", racers, hold, window, times, started)

    try:
        upcoming = start_round(0)
        for i, (name, *_, window) in enumerate(rounds):
            folder, logs, procs = upcoming
            for proc in procs:
                _wait_ready(proc, "ready")
            if i + 1 < len(rounds):
                upcoming = start_round(i + 1)  # they start up (CPU) while this round races (mostly sleeps)
            intervals, refusals, never = _run_racers(folder, logs, procs, window + 30)
            counts[name] = (len(intervals), refusals, len(_overlaps(intervals)), never)
    finally:
        for proc in started:
            _stop(proc)
    print("\nrace (acquisitions, refusals, overlaps, racers that never held it):", counts)
    assert all(overlaps == 0 for _, _, overlaps, _ in counts.values()), counts
    assert counts["empty folder"][0] == counts["killed run's lock"][0] == racers, counts
    assert counts["hammered"][0] >= 50, counts


# Release removes the file (see FolderLock); a contender that opened it just before must not end up
# holding a lock on the removed file while a third run holds the new one.
def test_a_contender_that_opened_the_file_before_a_release_does_not_hold_it_too(tmp_path, monkeypatch):
    first, contender, third = (FolderLock(tmp_path, "out_dir") for _ in range(3))
    first.acquire()
    real_flock, fired = lock_module.fcntl.flock, []

    def flock(fd, operation):
        if operation & lock_module.fcntl.LOCK_EX and not fired:  # the contender has the old file open
            fired.append(True)
            first.release()  # unlinks that file
            third.acquire()  # and creates, locks and records a new one
        return real_flock(fd, operation)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    with pytest.raises(ValueError, match=_in_use(os.getpid())):
        contender.acquire()
    assert fired and third.held and not contender.held
    assert os.stat(third.path).st_ino == os.fstat(third._fd).st_ino
    third.release()


def test_release_then_acquire_again(tmp_path):
    lock = FolderLock(tmp_path / "new" / "folder", "out_dir")
    for _ in range(3):
        lock.acquire()
        assert lock.held and lock.path.exists()
        lock.release()
        assert not lock.held and not lock.path.exists()
        lock.release()  # a second release does nothing
    with FolderLock(lock.folder) as other:
        assert other.held
    assert lock.holder() is None


def test_release_leaves_a_lock_file_it_does_not_hold(tmp_path):
    lock = FolderLock(tmp_path, "out_dir").acquire()
    replacement = tmp_path / "replacement"
    replacement.write_text("someone else's")
    os.replace(replacement, lock.path)  # someone deleted our file and another run created its own
    lock.release()
    assert lock.path.read_text() == "someone else's"


def test_check_free_creates_nothing_and_takes_nothing(tmp_path):
    missing = tmp_path / "missing"
    FolderLock(missing, "--out").check_free()
    assert FolderLock(missing).holder() is None and not missing.exists()
    path = _leftover(tmp_path, _dead_pid())
    before = path.read_text()
    FolderLock(tmp_path, "--out").check_free()
    assert path.read_text() == before
    holder = _spawn(HOLDER, IO_FILE, tmp_path)  # nothing of check_free's lock is left to block another process
    _stop(holder)


def test_a_file_system_without_file_locks_is_a_clear_error(tmp_path, monkeypatch):
    def flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    refused = r"^checkpoint_dir: cannot lock '.*\.bcd_jax\.lock': the file system refused a file lock \(.+\); expected"
    with pytest.raises(ValueError, match=refused):
        FolderLock(tmp_path, "checkpoint_dir").acquire()
    monkeypatch.undo()
    FolderLock(tmp_path, "checkpoint_dir").acquire().release()  # the failed try kept nothing open or locked


def test_a_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"^out_dir: cannot create the folder '.*file' \(.+\); expected a folder"):
        FolderLock(tmp_path / "file", "out_dir").acquire()
