"""Long-run operations of fit: checkpoints, interrupts, callbacks, progress, several processes.

That every family resumes bit-identically, stops on an interrupt at a chunk boundary and runs
sharded over 8 host devices as on one is tested for each registered family in
tests/test_families.py.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.driver.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from bcd_jax.driver.progress import TextProgress

from helpers import leaves_equal, python_env

CONFIG = bcd_jax.Config(network=bcd_jax.Network(width=6, depth=4), algorithm=bcd_jax.Akiyama(k_v=4, k_w=4), sweeps=12)


@pytest.fixture(scope="module")
def data():
    return bcd_jax.teacher_problem(jax.random.key(0), n=24, d_in=30)


def test_chunks_do_not_change_the_arithmetic(data, tmp_path):
    """Chunks of three sweeps (checkpoints) give the bits of chunks of one (progress), and of a budget
    cut short and resumed."""
    X, Y = data
    key = jax.random.key(3)
    full = bcd_jax.fit(X, Y, CONFIG, key=key, checkpoint_dir=tmp_path / "full", checkpoint_every=3)
    plain = bcd_jax.fit(X, Y, CONFIG, key=key, progress=None)
    assert leaves_equal(full.state.blocks, plain.state.blocks) and leaves_equal(full.history, plain.history)
    bcd_jax.fit(X, Y, CONFIG.replace(sweeps=5), key=key, checkpoint_dir=tmp_path / "cut", checkpoint_every=3)
    resumed = bcd_jax.fit(X, Y, CONFIG, key=key, checkpoint_dir=tmp_path / "cut", checkpoint_every=3, resume=True)
    assert resumed.sweeps_completed == 12 and resumed.history.train_mse.shape == (13,)
    assert leaves_equal(full.state.blocks, resumed.state.blocks) and leaves_equal(full.history, resumed.history)


def test_checkpoint_is_never_overwritten_without_resume(data, tmp_path):
    X, Y = data
    bcd_jax.fit(X, Y, CONFIG.replace(sweeps=2), checkpoint_dir=tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ValueError, match="checkpoint_dir: .* already holds a checkpoint"):
        bcd_jax.fit(X, Y, CONFIG.replace(sweeps=2), checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temp files left behind


def test_checkpoint_of_another_config_or_data_is_refused(data, tmp_path):
    X, Y = data
    bcd_jax.fit(X, Y, CONFIG.replace(sweeps=2), checkpoint_dir=tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ValueError, match="another config .*gamma"):
        bcd_jax.fit(X, Y, CONFIG.with_overrides({"hyper.gamma": 0.3}), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"another config .*network\.width"):
        bcd_jax.fit(X, Y, CONFIG.with_overrides({"network.width": 5}), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"another config .*algorithm\.name: checkpoint 'monotone' vs now 'relu_skip'"):
        bcd_jax.fit(X, Y, CONFIG.with_overrides({"algorithm.name": "relu_skip"}), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="other training data"):
        bcd_jax.fit(X + 1.0, Y, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before


def test_corrupt_or_missing_checkpoint_is_refused(data, tmp_path):
    X, Y = data
    with pytest.raises(ValueError, match="no checkpoint"):
        bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, resume=True)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable bcd_jax checkpoint"):
        bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == b"not a zip file"


def test_a_keyboard_interrupt_leaves_the_last_checkpoint_usable(data, tmp_path):
    """A KeyboardInterrupt (the second Ctrl-C) ends fit at once; the last checkpoint resumes."""
    X, Y = data

    def interrupt(done, _):
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, checkpoint_every=3, callback=interrupt)
    resumed = bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True)
    full = bcd_jax.fit(X, Y, CONFIG, progress=None)
    assert int(resumed.state.sweep) == 12
    assert leaves_equal(full.state.blocks, resumed.state.blocks)


def test_the_first_sigint_stops_at_the_next_chunk(data, tmp_path):
    """A real SIGINT during a run: fit's handler only records it, the run stops after the chunk with
    status INTERRUPTED and its checkpoint, and the handler that was installed before is back."""
    X, Y = data
    before = signal.getsignal(signal.SIGINT)
    seen = []

    def ctrl_c(done, _):
        seen.append(done)
        if done == 3:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, checkpoint_every=3, callback=ctrl_c)
    assert stopped.status == bcd_jax.Status.INTERRUPTED and stopped.sweeps_completed == 3 and seen == [3]
    assert signal.getsignal(signal.SIGINT) is before
    assert read_checkpoint_meta(tmp_path)["status"] == bcd_jax.Status.INTERRUPTED
    resumed = bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True)
    assert resumed.status == bcd_jax.Status.BUDGET and resumed.sweeps_completed == 12


def test_callback_receives_every_chunk(data):
    X, Y = data
    seen = []
    result = bcd_jax.fit(X, Y, CONFIG, callback=lambda done, diag: seen.append((done, diag.train_mse.copy())))
    assert [d for d, _ in seen] == list(range(1, 13))  # 12 sweeps, 20 updates at most -> chunks of 1
    np.testing.assert_array_equal(np.concatenate([m for _, m in seen]), result.history.train_mse[1:])


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line(data, monkeypatch):
    X, Y = data
    stream = io.StringIO()
    bcd_jax.fit(X, Y, CONFIG, progress=TextProgress(stream=stream, delay=0.0))
    text = stream.getvalue()
    assert "sweep 12/12" in text and "train loss" in text and text.endswith("\n"), text

    monkeypatch.setattr(TextProgress.__init__, "__defaults__", (None, 0.0, 24))  # show at once
    # None: nothing, even on a terminal; "auto": a line on a terminal only; "text": always.
    for progress, stderr, expect in (
        (None, _Terminal, False),
        ("none", _Terminal, False),
        ("auto", _Terminal, True),
        ("auto", io.StringIO, False),
        ("text", io.StringIO, True),
    ):
        stream = stderr()
        monkeypatch.setattr(sys, "stderr", stream)
        bcd_jax.fit(X, Y, CONFIG, progress=progress)
        text = stream.getvalue()
        assert ("sweep 12/12" in text and "train loss" in text) is expect, (progress, text)


def test_a_user_progress_meter_sees_every_chunk(data):
    X, Y = data

    class Meter:
        active = True

        def __init__(self):
            self.calls = []

        def start(self, total, done=0):
            self.calls.append(("start", total, done))

        def update(self, done, info):
            self.calls.append(("update", done, float(info.train_loss)))

        def close(self):
            self.calls.append(("close",))

    meter = Meter()
    result = bcd_jax.fit(X, Y, CONFIG, progress=meter)
    assert meter.calls[0] == ("start", 12, 0) and meter.calls[-1] == ("close",)
    updates = [c for c in meter.calls if c[0] == "update"]
    assert [c[1] for c in updates] == list(range(1, 13))  # an active meter: chunks of one sweep
    assert updates[-1][2] == pytest.approx(result.train_loss)


def test_bad_operation_options(data, tmp_path):
    X, Y = data
    with pytest.raises(ValueError, match="checkpoint_every"):
        bcd_jax.fit(X, Y, CONFIG, checkpoint_dir=tmp_path, checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        bcd_jax.fit(X, Y, CONFIG, checkpoint_every=2)
    with pytest.raises(ValueError, match="resume"):
        bcd_jax.fit(X, Y, CONFIG, resume=True)
    with pytest.raises(ValueError, match="callback"):
        bcd_jax.fit(X, Y, CONFIG, callback=3)
    with pytest.raises(ValueError, match="mesh"):
        bcd_jax.fit(X, Y, CONFIG, mesh="cpu")
    with pytest.raises(ValueError, match="^progress"):
        bcd_jax.fit(X, Y, CONFIG, progress="loud")
    with pytest.raises(ValueError, match="^config"):
        bcd_jax.fit(X, Y, CONFIG.to_dict())


def _never_called(done, info):
    raise AssertionError("a sweep ran although the config was refused")


def test_unrecordable_activation_is_refused_before_training(data, tmp_path):
    """A bare lambda has no registry name: a checkpoint could not tell it from another function."""
    X, Y = data
    config = CONFIG.with_overrides(
        {
            "network.activation": lambda z: z + 0.5 * jnp.tanh(z),
            "sweeps": 2,
            "hyper.eta_v": 0.2,
            "hyper.eta_w": 0.1,
            "hyper.eta_w1": 0.3,
        }
    )
    with pytest.raises(ValueError, match=r"^activation: the callable .* cannot be recorded losslessly"):
        bcd_jax.fit(X, Y, config, checkpoint_dir=tmp_path / "c", callback=_never_called)
    assert not (tmp_path / "c" / CHECKPOINT_FILE).exists()
    assert not list((tmp_path / "c").glob(".*"))  # no lock or temporary file left behind
    per_layer = config.with_overrides({"network.activation": ["leaky_relu", lambda z: z, "leaky_relu"]})
    with pytest.raises(ValueError, match=r"^activation: the callable"):
        bcd_jax.fit(X, Y, per_layer, checkpoint_dir=tmp_path / "c", callback=_never_called)
    assert bcd_jax.fit(X, Y, config, progress=None).sweeps_completed == 2  # without a checkpoint it trains


def test_per_layer_list_with_a_registered_activation_resumes(data, tmp_path):
    X, Y = data
    mine = bcd_jax.register_activation(
        bcd_jax.Activation("test_operations_shortcut", lambda z: z + 0.5 * jnp.tanh(z), alpha=1.0, lipschitz=1.5),
        overwrite=True,
    )
    try:
        config = CONFIG.with_overrides({"network.activation": ["leaky_relu", mine, "tanh_shortcut"], "sweeps": 4})
        assert config.to_dict()["network"]["activation"] == ["leaky_relu", "test_operations_shortcut", "tanh_shortcut"]
        full = bcd_jax.fit(X, Y, config, key=jax.random.key(2), progress=None)
        bcd_jax.fit(X, Y, config.replace(sweeps=2), key=jax.random.key(2), checkpoint_dir=tmp_path)
        resumed = bcd_jax.fit(X, Y, config, key=jax.random.key(2), checkpoint_dir=tmp_path, resume=True)
        assert leaves_equal(full.state.blocks, resumed.state.blocks)
        assert leaves_equal(full.history, resumed.history)
    finally:
        bcd_jax.ACTIVATIONS.unregister("test_operations_shortcut")


MULTI_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import numpy as np
    import bcd_jax
    mesh = jax.make_mesh((jax.device_count(),), ("samples",))
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=32, d_in=40)
    X, Y = np.asarray(X), np.asarray(Y)
    mine = slice(16 * pid, 16 * (pid + 1))  # each process feeds only its own samples
    cfg = bcd_jax.Config(network=bcd_jax.Network(width=6, depth=3), algorithm=bcd_jax.Akiyama(k_v=3, k_w=3), sweeps=4)
    result = bcd_jax.fit(X[mine], Y[mine], cfg, key=jax.random.key(1), progress=None, mesh=mesh)
    flat = [np.asarray(result.history.train_mse)] + [np.asarray(w).ravel() for w in result.params]
    np.save(sys.argv[3], np.concatenate(flat))
    """
)


def test_two_processes_equal_one(data, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    script = tmp_path / "worker.py"
    script.write_text(MULTI_PROCESS_SCRIPT)
    env = python_env(JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(pid), port, str(tmp_path / f"out{pid}.npy")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)

    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=32, d_in=40)
    cfg = bcd_jax.Config(network=bcd_jax.Network(width=6, depth=3), algorithm=bcd_jax.Akiyama(k_v=3, k_w=3), sweeps=4)
    single = bcd_jax.fit(X, Y, cfg, key=jax.random.key(1), progress=None)
    expected = np.concatenate([single.history.train_mse] + [np.asarray(w).ravel() for w in single.params])
    for pid in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"out{pid}.npy"), expected, rtol=1e-5, atol=1e-6)


VMAP_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    import bcd_jax
    config = bcd_jax.Config(algorithm=bcd_jax.Akiyama(spectral_diagnostics=False))  # the paper's Figure 1 sizes
    X, Y = bcd_jax.teacher_problem(jax.random.key(0))
    def train(key):
        params = bcd_jax.init_params(key, config, 600, 1)
        return bcd_jax.run(bcd_jax.init_state(params, X, Y, config), X, Y, config, num_sweeps=3).history.train_mse
    mse = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(1), 4))
    assert mse.shape == (4, 3) and bool(np.all(np.asarray(mse)[:, -1] < 0.05)), mse
    print("ok")
    """
)


def test_vmap_of_paper_size_runs_completes_on_cpu():
    # jaxlib 0.10's batched LAPACK calls inside the compiled loop can deadlock XLA:CPU;
    # without spectral diagnostics the vmapped loop has none, so this must finish.
    proc = subprocess.run(
        [sys.executable, "-c", VMAP_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        env=python_env(JAX_PLATFORMS="cpu"),
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


BATCHED_LAPACK_SCRIPT = textwrap.dedent(
    """
    import dataclasses
    from typing import ClassVar, NamedTuple

    import jax, jax.numpy as jnp, numpy as np
    import bcd_jax


    class Hyper(NamedTuple):
        rate: float = 0.1


    @bcd_jax.algorithms.register("per_sample_solves")
    @dataclasses.dataclass(frozen=True)
    class PerSampleSolves(bcd_jax.Algorithm):
        '''A family whose sweep solves one small system per sample (a batched LU on CPU).'''

        Hyper: ClassVar[type] = Hyper

        def init(self, weights, data, network):
            return {"W": tuple(weights), "V": data.X}

        def step(self, blocks, data, cache, hyper, network):
            system = jnp.eye(data.X.shape[1]) * 2.0 + 0.1 * data.X[:, :, None] * data.X[:, None, :]
            return {"W": blocks["W"], "V": jnp.linalg.solve(system, blocks["V"][..., None])[..., 0]}, ()

        def weights(self, blocks):
            return blocks["W"]


    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=16, d_in=3)
    config = bcd_jax.Config(network=bcd_jax.Network(depth=2, width=4), algorithm="per_sample_solves", sweeps=2)
    try:
        bcd_jax.fit(X, Y, config, mesh=jax.make_mesh((2,), ("samples",)), progress=None)
    except ValueError as exc:
        print("refused:", exc)
    else:
        print("ran")
    """
)


def test_a_sharded_sweep_with_batched_lapack_calls_is_refused_on_cpu_devices(tmp_path):
    """Two CPU devices each running a batched LU at once hang XLA's thread pool (jaxlib < 0.11):
    fit refuses such a sweep before compiling instead of hanging (the 0.2 whole-objective exact sweep
    did, every time; its sweep has no batched factorisation left and runs sharded in test_families)."""
    from bcd_jax.driver.grid import CPU_BATCHED_LAPACK_MAY_HANG

    if not CPU_BATCHED_LAPACK_MAY_HANG:
        pytest.skip("jaxlib >= 0.11 runs batched LAPACK calls concurrently")
    env = python_env(XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0")
    out = subprocess.run(
        [sys.executable, "-c", BATCHED_LAPACK_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: mesh: 'per_sample_solves'") and "lu" in out.stdout, out.stdout
