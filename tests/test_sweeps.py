"""Sweeps: vmapped members equal single runs, no recompiles for new values, chunking, groups, divergence, files."""

from __future__ import annotations

import csv
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax import sweeps
from bcd_jax.experiments import DataSpec
from helpers import assert_close

# Tiny problem; step sizes 0.2 keep every member of GRID finite (the output block's step is
# eta_w * lambda_max(V^T V / n), which is large for n = 16). Most tests reuse the same
# structure and member count, so the compiled program is shared between them.
CONFIG = bcd_jax.Config(depth=3, width=4, k_v=3, k_w=3, sweeps=3, eta_v=0.2, eta_w=0.2, eta_w1=0.2)
DATA = DataSpec(n=16, d_in=24, teacher_width=4)
GRID = {"gamma": [0.1, 0.2], "seed": [0, 1]}


def teacher(data=DATA, dtype=jnp.float32):
    return bcd_jax.teacher_problem(jax.random.key(data.seed), n=data.n, d_in=data.d_in,
                                   teacher_width=data.teacher_width, dtype=dtype)


def test_members_equal_separate_fits_in_float64(x64):
    X, Y = teacher(dtype=jnp.float64)
    gammas, seeds = np.array([0.1, 0.3]), np.array([3, 4])
    steps = bcd_jax.StepSizes(gammas, np.full(2, 0.2), np.full(2, 0.2), np.full(2, 0.2))
    batch = sweeps.run_batch(X, Y, CONFIG, steps, seeds)
    assert batch.state.weights[0].dtype == jnp.float64 and batch.completed.shape == (2, CONFIG.sweeps)
    for i in range(2):
        config = CONFIG.replace(gamma=float(gammas[i]), seed=int(seeds[i]))
        alone = bcd_jax.fit(X, Y, config, key=jax.random.key(int(seeds[i])), quiet=True)
        assert np.all(batch.completed[i])
        for a, b in zip(jax.tree.leaves(batch.state), jax.tree.leaves(alone.state)):
            assert_close(a[i], b, 1e-10)
        merged = jax.tree.map(lambda a, h: np.concatenate([np.asarray(a[i])[None], np.asarray(h[i])]),
                              batch.initial, batch.history)
        for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(alone.history)):
            assert_close(a, b, 1e-10)


def test_sweep_rows_summarise_the_members():
    result = sweeps.run_sweep(sweeps.SweepSpec(CONFIG, DATA, GRID))
    (group,) = result.groups
    assert group.members == (0, 1, 2, 3) and group.config == bcd_jax.Config(depth=3, width=4, k_v=3, k_w=3, sweeps=3)
    for member, row, curve in zip(result.spec.members(), result.rows, result.curves):
        assert (row["gamma"], row["seed"], row["eta_v"]) == (member.config.gamma, member.config.seed, 0.2)
        assert not row["diverged"] and row["sweeps_completed"] == CONFIG.sweeps == len(curve) - 1
        assert row["final_train_mse"] == curve[-1] < curve[0] and row["min_train_mse"] == curve.min()
        np.testing.assert_allclose(curve[1:], group.batch.history.train_mse[member.index], rtol=0)


def test_new_values_do_not_recompile(compile_log):
    sweeps.run_sweep(sweeps.SweepSpec(CONFIG, DATA, GRID))
    misses = sweeps._compiled.cache_info().misses
    before = compile_log.count()
    other = {"gamma": [0.15, 0.25], "seed": [7, 8]}
    result = sweeps.run_sweep(sweeps.SweepSpec(CONFIG.replace(eta_v=0.1, eta_w1=0.3), DATA, other))
    assert compile_log.count() == before, compile_log.messages
    assert sweeps._compiled.cache_info().misses == misses
    assert result.rows[0]["compile_seconds"] < 0.1
    assert [r["seed"] for r in result.rows] == [7, 8, 7, 8] and result.rows[0]["eta_v"] == 0.1


def test_batch_size_chunks_give_the_same_numbers():
    spec = sweeps.SweepSpec(CONFIG, DATA, GRID)
    default = sweeps.run_sweep(spec)  # on CPU: one member at a time, inside one program
    runs = [default]
    for batch_size in (2, 4):  # two vmapped chunks of 2 (lax.map), and all 4 vmapped at once
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.append(sweeps.run_sweep(spec, batch_size=batch_size))
        on_cpu = jax.default_backend() == "cpu"
        assert any("can deadlock XLA:CPU's thread pool" in str(w.message) for w in caught) == (
            on_cpu and sweeps._CPU_BATCHED_LAPACK_MAY_HANG)
    for run in runs[1:]:
        for a, b in zip(jax.tree.leaves(default.groups[0].batch[:4]), jax.tree.leaves(run.groups[0].batch[:4])):
            assert_close(a, b, 1e-5)
    with pytest.raises(ValueError, match="batch_size: expected None or an int >= 1, got 0"):
        sweeps.run_sweep(spec, batch_size=0)


def test_shape_changing_values_make_separate_groups():
    result = sweeps.run_sweep(sweeps.SweepSpec(CONFIG, DATA, {"k_v": [2, 3], **GRID}))
    assert [g.members for g in result.groups] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert [g.config.k_v for g in result.groups] == [2, 3]
    assert [r["k_v"] for r in result.rows] == [2] * 4 + [3] * 4
    assert [r["group"] for r in result.rows] == [0] * 4 + [1] * 4
    # The k_v = 3 group is the plain sweep: same numbers.
    plain = sweeps.run_sweep(sweeps.SweepSpec(CONFIG, DATA, GRID))
    for a, b in zip(result.curves[4:], plain.curves):
        np.testing.assert_array_equal(a, b)


def test_diverging_member_is_flagged_and_others_are_not():
    result = sweeps.run_sweep(sweeps.SweepSpec(CONFIG, DATA, {"eta_v": [0.2, 1e20], "seed": [0, 1]}))
    for row, curve in zip(result.rows, result.curves):
        if row["eta_v"] == 1e20:
            assert row["diverged"] and row["first_nonfinite_sweep"] == 1 and row["sweeps_completed"] == 0
            assert len(curve) == 1
        else:
            assert not row["diverged"] and row["first_nonfinite_sweep"] is None
            assert np.all(np.isfinite(curve)) and len(curve) == CONFIG.sweeps + 1 and curve[-1] < curve[0]


SWEEP_TOML = """
base = "base.toml"
sweeps = 3
eta_v = 0.2
eta_w = 0.2
eta_w1 = 0.2
[data]
teacher_width = 4
[sweep]
gamma = [0.1, 0.2]
seed = [0, 1]
"""
BASE_TOML = """
depth = 3
width = 4
k_v = 3
k_w = 3
sweeps = 50
[data]
n = 16
d_in = 24
[experiment]
compare = ["relu_noskip"]
"""


def test_sweep_file_to_output_folder(tmp_path):
    (tmp_path / "base.toml").write_text(BASE_TOML)
    (tmp_path / "s.toml").write_text(SWEEP_TOML)
    spec = sweeps.load_sweep(tmp_path / "s.toml")
    assert spec.config == CONFIG and spec.data == DATA and spec.name == "s"
    assert spec.grid == (("gamma", (0.1, 0.2)), ("seed", (0, 1)))

    out = tmp_path / "out"
    result = sweeps.run_sweep(tmp_path / "s.toml", out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "summary.jsonl", "sweep.json", "train_mse.png"]
    with open(out / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and table[3]["gamma"] == "0.2" and table[3]["seed"] == "1"
    assert table[0]["diverged"] == "False" and table[0]["first_nonfinite_sweep"] == ""
    lines = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [line["member"] for line in lines] == [0, 1, 2, 3]
    assert lines[2]["train_mse"] == pytest.approx(list(result.curves[2]))
    assert json.loads((out / "sweep.json").read_text())["grid"] == {"gamma": [0.1, 0.2], "seed": [0, 1]}
    assert (out / "train_mse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(FileExistsError, match="out_dir: .* exists and is not empty; pass overwrite=True"):
        sweeps.run_sweep(spec, out_dir=out)
    sweeps.run_sweep(spec, out_dir=out, overwrite=True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[sweep]\nwidht = [2, 3]\n", "unknown key 'widht'"),
        ("[sweep]\ngamma = 0.3\n", r"\[sweep\] gamma: expected a list of values, got float 0.3"),
        ("[sweep]\ngamma = []\n", "'gamma' has no values"),
        ("[sweep]\ngamma = [0.1, -1.0]\n", "gamma: expected a finite number > 0, got -1.0"),
        ("[sweep.data]\nn = [0]\n", r"data.n: expected an int >= 1, got 0"),
        ("stepsize = 1\n", r"unknown key\(s\) \['stepsize'\]"),
        ('base = "missing.toml"\n', "base: no experiment file at"),
    ],
)
def test_bad_sweep_files_name_the_key(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ValueError, match=message):
        sweeps.load_sweep(tmp_path / "bad.toml")


def test_repository_sweep_files_load():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("sweep_*.toml"))
    assert files
    for path in files:
        assert sweeps.load_sweep(path).members()


def test_measure_throughput_returns_two_times():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batched, sequential = sweeps.measure_throughput(CONFIG, DATA, members=4, sweeps=CONFIG.sweeps)
    assert batched > 0 and sequential > 0
