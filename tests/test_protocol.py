"""The algorithm protocol: a family written in a test gets the configuration layer and the driver.

``ToyGD`` (tests/toy_family.py, registered as ``"toy_gd"`` by conftest) is plain full-batch
gradient descent on all the weights as ONE block, held in a dict: fields, ``Hyper``, ``init``,
``step`` and ``weights``, nothing else. The common suite (tests/test_families.py) runs it through
everything every family gets (jit, retracing, dtypes, grids, divergence, stopping rules,
checkpoints, interrupts, sharding); this module checks what is particular to adding a family:
registration, configuration by role, TOML files, the registry's errors, and the driver's results
for a family that brings no extras and no objective of its own.
"""

from __future__ import annotations

import json

import chex
import jax
import numpy as np
import pytest
from toy_family import ToyGD, ToyHyper

import bcd_jax
from bcd_jax.config import config_from_dict
from bcd_jax.driver.blocks import block_names, per_sample_mask
from bcd_jax.driver.checkpoint import CHECKPOINT_FILE
from bcd_jax.driver.grid import program_cache_info
from bcd_jax.experiments import DataSpec, Experiment, GridSpec, run_grid_file

from helpers import leaves_equal

NETWORK = bcd_jax.Network(depth=3, width=8)


def toy_config(**overrides) -> bcd_jax.Config:
    config = bcd_jax.Config(network=NETWORK, algorithm="toy_gd", hyper={"learning_rate": 0.1}, sweeps=12)
    return config.with_overrides(overrides) if overrides else config


@pytest.fixture(scope="module")
def data():
    return bcd_jax.teacher_problem(jax.random.key(0), n=32, d_in=10)


# -- registration and configuration ---------------------------------------------------------


def test_the_toy_family_is_the_protocol_and_nothing_else():
    """Registered by its decorator; its name, description and checks come from the protocol's defaults."""
    assert bcd_jax.ALGORITHMS["toy_gd"] is ToyGD and bcd_jax.ALGORITHMS.module_of("toy_gd") == "toy_family"
    own = {k for k in vars(ToyGD) if not k.startswith("__")} - {"_abc_impl"}
    assert own == {"steps", "Hyper", "init", "step", "weights"}, own
    assert ToyGD().name == "toy_gd" and ToyGD().paper == "toy_gd"


def test_registry_and_config_by_role():
    config = toy_config()
    assert isinstance(config.algorithm, ToyGD) and config.algorithm == ToyGD()
    assert config.hyper == ToyHyper(0.1) and type(config.hyper.learning_rate) is float
    assert config.resolved_network.skip is False  # the protocol's default form
    assert bcd_jax.get_algorithm("toy_gd", steps=3) == ToyGD(steps=3)
    assert bcd_jax.get_algorithm({"name": "toy_gd", "steps": 3}) == ToyGD(steps=3)
    assert ToyGD(steps=3).describe() == {"name": "toy_gd", "steps": 3}
    # Dotted overrides reach the new family's structure and numbers.
    changed = config.with_overrides({"algorithm.steps": 2, "hyper.learning_rate": 0.3, "network.width": 4})
    assert changed.algorithm == ToyGD(steps=2) and changed.hyper.learning_rate == 0.3 and changed.network.width == 4
    assert changed.structure() == config.with_overrides({"algorithm.steps": 2, "network.width": 4}).structure()
    # A lossless description, and back.
    assert config_from_dict(json.loads(json.dumps(changed.to_dict()))) == changed
    # Switching family keeps the network; numbers of another kind are dropped.
    akiyama = changed.with_overrides({"algorithm.name": "monotone"})
    assert isinstance(akiyama.algorithm, bcd_jax.Akiyama) and akiyama.hyper == bcd_jax.AkiyamaHyper()
    assert akiyama.network == changed.network
    # Errors name the field (the protocol's default check: every number finite and >= 0).
    with pytest.raises(ValueError, match=r"hyper.learning_rate: expected a number in \[0, inf\), got -1.0"):
        config.with_overrides({"hyper.learning_rate": -1.0})
    with pytest.raises(ValueError, match=r"^hyper: unknown key\(s\) \['gamma'\] for 'toy_gd'"):
        bcd_jax.Config(algorithm="toy_gd", hyper={"gamma": 0.2})
    with pytest.raises(
        ValueError, match=r"^algorithm.k_v: unknown field of \[algorithm\]; expected one of \['name', 'steps'\]"
    ):
        config.with_overrides({"algorithm.k_v": 3})
    with pytest.raises(ValueError, match=r"^algorithm: unknown option\(s\) \['k_v'\] for 'toy_gd'"):
        bcd_jax.get_algorithm("toy_gd", k_v=3)
    with pytest.raises(ValueError, match=r"^hyper: expected ToyHyper"):
        bcd_jax.Config(algorithm="toy_gd", hyper=bcd_jax.AkiyamaHyper())


def test_toml_file_names_the_family(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(
        '[network]\ndepth = 3\nwidth = 8\n\n[algorithm]\nname = "toy_gd"\nsteps = 2\n\n'
        "[hyper]\nlearning_rate = 0.25\n\n[run]\nsweeps = 7\n"
    )
    config = bcd_jax.load_config(path)
    assert config == bcd_jax.Config(network=NETWORK, algorithm=ToyGD(steps=2), hyper=ToyHyper(0.25), sweeps=7)


def test_register_refuses_bad_entries_and_unregistering_removes_a_name():
    with pytest.raises(ValueError, match="^name: algorithm 'toy_gd' is already registered"):
        bcd_jax.algorithms.register("toy_gd", ToyGD)
    with pytest.raises(ValueError, match="^name"):
        bcd_jax.algorithms.register("", ToyGD)
    with pytest.raises(ValueError, match="^factory"):
        bcd_jax.algorithms.register("toy_other", 3)
    bcd_jax.algorithms.register("toy_other", lambda **kw: ToyGD(**kw))
    try:
        assert bcd_jax.Config(algorithm="toy_other").algorithm == ToyGD()
        bcd_jax.algorithms.register("toy_gd", ToyGD, overwrite=True)  # replacing needs overwrite=True
    finally:
        bcd_jax.ALGORITHMS.unregister("toy_other")
    assert bcd_jax.ALGORITHMS["toy_gd"] is ToyGD
    with pytest.raises(ValueError, match=r"^algorithm: unknown algorithm 'toy_other'; expected one of \[.*'toy_gd'"):
        bcd_jax.Config(algorithm="toy_other")


# -- the driver, unchanged, for the new family ----------------------------------------------


def test_fit_decreases_the_loss(data):
    X, Y = data
    config = toy_config()
    result = bcd_jax.fit(X, Y, config, key=jax.random.key(1), progress=None)
    assert result.status == bcd_jax.Status.BUDGET and result.sweeps_completed == 12
    assert isinstance(result.history, bcd_jax.SweepInfo) and list(result.state.blocks) == ["W"]
    assert block_names(result.state.blocks) == ["W_1", "W_2", "W_3"]  # the dict's key, then the layer
    assert per_sample_mask(config.algorithm, config.resolved_network, 32, 10, 1, X.dtype) == (False,) * 3
    loss = np.asarray(result.history.train_loss)
    assert loss.shape == (13,) and np.all(np.diff(loss) < 0), loss  # gradient descent with a small step
    assert loss[-1] < 0.7 * loss[0]
    # No objective of its own: the network's mean loss as written (1/2 ||.||^2), half the reported MSE.
    np.testing.assert_allclose(2 * result.history.objective, loss, rtol=1e-6)
    assert result.history.extras == ()  # no extras
    assert np.all(np.isnan(result.history.train_accuracy)) and np.all(np.isnan(result.history.val_mse))
    assert np.isnan(result.history.movement[0]) and np.all(result.history.movement[1:] > 0)
    # The weights are the network's: predict reproduces the reported training error.
    chex.assert_shape(list(result.params), [(8, 10), (8, 8), (1, 8)])
    pred = bcd_jax.predict(result.params, X, config)
    np.testing.assert_allclose(
        np.mean(np.sum((np.asarray(pred) - np.asarray(Y)) ** 2, -1)), result.train_mse, rtol=1e-5
    )
    assert bcd_jax.evaluate(result.params, X, Y, config)["mse"] == pytest.approx(result.train_mse, rel=1e-5)
    # The same run through the functional API: init_params, init_state, run.
    params = bcd_jax.init_params(jax.random.key(1), config, 10, 1)
    state = bcd_jax.init_state(params, X, Y, config)
    final, initial, history, completed, status = bcd_jax.run(state, X, Y, config)
    assert bool(np.all(completed)) and int(final.sweep) == 12 and int(status) == bcd_jax.Status.RUNNING
    chex.assert_trees_all_close(final.blocks, result.state.blocks, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.train_loss, loss[1:], rtol=1e-5)
    np.testing.assert_allclose(initial.train_loss, loss[0], rtol=1e-6)
    # A validation set is reported by the driver, as for every family.
    validated = bcd_jax.fit(
        X, Y, config.replace(sweeps=2), key=jax.random.key(1), validation=(X[:8], Y[:8]), progress=None
    )
    assert np.all(np.isfinite(validated.history.val_mse))


def test_checkpoint_holds_the_blocks_pytree_and_its_family(data, tmp_path):
    X, Y = data
    config = toy_config()
    key = jax.random.key(3)
    full = bcd_jax.fit(X, Y, config, key=key, checkpoint_dir=tmp_path / "full", checkpoint_every=3)
    bcd_jax.fit(X, Y, config.replace(sweeps=6), key=key, checkpoint_dir=tmp_path / "cut", checkpoint_every=3)
    with np.load(tmp_path / "cut" / CHECKPOINT_FILE) as saved:  # the blocks pytree, leaf by leaf
        assert int(saved["sweep"]) == 6 and sum(name.startswith("block.") for name in saved.files) == 3
    resumed = bcd_jax.fit(X, Y, config, key=key, checkpoint_dir=tmp_path / "cut", checkpoint_every=3, resume=True)
    assert resumed.sweeps_completed == 12 and list(resumed.state.blocks) == ["W"]
    assert leaves_equal(resumed.state.blocks, full.state.blocks) and leaves_equal(resumed.history, full.history)
    np.testing.assert_array_equal(resumed.history.movement, full.history.movement)
    assert resumed.history.train_loss.shape == (13,)
    # Chunking does not change the arithmetic: chunks of one sweep give the same bits as chunks of three.
    plain = bcd_jax.fit(X, Y, config, key=key, progress=None)
    chex.assert_trees_all_equal(plain.state.blocks, full.state.blocks)
    assert leaves_equal(plain.history, full.history)
    # The checkpoint records the family: another learning rate or family is refused.
    with pytest.raises(ValueError, match=r"another config \(hyper.learning_rate: checkpoint 0.1 vs now 0.2"):
        bcd_jax.fit(
            X, Y, config.with_overrides({"hyper.learning_rate": 0.2}), checkpoint_dir=tmp_path / "cut", resume=True
        )
    with pytest.raises(ValueError, match=r"another config .*algorithm.name: checkpoint 'toy_gd' vs now 'monotone'"):
        bcd_jax.fit(
            X, Y, config.with_overrides({"algorithm.name": "monotone"}), checkpoint_dir=tmp_path / "cut", resume=True
        )


def test_grid_over_the_learning_rate_is_one_compiled_program(data):
    X, Y = data
    config = toy_config(**{"sweeps": 5, "network.width": 6})
    rates = np.array([0.05, 0.1, 0.2])
    seeds = np.array([1, 1, 2])
    misses = program_cache_info().misses
    grid = bcd_jax.run_grid(X, Y, config, ToyHyper(rates), seeds, batch_size=3)  # no LAPACK: vmapped on CPU too
    assert program_cache_info().misses == misses + 1  # one program for the three members
    assert isinstance(grid.history, bcd_jax.SweepInfo) and list(grid.blocks) == ["W"]
    chex.assert_shape(grid.history.train_loss, (3, 5))
    assert bool(np.all(grid.completed)) and np.all(grid.status == bcd_jax.Status.BUDGET)
    # A larger rate goes further in the same number of sweeps (same seed: members 0 and 1).
    assert grid.history.train_loss[1, -1] < grid.history.train_loss[0, -1]
    np.testing.assert_array_equal(grid.final("train_loss"), grid.history.train_loss[:, -1])
    # Other values of the traced numbers reuse the program.
    again = bcd_jax.run_grid(X, Y, config, ToyHyper(rates * 0.5), seeds, batch_size=3)
    assert program_cache_info().misses == misses + 1
    assert not np.allclose(again.history.train_loss, grid.history.train_loss)
    # A grid over the learning rate, described by role: one group, one compiled program.
    spec = GridSpec(
        Experiment(config, DataSpec(n=16, d_in=10, teacher_width=4)),
        {"hyper.learning_rate": [0.05, 0.1, 0.2], "seed": [0, 1]},
    )
    result = run_grid_file(spec)
    assert len(result.groups) == 1 and len(result.rows) == 6 and not result.diverged
    assert all(row["final_train_loss"] < row["initial_train_loss"] for row in result.rows)
    with pytest.raises(ValueError, match="learning_rat"):
        GridSpec(Experiment(config), {"hyper.learning_rat": [0.1]})
