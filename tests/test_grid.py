"""Grids: mapped members equal single runs, no recompiles for new values, chunking, groups, divergence, files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.config import config_from_dict
from bcd_jax.driver import grid as driver_grid
from bcd_jax.experiments import DataSpec, Experiment, GridSpec, load_grid, run_grid_file, traced_keys, traced_values

# Tiny problem; step sizes 0.2 keep every member of GRID finite (the output block's step is
# eta_w * lambda_max(V^T V / n), which is large for n = 16). Most tests reuse the same
# structure and member count, so the compiled program is shared between them.
CONFIG = bcd_jax.Config(
    network=bcd_jax.Network(depth=3, width=4),
    algorithm=bcd_jax.Akiyama(k_v=3, k_w=3),
    hyper={"eta_v": 0.2, "eta_w": 0.2, "eta_w1": 0.2},
    sweeps=3,
)
DATA = DataSpec(n=16, d_in=24, teacher_width=4)
EXPERIMENT = Experiment(CONFIG, DATA)
GRID = {"hyper.gamma": [0.1, 0.2], "seed": [0, 1]}


def teacher(data=DATA, dtype=jnp.float32):
    return bcd_jax.teacher_problem(
        jax.random.key(data.seed), n=data.n, d_in=data.d_in, teacher_width=data.teacher_width, dtype=dtype
    )


def member(tree, i):
    return jax.tree.map(lambda a: np.asarray(a)[i], tree)


def assert_runs_close(a: bcd_jax.GridRun, b: bcd_jax.GridRun, rtol):
    chex.assert_trees_all_close(
        (a.blocks, a.initial, a.history), (b.blocks, b.initial, b.history), rtol=rtol, atol=rtol
    )
    chex.assert_trees_all_equal((a.completed, a.status), (b.completed, b.status))


def test_traced_keys_come_from_the_algorithms_hyper():
    assert traced_keys(CONFIG) == (*(f"hyper.{f}" for f in bcd_jax.AkiyamaHyper._fields), "seed")
    assert traced_values(CONFIG.replace(seed=3))["seed"] == 3
    assert traced_values(CONFIG)["hyper.eta_v"] == 0.2


def test_members_equal_separate_fits_in_float64(x64):
    X, Y = teacher(dtype=jnp.float64)
    gammas, seeds = np.array([0.1, 0.3]), np.array([3, 4])
    hyper = bcd_jax.AkiyamaHyper(gammas, 0.2, 0.2, 0.2, 0.0)  # a scalar is shared by every member
    batch = bcd_jax.run_grid(X, Y, CONFIG, hyper, seeds)
    assert batch.blocks.W[0].dtype == jnp.float64 and batch.completed.shape == (2, CONFIG.sweeps)
    assert list(batch.status) == [bcd_jax.Status.BUDGET] * 2
    for i in range(2):
        config = CONFIG.with_overrides({"hyper.gamma": float(gammas[i]), "seed": int(seeds[i])})
        alone = bcd_jax.fit(X, Y, config, key=jax.random.key(int(seeds[i])), progress=None)
        assert np.all(batch.completed[i])
        chex.assert_trees_all_close(member(batch.blocks, i), alone.state.blocks, rtol=1e-10, atol=1e-12)
        merged = jax.tree.map(
            lambda a, h: np.concatenate([np.asarray(a)[None], np.asarray(h)]),
            member(batch.initial, i),
            member(batch.history, i),
        )
        chex.assert_trees_all_close(merged, alone.history, rtol=1e-10, atol=1e-12)


def test_run_grid_checks_its_arguments():
    X, Y = teacher()
    good = bcd_jax.AkiyamaHyper(np.array([0.1, 0.2]), 0.2, 0.2, 0.2, 0.0)
    with pytest.raises(ValueError, match=r"hyper: expected a AkiyamaHyper .* got dict"):
        bcd_jax.run_grid(X, Y, CONFIG, {"gamma": [0.1, 0.2]}, [0, 1])
    with pytest.raises(ValueError, match=r"hyper.gamma: expected shape \(2,\) \(one value per member\)"):
        bcd_jax.run_grid(X, Y, CONFIG, good._replace(gamma=np.ones(3)), [0, 1])
    with pytest.raises(ValueError, match=r"hyper \(member 1\): hyper.gamma: expected a number in \(0, inf"):
        bcd_jax.run_grid(X, Y, CONFIG, good._replace(gamma=np.array([0.1, -1.0])), [0, 1])
    with pytest.raises(ValueError, match="hyper.eta_v: 1e.* does not fit in float32"):
        bcd_jax.run_grid(X, Y, CONFIG, good._replace(eta_v=np.array([0.1, 1e300])), [0, 1])
    with pytest.raises(ValueError, match="seeds: expected a non-empty 1-D array of ints"):
        bcd_jax.run_grid(X, Y, CONFIG, good, [0.5, 1.5])
    with pytest.raises(ValueError, match="seeds: expected ints >= 0, got -1"):
        bcd_jax.run_grid(X, Y, CONFIG, good, [0, -1])


def test_grid_rows_summarise_the_members():
    result = run_grid_file(GridSpec(EXPERIMENT, GRID))
    (group,) = result.groups
    assert group.members == (0, 1, 2, 3) and group.config == CONFIG.structure()
    for m, row, curve in zip(result.spec.members(), result.rows, result.curves):
        config = m.experiment.config
        assert (row["hyper.gamma"], row["seed"], row["hyper.eta_v"]) == (config.hyper.gamma, config.seed, 0.2)
        assert not row["diverged"] and row["sweeps_completed"] == CONFIG.sweeps == len(curve) - 1
        assert row["status"] == "budget"
        assert row["final_train_loss"] == curve[-1] < curve[0] and row["min_train_loss"] == curve.min()
        np.testing.assert_allclose(curve[1:], group.run.history.train_loss[m.index], rtol=0)
    assert result.diverged == []


def test_new_values_do_not_recompile(compile_log):
    run_grid_file(GridSpec(EXPERIMENT, GRID))
    misses = driver_grid.program_cache_info().misses
    before = compile_log.count()
    other = {"hyper.gamma": [0.15, 0.25], "seed": [7, 8]}
    base = CONFIG.with_overrides({"hyper.eta_v": 0.1, "hyper.eta_w1": 0.3})
    result = run_grid_file(GridSpec(Experiment(base, DATA), other))
    assert compile_log.count() == before, compile_log.messages
    assert driver_grid.program_cache_info().misses == misses
    assert result.rows[0]["compile_seconds"] < 0.1
    assert [r["seed"] for r in result.rows] == [7, 8, 7, 8] and result.rows[0]["hyper.eta_v"] == 0.1


def test_batch_size_chunks_give_the_same_numbers():
    spec = GridSpec(EXPERIMENT, GRID)
    default = run_grid_file(spec)  # on CPU: one member at a time, inside one program
    one = run_grid_file(spec, batch_size=1)
    assert_runs_close(default.groups[0].run, one.groups[0].run, 0)
    on_cpu = jax.default_backend() == "cpu"
    for batch_size in (2, 4):  # two vmapped chunks of 2 (lax.map), and all 4 vmapped at once
        if on_cpu and driver_grid.CPU_BATCHED_LAPACK_MAY_HANG:
            # Batched LAPACK calls at once deadlock XLA:CPU's thread pool: refused before compiling.
            message = rf"^batch_size: {batch_size} members at once on CPU would run batched LAPACK calls \(.*svd"
            with pytest.raises(ValueError, match=message) as refused:
                run_grid_file(spec, batch_size=batch_size)
            # No advice that would meet the same error: singular value bounding keeps an SVD.
            assert "spectral_diagnostics" not in str(refused.value)
        else:
            run = run_grid_file(spec, batch_size=batch_size)
            assert_runs_close(default.groups[0].run, run.groups[0].run, 1e-5)
    with pytest.raises(ValueError, match="batch_size: expected None or an int >= 1, got 0"):
        run_grid_file(spec, batch_size=0)


def test_structural_values_make_separate_groups():
    result = run_grid_file(GridSpec(EXPERIMENT, {"algorithm.k_v": [2, 3], **GRID}))
    assert [g.members for g in result.groups] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert [g.config.algorithm.k_v for g in result.groups] == [2, 3]
    assert [r["algorithm.k_v"] for r in result.rows] == [2] * 4 + [3] * 4
    assert [r["group"] for r in result.rows] == [0] * 4 + [1] * 4
    # The k_v = 3 group is the plain grid: the same program, the same numbers.
    plain = run_grid_file(GridSpec(EXPERIMENT, GRID))
    for a, b in zip(result.curves[4:], plain.curves):
        np.testing.assert_array_equal(a, b)


def test_network_and_data_keys_make_groups_too():
    grid = {"network.width": [3, 4], "data.seed": [0, 1], "seed": [0]}
    result = run_grid_file(GridSpec(EXPERIMENT, grid))
    assert len(result.groups) == 4
    assert [(g.config.network.width, g.data.seed) for g in result.groups] == [(3, 0), (3, 1), (4, 0), (4, 1)]
    assert result.rows[1]["data.seed"] == 1 and result.rows[2]["network.width"] == 4


def test_diverging_member_is_flagged_and_others_are_not():
    result = run_grid_file(GridSpec(EXPERIMENT, {"hyper.eta_v": [0.2, 1e20], "seed": [0, 1]}))
    assert result.diverged == [2, 3]
    for row, curve in zip(result.rows, result.curves):
        if row["hyper.eta_v"] == 1e20:
            assert row["diverged"] and row["first_nonfinite_sweep"] == 1 and row["sweeps_completed"] == 0
            assert row["status"] == "diverged"
            assert len(curve) == 1
        else:
            assert not row["diverged"] and row["first_nonfinite_sweep"] is None
            assert np.all(np.isfinite(curve)) and len(curve) == CONFIG.sweeps + 1 and curve[-1] < curve[0]


def test_spec_with_overrides_changes_the_base_and_refuses_grid_keys():
    spec = GridSpec(EXPERIMENT, GRID, name="s")
    changed = spec.with_overrides({"sweeps": 2, "hyper.eta_w": 0.1, "data.n": 12})
    base = changed.experiment
    assert base.config.sweeps == 2 and base.config.hyper.eta_w == 0.1 and base.data.n == 12
    assert changed.grid == spec.grid and changed.name == "s"
    assert all(m.experiment.config.hyper.eta_w == 0.1 for m in changed.members())
    with pytest.raises(ValueError, match=r"hyper.gamma: is varied in \[grid\]"):
        spec.with_overrides({"hyper.gamma": 0.3})


GRID_TOML = """
base = "base.toml"
[run]
sweeps = 3
[hyper]
eta_v = 0.2
eta_w = 0.2
eta_w1 = 0.2
[data]
teacher_width = 4
[grid]
"hyper.gamma" = [0.1, 0.2]
seed = [0, 1]
"""
BASE_TOML = """
[network]
depth = 3
width = 4
[algorithm]
name = "monotone"
k_v = 3
k_w = 3
[run]
sweeps = 50
[data]
n = 16
d_in = 24
[experiment]
compare = ["relu_noskip"]
"""


def test_grid_file_to_output_folder(tmp_path):
    (tmp_path / "base.toml").write_text(BASE_TOML)
    (tmp_path / "s.toml").write_text(GRID_TOML)
    spec = load_grid(tmp_path / "s.toml")
    assert spec.experiment.config == CONFIG and spec.experiment.data == DATA and spec.name == "s"
    assert spec.grid == (("hyper.gamma", (0.1, 0.2)), ("seed", (0, 1)))

    out = tmp_path / "out"
    result = run_grid_file(tmp_path / "s.toml", out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "grid.json", "summary.csv", "summary.jsonl"]
    with open(out / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and table[3]["hyper.gamma"] == "0.2" and table[3]["seed"] == "1"
    assert table[0]["diverged"] == "False" and table[0]["first_nonfinite_sweep"] == ""
    lines = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [line["member"] for line in lines] == [0, 1, 2, 3]
    assert lines[2]["train_loss"] == pytest.approx(list(result.curves[2]))
    saved = json.loads((out / "grid.json").read_text())
    assert saved["grid"] == {"hyper.gamma": [0.1, 0.2], "seed": [0, 1]}
    tables = saved["experiment"]
    assert config_from_dict({k: v for k, v in tables.items() if k not in ("data", "experiment")}) == CONFIG
    assert tables["data"]["n"] == 16
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(FileExistsError, match="out_dir: .* exists and is not empty; pass overwrite=True"):
        run_grid_file(spec, out_dir=out)
    run_grid_file(spec, out_dir=out, overwrite=True)


def test_the_old_sweep_table_is_read_with_a_deprecation_warning(tmp_path):
    (tmp_path / "old.toml").write_text('[sweep]\n"hyper.gamma" = [0.1, 0.2]\n')
    with pytest.warns(DeprecationWarning, match=r"the table \[sweep\] is now called \[grid\]"):
        assert load_grid(tmp_path / "old.toml").grid == (("hyper.gamma", (0.1, 0.2)),)
    (tmp_path / "both.toml").write_text("[sweep]\nseed = [1]\n[grid]\nseed = [2]\n")
    with pytest.raises(ValueError, match=r"both \[grid\] and \[sweep\]"):
        load_grid(tmp_path / "both.toml")


@pytest.mark.parametrize(
    "grid",
    ["[grid.hyper]\ngamma = [0.1, 0.2]\n", "[grid]\nhyper.gamma = [0.1, 0.2]\n"],
    ids=["sub-table", "unquoted-dotted-key"],
)
def test_nested_grid_tables_are_dotted_keys(tmp_path, grid):
    (tmp_path / "s.toml").write_text(grid)
    assert load_grid(tmp_path / "s.toml").grid == (("hyper.gamma", (0.1, 0.2)),)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[grid]\nwidht = [2, 3]\n", r"widht: unknown key; expected 'sweeps', 'seed', 'network.<field>'"),
        ('[grid]\n"network.widht" = [2, 3]\n', r"network.widht: unknown field of \[network\]; expected one of \['de"),
        ("[grid]\ngamma = [0.1]\n", "did you mean 'hyper.gamma'"),
        ('[grid]\n"hyper.gamma" = 0.3\n', r"\[grid\] hyper.gamma: expected a list of values, got float 0.3"),
        ('[grid]\n"hyper.gamma" = []\n', "'hyper.gamma' has no values"),
        ('[grid]\n"hyper.gamma" = [0.1, -1.0]\n', r"hyper.gamma: expected a number in \(0, inf.*, got -1.0"),
        ('[grid]\n"algorithm.k_v" = [-1]\n', "k_v: expected an int >= 0, got -1"),
        ("[grid.data]\nn = [0]\n", "data.n: expected an int >= 1, got 0"),
        ("stepsize = 1\n[grid]\nseed = [1]\n", r"unknown key\(s\) \['stepsize'\]"),
        ('base = "missing.toml"\n[grid]\nseed = [1]\n', "base: no experiment file at"),
        ("[run]\nsweps = 3\n[grid]\nseed = [1]\n", r"sweps: unknown key; expected 'sweeps'"),
        ("[network]\nwidth = 0\n[grid]\nseed = [1]\n", "width: expected an int >= 1, got 0"),
        ("[run]\nseed = 1\n", r"no \[grid\] table \(or an empty one\)"),
        ("[grid]\n", r"no \[grid\] table \(or an empty one\)"),
        ("grid = 3\n", r"\[grid\] must be a table, got int"),
    ],
)
def test_bad_grid_files_name_the_key(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_grid(tmp_path / "bad.toml")


def test_repository_grid_files_load():
    files = sorted((Path(__file__).parent.parent / "configs").glob("grid_*.toml"))
    assert files
    for path in files:
        assert load_grid(path).members()
