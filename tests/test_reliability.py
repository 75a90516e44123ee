"""Reliability: fail before the compute, never lose a run, never let two runs clobber each other.

Each numbered case of the reliability report is a regression test here: a bad input gives a
clear error before any sweep runs; a good one works.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.driver.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from bcd_jax.experiments.folder import CHECKPOINT_DIR, VIEW_FILES, check_folder
from bcd_jax.io import LOCK_FILE, FolderLock

from helpers import cli_command, cli_env

NETWORK = bcd_jax.Network(depth=3, width=5)
CONFIG = bcd_jax.Config(network=NETWORK, algorithm=bcd_jax.Akiyama(k_v=3, k_w=3, step_size="auto"), sweeps=4)
# A run here diverges only where a test says so.
pytestmark = pytest.mark.filterwarnings("error::bcd_jax.BCDDivergenceWarning")


@pytest.fixture(scope="module")
def data():
    return bcd_jax.teacher_problem(jax.random.key(0), n=16, d_in=20)


@pytest.fixture(scope="module")
def subprocess_env(tmp_path_factory):
    """The environment of this module's subprocesses (this checkout): they share JAX's persistent
    compilation cache, so that each one after the first starts in about half the time."""
    return cli_env(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


class _NoCompute:
    """A callback that fails the test if any chunk of sweeps ever ran."""

    def __init__(self):
        self.calls = 0

    def __call__(self, done, info):
        self.calls += 1


def _refused_before_compute(fit_call, match):
    callback = _NoCompute()
    with pytest.raises(ValueError, match=match):
        fit_call(callback)
    assert callback.calls == 0


# 1. A configuration that cannot be recorded losslessly fails when fit starts, not after training.
@pytest.mark.parametrize(
    "network",
    [
        NETWORK.replace(loss=lambda p, t: jnp.sum((p - t) ** 2)),
        NETWORK.replace(activation=bcd_jax.Activation("mine", lambda z: z + 0.5 * jnp.tanh(z), lipschitz=1.5)),
        NETWORK.replace(activation=("leaky_relu", bcd_jax.Activation("mine", lambda z: z, lipschitz=1.0))),
    ],
    ids=["callable loss", "unregistered Activation", "callable in a per-layer list"],
)
def test_unrecordable_config_is_refused_before_training(data, tmp_path, network):
    X, Y = data
    config = CONFIG.replace(network=network)
    _refused_before_compute(
        lambda cb: bcd_jax.fit(X, Y, config, checkpoint_dir=tmp_path / "c", callback=cb),
        r"^(loss|activation): the callable .* cannot be recorded losslessly",
    )
    assert not (tmp_path / "c" / CHECKPOINT_FILE).exists()
    bcd_jax.fit(X, Y, config, progress=None)  # without a checkpoint the same config trains


# 2. A checkpoint folder that is a file, or cannot be written, fails before the compute.
def test_checkpoint_dir_that_is_a_file_is_refused(data, tmp_path):
    X, Y = data
    (tmp_path / "file").write_text("mine")
    _refused_before_compute(
        lambda cb: bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path / "file", callback=cb),
        r"^checkpoint_dir: .* is a file",
    )
    _refused_before_compute(
        lambda cb: bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path / "file" / "sub", callback=cb),
        r"^checkpoint_dir: cannot write",
    )
    assert (tmp_path / "file").read_text() == "mine"


def test_unwritable_checkpoint_dir_is_refused(data, tmp_path):
    X, Y = data
    # /proc accepts no new folders, not even from root (permission bits would not stop root).
    _refused_before_compute(
        lambda cb: bcd_jax.fit(X, Y, CONFIG, checkpoint_dir="/proc/bcd_jax_test", callback=cb),
        r"^checkpoint_dir: cannot write",
    )
    if os.geteuid() != 0:
        locked = tmp_path / "read_only"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            _refused_before_compute(
                lambda cb: bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=locked, callback=cb),
                r"^checkpoint_dir: cannot write",
            )
        finally:
            locked.chmod(0o700)


# 3. and 5. Registered activations resume; another function under the name is refused (a per-layer
# activation list resumes bit for bit through the command line: test_cli_sigint_...).
def test_registered_activation_resumes_and_another_is_refused(data, tmp_path):
    X, Y = data
    first = bcd_jax.register_activation(
        bcd_jax.Activation("test_shortcut_a", lambda z: z + 0.5 * jnp.tanh(z), alpha=1.0, lipschitz=1.5), overwrite=True
    )
    second = bcd_jax.register_activation(
        bcd_jax.Activation("test_shortcut_b", lambda z: z + 0.25 * jnp.tanh(z), alpha=1.0, lipschitz=1.25),
        overwrite=True,
    )
    try:
        config = CONFIG.replace(network=NETWORK.replace(activation=first))
        bcd_jax.fit(X, Y, config.replace(sweeps=2), checkpoint_dir=tmp_path)
        resumed = bcd_jax.fit(X, Y, config, checkpoint_dir=tmp_path, resume=True)
        assert resumed.sweeps_completed == 4
        other = config.replace(network=NETWORK.replace(activation=second))
        with pytest.raises(ValueError, match=r"another config \(network.activation: checkpoint 'test_shortcut_a'"):
            bcd_jax.fit(X, Y, other.replace(sweeps=6), checkpoint_dir=tmp_path, resume=True)
        # An Activation that merely shares a registered name is not the registered one.
        impostor = bcd_jax.Activation("test_shortcut_a", lambda z: 2 * z, lipschitz=2.0)
        with pytest.raises(ValueError, match="^activation: the callable"):
            config.replace(network=NETWORK.replace(activation=impostor)).to_dict()
        # Reliability round 2: ANOTHER function registered under the checkpoint's name is refused on resume.
        bcd_jax.register_activation(
            bcd_jax.Activation("test_shortcut_a", lambda z: z + 0.4 * jnp.tanh(z), alpha=1.0, lipschitz=1.4),
            overwrite=True,
        )
        renamed = CONFIG.replace(network=NETWORK.replace(activation="test_shortcut_a"), sweeps=6)
        before = (tmp_path / CHECKPOINT_FILE).read_bytes()
        _refused_before_compute(
            lambda cb: bcd_jax.fit(X, Y, renamed, checkpoint_dir=tmp_path, resume=True, callback=cb),
            r"^checkpoint_dir: .* was written with other functions under the same names \(network.activation",
        )
        assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    finally:
        bcd_jax.ACTIVATIONS.unregister("test_shortcut_a")
        bcd_jax.ACTIVATIONS.unregister("test_shortcut_b")


def _rewrite_checkpoint(path: Path, edit) -> None:
    """Rewrites a checkpoint.npz with NumPy after ``edit(arrays, meta)`` (a damaged or hand-edited file)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    edit(arrays, meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _drop_run_id(arrays, meta):
    del meta["run_id"]


def _sweep_counter_three(arrays, meta):  # the history still holds the initial state + 4 sweeps
    arrays["sweep"] = np.asarray(3, np.int64)
    meta["sweep"] = 3


def _sweep_array_two(arrays, meta):  # the array disagrees with the metadata
    arrays["sweep"] = np.asarray(2, np.int64)


# Reliability round 2: a checkpoint with a missing metadata key, or whose sweep counter disagrees with its
# history, is refused naming the file (never a KeyError, never a run resumed from the wrong sweep).
@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop_run_id, r"is incomplete: its metadata lacks \['run_id'\]"),
        (_sweep_counter_three, r"is inconsistent: its sweep counter is 3 \(metadata 3\) but its history holds \[5\]"),
        (_sweep_array_two, r"is inconsistent: its sweep counter is 2 \(metadata 4\)"),
    ],
    ids=["metadata without run_id", "sweep counter behind the history", "counter and metadata differ"],
)
def test_a_damaged_checkpoint_is_refused_naming_it(data, tmp_path, capsys, edit, message):
    X, Y = data
    folder = tmp_path / "run" / CHECKPOINT_DIR
    bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=folder)
    path = folder / CHECKPOINT_FILE
    _rewrite_checkpoint(path, edit)
    pattern = rf"^checkpoint_dir: '{re.escape(str(path))}' {message}"
    _refused_before_compute(
        lambda cb: bcd_jax.fit(X, Y, CONFIG.replace(sweeps=6), checkpoint_dir=folder, resume=True, callback=cb),
        pattern,
    )
    if edit is _drop_run_id:  # the command line reads the metadata first: one line, exit status 2
        status, _, err = _cli(["run", "--resume", tmp_path / "run", "--quiet"], capsys)
        assert status == 2 and err.count("\n") == 1 and "is incomplete: its metadata lacks ['run_id']" in err
        assert "Traceback" not in err and "KeyError" not in err


# 6. Integer labels are encoded as n x classes rows, never through a classes x classes matrix.
def test_large_labels_use_memory_proportional_to_n():
    X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 99_999])
    loss = bcd_jax.get_loss("softmax_cross_entropy")
    tracemalloc.start()
    # (classes absent from the labels need num_classes: labels read as 0..C-1 must cover every class)
    _, Y = bcd_jax.validation.check_data(X, labels, loss=loss, num_classes=100_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert Y.shape == (8, 100_000) and float(Y[7, 99_999]) == 1.0 and float(jnp.sum(Y)) == 8.0
    assert peak < 64 * 2**20, peak  # 8 x 1e5 float32 rows = 3.2 MB; an identity matrix would be 40 GB


# 7. One folder, one live run: the second is refused with the folder and the other run named.
def test_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(data, tmp_path):
    X, Y = data
    with FolderLock(tmp_path, "checkpoint_dir"):
        _refused_before_compute(
            lambda cb: bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, callback=cb),
            rf"^checkpoint_dir: .* is in use by another run \(pid {os.getpid()}",
        )
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit
    import socket

    (tmp_path / LOCK_FILE).write_text(f'{{"pid": 2147483646, "host": "{socket.gethostname()}"}}')
    with warnings.catch_warnings(record=True) as caught:  # no flock is held: taken over without a word
        warnings.simplefilter("always")
        bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path)
    assert not [w for w in caught if "lock" in str(w.message)]
    assert (tmp_path / CHECKPOINT_FILE).exists() and not (tmp_path / LOCK_FILE).exists()


# 9. Half precision gets a clear error naming the argument (LAPACK has no float16 kernels).
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_is_refused_with_a_clear_error(data, dtype):
    X, Y = data
    with pytest.raises(ValueError, match=r"^X: dtype .* is not supported; expected float32 or float64"):
        bcd_jax.fit(jnp.asarray(X, dtype), Y, CONFIG)


# 10. A resume never cuts a run short.
def test_resume_with_fewer_sweeps_than_done_is_refused(data, tmp_path):
    X, Y = data
    bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ValueError, match=r"^sweeps: the checkpoint .* already holds 4 sweeps; expected sweeps >= 4"):
        bcd_jax.fit(X, Y, CONFIG.replace(sweeps=2), checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    same = bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, resume=True)  # equal: nothing left to run
    assert same.sweeps_completed == 4 and len(same.history.train_mse) == 5


# Smaller cases.
def test_stale_temporary_files_are_cleaned_and_files_honour_the_umask(data, tmp_path):
    X, Y = data
    stranded = tmp_path / f".{CHECKPOINT_FILE}.abc123.tmp"
    tmp_path.joinpath("keep.tmp").write_text("a user's file")
    stranded.write_bytes(b"half a checkpoint")
    old = os.umask(0o027)
    try:
        bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path)
    finally:
        os.umask(old)
    assert not stranded.exists() and tmp_path.joinpath("keep.tmp").exists()
    assert (tmp_path / CHECKPOINT_FILE).stat().st_mode & 0o777 == 0o640


def test_predict_blames_x_and_refuses_complex_input(data):
    X, Y = data
    params = bcd_jax.init_params(jax.random.key(0), CONFIG, X.shape[1], 1)
    with pytest.raises(ValueError, match=r"^X: has 19 columns; the weights expect d_in = 20"):
        bcd_jax.predict(params, X[:, :-1], CONFIG)
    with pytest.raises(ValueError, match=r"^X: expected a real floating-point array, got dtype complex64"):
        bcd_jax.predict(params, np.asarray(X).astype(np.complex64), CONFIG)


def test_load_config_on_a_binary_file_names_the_path(tmp_path):
    path = tmp_path / "weights.toml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"^path: .*weights.toml.* (is not valid TOML|cannot be read)"):
        bcd_jax.load_config(path)


def test_a_number_too_large_for_the_dtype_is_refused(data):
    X, Y = data
    with pytest.raises(ValueError, match=r"^hyper.gamma: 1e\+300 does not fit in float32"):
        bcd_jax.fit(X, Y, CONFIG.replace(hyper={"gamma": 1e300}))


def test_a_huge_step_diverges_cleanly_without_lapack_noise(data, capfd):
    X, Y = data
    with jax.enable_x64(True):
        X64, Y64 = np.asarray(X, np.float64), np.asarray(Y, np.float64)
        with pytest.warns(bcd_jax.BCDDivergenceWarning, match="diverged at sweep 1"):
            fixed = CONFIG.replace(algorithm=bcd_jax.Akiyama(k_v=3, k_w=3), hyper={"gamma": 1e300})
            result = bcd_jax.fit(X64, Y64, fixed, progress=None)
    assert result.diverged_at == 1
    assert "illegal value" not in capfd.readouterr().err


# Kill a checkpointed run at random moments with SIGKILL; each resume ends bit-identical.
KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    import bcd_jax
    folder, sweeps, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=16, d_in=20)
    config = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=5), algorithm=bcd_jax.Akiyama(k_v=3, k_w=3,
                            step_size="auto"), sweeps=sweeps)
    result = bcd_jax.fit(X, Y, config, key=jax.random.key(7), checkpoint_dir=folder, checkpoint_every=1,
                         resume=resume, progress=None,
                         callback=lambda done, info: print("done", done, flush=True))
    """
)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Waits until ``path`` exists (while ``proc`` runs)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {path} was written"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.005)


def test_sigkill_during_checkpointed_runs_then_resume_is_bit_identical(data, tmp_path, subprocess_env):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = subprocess_env
    sweeps = 120
    X, Y = data
    config = CONFIG.replace(sweeps=sweeps)
    fit = dict(key=jax.random.key(7), checkpoint_every=1, progress=None)
    expected = bcd_jax.fit(X, Y, config, checkpoint_dir=tmp_path / "reference", **fit)

    rng = np.random.default_rng(0)
    folder = tmp_path / "killed"
    kills = 0
    resume = "0"
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(folder), str(sweeps), resume],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        proc.stdout.readline()  # the run is under way ...
        _wait_for(folder / CHECKPOINT_FILE, proc)  # ... and has a checkpoint (written after the callback)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        proc.stdout.close()
        resume = "1"
    assert kills >= 1
    resumed = bcd_jax.fit(X, Y, config, checkpoint_dir=folder, resume=True, **fit)
    assert resumed.sweeps_completed == sweeps
    assert not list(folder.glob(f".{CHECKPOINT_FILE}.*"))  # no temp file survives a completed run
    chex.assert_trees_all_equal(resumed.params, expected.params)
    chex.assert_trees_all_equal(resumed.history, expected.history)


class _CtrlCAfter:
    """A progress meter that presses Ctrl-C (a real SIGINT to this process) once ``sweep`` sweeps are done:
    after that chunk's own checks, so that ``fit`` sees it only between chunks."""

    active = True

    def __init__(self, sweep):
        self.sweep = sweep

    def start(self, total, done=0):
        pass

    def update(self, done, info):
        if done == self.sweep:
            os.kill(os.getpid(), signal.SIGINT)

    def close(self):
        pass


# Reliability round 2: a Ctrl-C seen between two chunks (during a checkpoint write or the progress
# update) still leaves the checkpoint of where the run stopped, marked interrupted; it resumes bit for bit.
@pytest.mark.parametrize("every", [None, 1], ids=["checkpoint at the end", "checkpoint every sweep"])
def test_an_interrupt_between_chunks_is_checkpointed_and_resumes(data, tmp_path, every):
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    X, Y = data
    result = bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, checkpoint_every=every, progress=_CtrlCAfter(2))
    assert result.status == bcd_jax.Status.INTERRUPTED and result.sweeps_completed == 2
    meta = read_checkpoint_meta(tmp_path)
    assert (meta["sweep"], meta["status"], meta["run_id"]) == (2, bcd_jax.Status.INTERRUPTED, result.run_id)
    resumed = bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, checkpoint_every=every, resume=True, progress=None)
    straight = bcd_jax.fit(X, Y, CONFIG, progress=None)
    assert resumed.status == bcd_jax.Status.BUDGET and resumed.run_id == result.run_id
    chex.assert_trees_all_equal(resumed.params, straight.params)


def test_divergence_warning_names_the_callers_line(data):
    X, Y = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bcd_jax.fit(X, Y, CONFIG.replace(hyper={"eta_w1": 1e30}), progress=None)
    divergence = [w for w in caught if issubclass(w.category, bcd_jax.BCDDivergenceWarning)]
    assert divergence and Path(divergence[0].filename).name == Path(__file__).name


# The command line: every user error is one line and exit status 2; a divergence is exit status 3.
TINY_EXPERIMENT = """
[network]
depth = 3
width = 4
activation = ["leaky_relu", "tanh_shortcut"]
[algorithm]
name = "monotone"
k_v = 3
k_w = 3
step_size = "auto"
[run]
sweeps = 3
[data]
n = 16
d_in = 24
teacher_width = 4
"""


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_EXPERIMENT)
    return path


def _cli(argv, capsys):
    from bcd_jax import cli

    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _one_line(err: str) -> str:
    """stderr of a subprocess without ``-X importtime``'s lines; asserts it is one line and no traceback."""
    lines = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# A test-only module for --import: holds the run inside its first compiled chunk of sweeps (dispatched,
# its results not yet read back) and says so, until the test kills the process.
CHUNK_MARKER = textwrap.dedent(
    """
    import importlib
    import time

    _fit = importlib.import_module("bcd_jax.driver.fit")
    _compiled_loop = _fit.compiled_loop

    def _held(*args, **kwargs):
        program = _compiled_loop(*args, **kwargs)

        def run(*a, **k):
            out = program(*a, **k)
            print("in the first chunk", flush=True)
            time.sleep(600)
            return out

        return run

    _fit.compiled_loop = _held
    """
)


def _held_in_its_first_chunk(experiment, out, tmp_path, env, *extra) -> subprocess.Popen:
    """Starts ``bcd-jax run --checkpoint-every 1`` into ``out``; it stops inside its first chunk."""
    (tmp_path / "chunk_marker.py").write_text(CHUNK_MARKER)
    env = dict(env)
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    args = ["--import", "chunk_marker", "--checkpoint-every", "1", "--quiet", *extra]
    return subprocess.Popen(
        cli_command("run", experiment, "--out", out, *args), env=env, stdout=subprocess.PIPE, text=True
    )


# Reliability round 2: the output folder is consistent at every instant a run can die.
def test_cli_runs_killed_before_their_first_checkpoint_lose_nothing(experiment, tmp_path, capsys, subprocess_env):
    old, fresh = tmp_path / "old", tmp_path / "fresh"
    status, _, err = _cli(["run", experiment, "--out", old, "--quiet"], capsys)
    assert status == 0, err
    old_run = read_checkpoint_meta(old / CHECKPOINT_DIR)["run_id"]
    procs = [
        _held_in_its_first_chunk(experiment, old, tmp_path, subprocess_env, "--overwrite"),  # over a finished run
        _held_in_its_first_chunk(experiment, fresh, tmp_path, subprocess_env),  # in an empty folder
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline() == "in the first chunk\n"  # its first checkpoint is one sweep away
            proc.send_signal(signal.SIGKILL)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=60)
            proc.stdout.close()
    assert [proc.returncode for proc in procs] == [-signal.SIGKILL] * 2

    # --overwrite: the old run's views are gone, its checkpoint stays until the new run writes its first.
    meta = read_checkpoint_meta(old / CHECKPOINT_DIR)
    assert (meta["run_id"], meta["sweep"]) == (old_run, 3)
    assert check_folder(old) == [] and not [name for name in VIEW_FILES if (old / name).exists()]
    status, _, err = _cli(["run", "--resume", old, "--set", "sweeps=4", "--quiet"], capsys)  # the old run goes on
    assert status == 0, err
    assert check_folder(old) == [] and json.loads((old / "metrics.json").read_text())["run_id"] == old_run

    # A run killed before its first checkpoint leaves nothing to resume, and nothing in the way.
    assert check_folder(fresh) == [] and not (fresh / CHECKPOINT_DIR / CHECKPOINT_FILE).exists()
    status, _, err = _cli(["run", "--resume", fresh, "--quiet"], capsys)
    assert status == 2 and err.count("\n") == 1 and "holds no checkpoint" in err and "nothing to resume" in err
    status, _, err = _cli(["run", experiment, "--out", fresh, "--quiet"], capsys)  # no --overwrite needed
    assert status == 0, err
    assert check_folder(fresh) == []


# Reliability round 2: Ctrl-C stops a run at a sweep boundary; the run resumes bit for bit. The
# experiment's per-layer activation list (case 4) is resumed here too.
def test_cli_sigint_stops_at_a_checkpoint_and_the_resumed_run_is_bit_identical(
    experiment, tmp_path, capsys, subprocess_env
):
    out, reference = tmp_path / "run", tmp_path / "reference"
    args = ["--checkpoint-every", "1", "--set", "sweeps=80", "--quiet"]
    proc = subprocess.Popen(
        cli_command("run", experiment, "--out", out, *args),
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(out / CHECKPOINT_DIR / CHECKPOINT_FILE, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    line = _one_line(stderr)
    meta = read_checkpoint_meta(out / CHECKPOINT_DIR)
    stopped = meta["sweep"]
    assert 1 <= stopped < 80 and meta["status"] == bcd_jax.Status.INTERRUPTED
    assert line == (
        f"bcd-jax run: interrupted after sweep {stopped}; the checkpoint is in {out / CHECKPOINT_DIR}. "
        f"Continue with: bcd-jax run --resume {out}"
    )
    assert stdout == "" and check_folder(out) == []
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"

    status, _, err = _cli(["run", "--resume", out, "--checkpoint-every", "1", "--quiet"], capsys)
    assert status == 0, err
    status, _, err = _cli(["run", experiment, "--out", reference, *args], capsys)
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sweeps_completed"] == 80 and metrics["status"] == "budget" and metrics["run_id"] == meta["run_id"]
    assert len((out / "diagnostics.jsonl").read_text().splitlines()) == 81 and check_folder(out) == []
    with np.load(out / "params.npz") as resumed, np.load(reference / "params.npz") as straight:
        names = [name for name in resumed.files if name.startswith("W_")]
        assert names == ["W_1", "W_2", "W_3"]
        for name in names:
            np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)


def test_cli_sigint_during_startup_exits_130_and_writes_nothing(experiment, tmp_path, subprocess_env):
    """Ctrl-C while the command imports its libraries (before training): exit status 130, one line."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", *cli_command("run", experiment, "--out", out, "--quiet")[1:]],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = False  # -X importtime names each module as its import ends: wait for numpy's, after the CLI's
    for line in proc.stderr:
        name = line.rsplit("|", 1)[-1].strip()
        started = started or name == "bcd_jax.cli"
        if started and name.split(".")[0] in ("numpy", "jax"):
            break
    assert started, "the command line never started"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert _one_line(stderr) == "bcd-jax run: interrupted before training started; nothing was written"
    assert stdout == ""
    assert not out.exists() or not any(out.iterdir())


# 7. A second command into a folder a live run holds is refused, naming the folder and that run.
def test_cli_refuses_an_output_folder_in_use(experiment, tmp_path, capsys):
    out = tmp_path / "busy"
    hold = "import sys, time; from bcd_jax.io import FolderLock; FolderLock(sys.argv[1]).acquire(); print('held')"
    other = subprocess.Popen(
        [sys.executable, "-c", hold + "; sys.stdout.flush(); time.sleep(60)", out],
        env=cli_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline() == "held\n"  # it holds the lock (a pid in the file alone is no obstacle)
        for extra in ([], ["--overwrite"]):
            status, _, err = _cli(["run", experiment, "--out", out, "--quiet", *extra], capsys)
            assert status == 2
            assert err.count("\n") == 1 and f"is in use by another run (pid {other.pid}" in err and str(out) in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing was written
    finally:
        other.kill()
        other.wait()
        other.stdout.close()


# 8. A diverged run exits with status 3 (after writing its folder).
def test_cli_divergence_exits_3(experiment, tmp_path, capsys):
    status, _, err = _cli(
        [
            "run",
            experiment,
            "--out",
            tmp_path / "d",
            "--quiet",
            "--set",
            "algorithm.step_size=fixed",
            "--set",
            "hyper.eta_w1=1e30",
        ],
        capsys,
    )
    assert status == 3 and "diverged at sweep" in err
    assert (tmp_path / "d" / "diagnostics.jsonl").exists()


@pytest.mark.parametrize(
    "out,message",
    [("file", r"--out: .* is a file; expected a folder"), ("/proc/bcd_jax_out", r"--out: cannot create")],
)
def test_cli_bad_output_folders_are_one_line_errors(experiment, tmp_path, capsys, out, message):
    import re

    if out == "file":
        out = tmp_path / "file"
        out.write_text("mine")
    status, _, err = _cli(["run", experiment, "--out", out, "--quiet"], capsys)
    assert status == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert "Traceback" not in err


def test_cli_load_config_on_a_binary_file_is_one_line(tmp_path, capsys):
    binary = tmp_path / "x.toml"
    binary.write_bytes(bytes(range(256)))
    status, _, err = _cli(["run", binary], capsys)
    assert status == 2 and err.count("\n") == 1 and "x.toml" in err


def test_tqdm_progress_without_tqdm_is_a_clear_error(data):
    X, Y = data
    try:
        import tqdm  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"^progress: 'tqdm' needs the tqdm package"):
            bcd_jax.fit(X, Y, CONFIG, progress="tqdm")
    else:
        assert bcd_jax.fit(X, Y, CONFIG, progress="tqdm").sweeps_completed == CONFIG.sweeps
    with pytest.raises(ValueError, match=r"^progress: expected one of \('auto', 'none', 'text', 'tqdm'\)"):
        bcd_jax.fit(X, Y, CONFIG, progress="fancy")


# Reliability round 2: a run that needs more memory than the machine has is refused before it runs.
MEMORY_EXPERIMENT = """
[network]
depth = 3
width = 30
[algorithm]
name = "monotone"
k_v = 2
k_w = 2
[run]
sweeps = 2
[data]
n = 32
d_in = 100000
teacher_width = 4
"""


def test_a_run_larger_than_memory_is_refused_before_it_runs(tmp_path, capsys, monkeypatch):
    # n = 32, d_in = 100,000 (n <= d_in: the paper's regime). The singular values of its 30 x 100,000
    # W_1 (spectral_diagnostics) took XLA's SVD about 40 GB in 0.2; a thin QR first keeps the whole run
    # small now. The free memory is then pinned below its need, so that every machine refuses it the
    # same way, before running, naming what needs less.
    from bcd_jax.driver import memory

    path = tmp_path / "big.toml"
    path.write_text(MEMORY_EXPERIMENT)
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=32, d_in=100_000, teacher_width=4)
    config = bcd_jax.load_config(path)
    assert config.algorithm.spectral_diagnostics
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 2**20)  # 1 MiB free
    pattern = (
        r"^memory: this run needs about (\d+\.\d) GiB on \w+ but 0\.0 GiB is free \(estimated from the compiled "
        r"program before running\)\. Options that need less: algorithm\.spectral_diagnostics = false"
    )
    callback = _NoCompute()
    with pytest.raises(memory.MemoryNeedError, match=pattern) as refused:
        bcd_jax.fit(X, Y, config, callback=callback, progress=None)
    assert callback.calls == 0 and isinstance(refused.value, ValueError)
    assert float(re.match(pattern, str(refused.value)).group(1)) < 1.0  # was about 40 GB (the SVD)

    out = tmp_path / "run"
    status, stdout, err = _cli(["run", path, "--out", out, "--quiet"], capsys)
    assert status == 4 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("bcd-jax run: error: memory: this run needs about")
    assert "algorithm.spectral_diagnostics = false" in err and "Traceback" not in err
    assert not (out / CHECKPOINT_DIR / CHECKPOINT_FILE).exists()
