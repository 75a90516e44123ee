"""The algorithm protocol: a new family, registered in a test, gets the whole driver.

``ToyGD`` is plain full-batch gradient descent on all the weights as ONE block (named
``"W"``). Registered as ``"toy_gd"`` for this module only, it runs through ``fit`` (the loss
falls), checkpoints and resumes bit-identically, shards its samples over 8 host devices (in a
subprocess that defines and registers the family itself), freezes on divergence with a warning
that names its block, and sweeps over its learning rate in one compiled program. A last set
of tests checks the protocol's contract for every registered family.
"""

from __future__ import annotations

import json
import textwrap
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.algorithms import REQUIRED_INFO_FIELDS
from bcd_jax.config import config_from_dict
from bcd_jax.driver.checkpoint import CHECKPOINT_FILE

from helpers import run_on_host_devices

# The family's source: executed here and, verbatim, in the sharded subprocess.
TOY_FAMILY = textwrap.dedent(
    '''
    import dataclasses
    from typing import Any, ClassVar, NamedTuple

    import jax
    import jax.numpy as jnp
    from jax import lax

    from bcd_jax.algorithms import Algorithm, network_metrics
    from bcd_jax.network import gaussian_weights, network_output
    from bcd_jax.validation import check_float, check_int


    class ToyHyper(NamedTuple):
        learning_rate: Any = 0.1


    class ToyBlocks(NamedTuple):
        weights: tuple


    class ToyInfo(NamedTuple):
        objective: Any
        train_loss: Any
        train_mse: Any
        train_accuracy: Any
        val_loss: Any
        val_mse: Any
        val_accuracy: Any
        grad_norm: Any


    @dataclasses.dataclass(frozen=True)
    class ToyGD(Algorithm):
        """Full-batch gradient descent on (W_1, ..., W_L), all of them ONE block named "W"."""

        steps: int = 1  # gradient steps per sweep (structure)
        Hyper: ClassVar[type] = ToyHyper

        def __post_init__(self):
            object.__setattr__(self, "steps", check_int("steps", self.steps, low=1))

        @property
        def name(self):
            return "toy_gd"

        def check_hyper(self, hyper):
            return ToyHyper(check_float("hyper.learning_rate", hyper.learning_rate, low=0, low_open=True))

        def init_weights(self, key, network, d_in, d_out, dtype):
            return tuple(gaussian_weights(key, network.layer_shapes(d_in, d_out), dtype))

        def init(self, weights, data, network):
            return ToyBlocks(tuple(weights))

        def _loss(self, weights, data, network):
            return jnp.mean(jax.vmap(network.loss_fn)(network_output(weights, data.X, network), data.Y))

        def step(self, blocks, data, cache, hyper, network):
            def body(_, weights):
                grad = jax.grad(self._loss)(weights, data, network)
                return tuple(w - hyper.learning_rate * g for w, g in zip(weights, grad))

            new = ToyBlocks(lax.fori_loop(0, self.steps, body, blocks.weights))
            return new, self.info(new, data, hyper, network)

        def info(self, blocks, data, hyper, network):
            metrics = network_metrics(blocks.weights, data, network)
            grad = jax.grad(self._loss)(blocks.weights, data, network)
            return ToyInfo(metrics.train_loss, *metrics, jnp.sqrt(sum(jnp.sum(g * g) for g in grad)))

        def weights(self, blocks):
            return blocks.weights

        def block_arrays(self, blocks):
            return {"W": jnp.concatenate([w.ravel() for w in blocks.weights])}
    '''
)
_toy = {"__name__": __name__}
exec(compile(TOY_FAMILY, "<toy family>", "exec", dont_inherit=True), _toy)  # noqa: S102 - the test's own source
ToyGD, ToyHyper, ToyBlocks, ToyInfo = (_toy[k] for k in ("ToyGD", "ToyHyper", "ToyBlocks", "ToyInfo"))

NETWORK = bcd_jax.Network(depth=3, width=8)


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    """``"toy_gd"`` is in the registry for this module's tests only."""
    bcd_jax.algorithms.register("toy_gd", ToyGD)
    try:
        yield
    finally:
        bcd_jax.ALGORITHMS.pop("toy_gd", None)


# "toy_gd" exists only while the fixture holds it: configs are built inside the tests.
def toy_config(**overrides) -> bcd_jax.Config:
    config = bcd_jax.Config(network=NETWORK, algorithm="toy_gd", hyper={"learning_rate": 0.1}, sweeps=12)
    return config.with_overrides(overrides) if overrides else config


@pytest.fixture(scope="module")
def data():
    return bcd_jax.teacher_problem(jax.random.key(0), n=32, d_in=10)


def _leaves_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# -- registration and configuration ---------------------------------------------------------


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
    # Errors name the field.
    with pytest.raises(ValueError, match=r"^hyper.learning_rate"):
        config.with_overrides({"hyper.learning_rate": -1.0})
    with pytest.raises(ValueError, match=r"^hyper: unknown key\(s\) \['gamma'\] for 'toy_gd'"):
        bcd_jax.Config(algorithm="toy_gd", hyper={"gamma": 0.2})
    with pytest.raises(ValueError, match=r"^steps"):
        config.with_overrides({"algorithm.steps": 0})
    with pytest.raises(ValueError, match=r"^algorithm: bad option for 'toy_gd'"):
        config.with_overrides({"algorithm.k_v": 3})
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
    with pytest.raises(ValueError, match="^name: 'toy_gd' is already registered"):
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
        del bcd_jax.ALGORITHMS["toy_other"]
    with pytest.raises(ValueError, match="^algorithm: unknown name 'toy_other'"):
        bcd_jax.Config(algorithm="toy_other")


# -- the driver, unchanged, for the new family ----------------------------------------------


def test_fit_decreases_the_loss(data):
    X, Y = data
    config = toy_config()
    result = bcd_jax.fit(X, Y, config, key=jax.random.key(1), progress=None)
    assert result.diverged_at is None and result.sweeps_completed == 12
    assert isinstance(result.history, ToyInfo) and isinstance(result.state.blocks, ToyBlocks)
    loss = np.asarray(result.history.train_loss)
    assert loss.shape == (13,) and np.all(np.diff(loss) < 0), loss  # gradient descent with a small step
    assert loss[-1] < 0.7 * loss[0]
    np.testing.assert_allclose(result.history.objective, loss)
    assert np.all(np.isnan(result.history.train_accuracy)) and np.all(np.isnan(result.history.val_mse))
    # The weights are the network's: predict reproduces the reported training error.
    chex.assert_shape(list(result.params), [(8, 10), (8, 8), (1, 8)])
    pred = bcd_jax.predict(result.params, X, config)
    np.testing.assert_allclose(
        np.mean(np.sum((np.asarray(pred) - np.asarray(Y)) ** 2, -1)), result.train_mse, rtol=1e-5
    )
    # The same run through the functional API: init_params, init_state, run.
    params = bcd_jax.init_params(jax.random.key(1), config, 10, 1)
    state = bcd_jax.init_state(params, X, Y, config)
    final, initial, history, completed = bcd_jax.run(state, X, Y, config)
    assert bool(np.all(completed)) and int(final.sweep) == 12
    chex.assert_trees_all_close(final.blocks, result.state.blocks, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.train_loss, loss[1:], rtol=1e-5)
    # A validation set is reported through network_metrics, as for every family.
    validated = bcd_jax.fit(
        X, Y, config.replace(sweeps=2), key=jax.random.key(1), validation=(X[:8], Y[:8]), progress=None
    )
    assert np.all(np.isfinite(validated.history.val_mse))


def test_new_learning_rates_do_not_recompile(data, compile_log):
    X, Y = data
    config = toy_config(**{"algorithm.steps": 3, "sweeps": 4})  # a structure no other test compiles
    first = bcd_jax.fit(X, Y, config, key=jax.random.key(1), progress=None)
    before = compile_log.count()
    assert before >= 1
    second = bcd_jax.fit(
        X, Y, config.with_overrides({"hyper.learning_rate": 0.05}), key=jax.random.key(1), progress=None
    )
    assert compile_log.count() == before, compile_log.messages
    assert not np.allclose(np.asarray(first.params[0]), np.asarray(second.params[0]))


def test_checkpoint_and_resume_are_bit_identical(data, tmp_path):
    X, Y = data
    config = toy_config()
    key = jax.random.key(3)
    full = bcd_jax.fit(X, Y, config, key=key, checkpoint_dir=tmp_path / "full", checkpoint_every=3)
    bcd_jax.fit(X, Y, config.replace(sweeps=6), key=key, checkpoint_dir=tmp_path / "cut", checkpoint_every=3)
    with np.load(tmp_path / "cut" / CHECKPOINT_FILE) as saved:  # the blocks pytree, leaf by leaf
        assert int(saved["sweep"]) == 6 and sum(name.startswith("block.") for name in saved.files) == 3
    resumed = bcd_jax.fit(X, Y, config, key=key, checkpoint_dir=tmp_path / "cut", checkpoint_every=3, resume=True)
    assert resumed.sweeps_completed == 12
    assert isinstance(resumed.state.blocks, ToyBlocks)
    chex.assert_trees_all_equal(resumed.state.blocks, full.state.blocks)
    assert _leaves_equal(resumed.history, full.history)
    np.testing.assert_array_equal(resumed.movement, full.movement) and resumed.history.train_loss.shape == (13,)
    # Chunking does not change the arithmetic: one compiled call gives the same bits.
    plain = bcd_jax.fit(X, Y, config, key=key, progress=None)
    chex.assert_trees_all_equal(plain.state.blocks, full.state.blocks)
    # The checkpoint records the family: another learning rate or family is refused.
    with pytest.raises(ValueError, match=r"another config \(hyper.learning_rate: checkpoint 0.1 vs now 0.2"):
        bcd_jax.fit(
            X, Y, config.with_overrides({"hyper.learning_rate": 0.2}), checkpoint_dir=tmp_path / "cut", resume=True
        )
    with pytest.raises(ValueError, match=r"another config .*algorithm.name: checkpoint 'toy_gd' vs now 'monotone'"):
        bcd_jax.fit(
            X, Y, config.with_overrides({"algorithm.name": "monotone"}), checkpoint_dir=tmp_path / "cut", resume=True
        )


def test_divergence_freezes_and_names_the_block(data):
    X, Y = data
    # Two gradient steps per sweep with a huge rate: the weights overflow during sweep 2.
    config = toy_config(**{"algorithm.steps": 2, "hyper.learning_rate": 30.0, "sweeps": 6})
    with pytest.warns(bcd_jax.BCDDivergenceWarning) as record:
        result = bcd_jax.fit(X, Y, config, key=jax.random.key(1), progress=None)
    messages = [str(w.message) for w in record if issubclass(w.category, bcd_jax.BCDDivergenceWarning)]
    k = result.diverged_at
    assert k == 2 and len(messages) == 1, messages
    assert f"BCD diverged at sweep {k}: non-finite values in W," in messages[0]
    assert result.sweeps_completed == k - 1 == int(result.state.sweep)
    chex.assert_tree_all_finite(result.state.blocks)
    assert result.history.train_loss.shape == (k,) and np.all(np.isfinite(result.history.train_loss))
    # The state kept is the one after the last finite sweep.
    state = bcd_jax.init_state(bcd_jax.init_params(jax.random.key(1), config, 10, 1), X, Y, config)
    for _ in range(k - 1):
        state, _ = bcd_jax.sweep(state, X, Y, config)
    chex.assert_trees_all_close(result.state.blocks, state.blocks, rtol=1e-6)
    # run() freezes at the same sweep.
    start = bcd_jax.init_state(bcd_jax.init_params(jax.random.key(1), config, 10, 1), X, Y, config)
    final, _, history, completed = bcd_jax.run(start, X, Y, config)
    assert np.asarray(completed).tolist() == [True] * (k - 1) + [False] * (config.sweeps - k + 1)
    chex.assert_trees_all_close(final.blocks, state.blocks, rtol=1e-6)


SHARDED_SCRIPT = TOY_FAMILY + textwrap.dedent(
    """
        import numpy as np
        import bcd_jax

        bcd_jax.algorithms.register("toy_gd", ToyGD)
        assert jax.device_count() == 8, jax.devices()
        mesh = jax.make_mesh((8,), ("samples",))
        X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=64, d_in=10)
        config = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=8), algorithm=ToyGD(steps=2),
                                hyper={"learning_rate": 0.1}, sweeps=6)
        single = bcd_jax.fit(X, Y, config, key=jax.random.key(1), progress=None)
        sharded = bcd_jax.fit(X, Y, config, key=jax.random.key(1), progress=None, mesh=mesh)
        assert sharded.diverged_at is None and sharded.sweeps_completed == 6
        assert all(w.sharding.is_fully_replicated and len(w.sharding.device_set) == 8 for w in sharded.params)
        worst = 0.0
        for a, b in zip(jax.tree.leaves(sharded.state.blocks), jax.tree.leaves(single.state.blocks)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            worst = max(worst, float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)))
        np.testing.assert_allclose(sharded.history.train_loss, single.history.train_loss, rtol=1e-5)
        print("max relative difference", worst)
        assert worst < 1e-5, worst
        print("ok")
        """
)


def test_sample_sharded_fit_equals_single_device():
    proc = run_on_host_devices(SHARDED_SCRIPT, devices=8)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok"), proc.stdout


def test_sweep_over_the_learning_rate_is_one_compiled_program(data):
    sweeps = pytest.importorskip("bcd_jax.driver.sweeps")
    from bcd_jax.experiments import DataSpec

    X, Y = data
    config = toy_config(**{"sweeps": 5, "network.width": 6})
    rates = np.array([0.05, 0.1, 0.2])
    seeds = np.array([1, 1, 2])
    misses = sweeps.program_cache_info().misses
    batch = sweeps.run_batch(X, Y, config, ToyHyper(rates), seeds)
    assert sweeps.program_cache_info().misses == misses + 1  # one program for the three members
    assert isinstance(batch.history, ToyInfo) and isinstance(batch.blocks, ToyBlocks)
    chex.assert_shape(batch.history.train_loss, (3, 5))
    assert bool(np.all(batch.completed))
    for i, (rate, seed) in enumerate(zip(rates, seeds)):
        alone = bcd_jax.fit(
            X,
            Y,
            config.with_overrides({"hyper.learning_rate": float(rate)}),
            key=jax.random.key(int(seed)),
            progress=None,
        )
        np.testing.assert_allclose(batch.history.train_loss[i], alone.history.train_loss[1:], rtol=1e-5)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], batch.blocks), alone.state.blocks, rtol=1e-5, atol=1e-6
        )
    # A larger rate goes further in the same number of sweeps (same seed: members 0 and 1).
    assert batch.history.train_loss[1, -1] < batch.history.train_loss[0, -1]
    # Other values of the traced numbers reuse the program.
    again = sweeps.run_batch(X, Y, config, ToyHyper(rates * 0.5), seeds)
    assert sweeps.program_cache_info().misses == misses + 1
    assert not np.allclose(again.history.train_loss, batch.history.train_loss)
    # A sweep over the learning rate, described by role: one group, one compiled program.
    spec = sweeps.SweepSpec(
        config=config,
        data=DataSpec(n=16, d_in=10, teacher_width=4),
        grid={"hyper.learning_rate": [0.05, 0.1, 0.2], "seed": [0, 1]},
    )
    result = sweeps.run_sweep(spec)
    assert len(result.groups) == 1 and len(result.rows) == 6 and not result.diverged
    assert all(row["final_train_mse"] < row["initial_train_mse"] for row in result.rows)
    with pytest.raises(ValueError, match="learning_rate"):
        sweeps.SweepSpec(config=config, grid={"hyper.learning_rat": [0.1]})


# -- the protocol's contract, for every registered family -----------------------------------

FAMILIES = sorted(set(bcd_jax.ALGORITHMS) | {"toy_gd"})
_CANDIDATE_NETWORKS = (
    bcd_jax.Network(depth=3, width=4),
    bcd_jax.Network(depth=3, width=4, activation="relu"),
    bcd_jax.Network(depth=3, width=4, bias="all"),
    bcd_jax.Network(depth=3, width=4, activation="relu", bias="all"),
)


def _family_config(name, sweeps=3) -> bcd_jax.Config:
    """The family with its default numbers on the first small network it accepts."""
    errors = []
    for network in _CANDIDATE_NETWORKS:
        try:
            return bcd_jax.Config(network=network, algorithm=name, sweeps=sweeps)
        except ValueError as exc:
            errors.append(str(exc))
    raise AssertionError(f"{name!r} accepts none of the small test networks: {errors}")


@pytest.fixture(scope="module")
def small():
    """n < d_in, as in the paper's Figure 1: every family's default numbers are stable here."""
    return bcd_jax.teacher_problem(jax.random.key(4), n=8, d_in=16, teacher_width=4)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_honours_the_protocol(name, small):
    X, Y = small
    config = _family_config(name)
    algorithm, network = config.algorithm, config.resolved_network
    assert isinstance(algorithm, bcd_jax.Algorithm) and algorithm.name == name
    hash(algorithm)  # a static argument
    description = algorithm.describe()
    assert description["name"] == name and json.loads(json.dumps(description)) == description
    assert bcd_jax.get_algorithm(description) == algorithm
    assert config.hyper == algorithm.make_hyper({}) == algorithm.check_hyper(algorithm.Hyper())
    assert config_from_dict(config.to_dict()) == config
    assert network.skip in (True, False)

    params = bcd_jax.init_params(jax.random.key(0), config, X.shape[1], Y.shape[1])
    chex.assert_shape(list(params), list(network.layer_shapes(X.shape[1], Y.shape[1])))
    chex.assert_type(list(params), jnp.float32)
    state = bcd_jax.init_state(params, X, Y, config)
    chex.assert_shape(list(algorithm.weights(state.blocks)), [p.shape for p in params])
    named = algorithm.block_arrays(state.blocks)
    assert named and all(isinstance(k, str) for k in named)
    split = algorithm.per_sample(state.blocks)
    chex.assert_trees_all_equal_structs(jax.tree.map(lambda _: 0, split), jax.tree.map(lambda _: 0, state.blocks))
    for leaf, is_split in zip(jax.tree.leaves(state.blocks), jax.tree.leaves(split)):
        if is_split:
            assert leaf.shape[0] == X.shape[0]

    info = bcd_jax.diagnostics(state, X, Y, config)
    assert set(REQUIRED_INFO_FIELDS) <= set(info._fields)
    for field in REQUIRED_INFO_FIELDS:
        chex.assert_shape(getattr(info, field), ())
    assert set(algorithm.finite_info_fields) <= set(info._fields)
    assert bool(algorithm.is_finite(state.blocks, info))

    new, step_info = bcd_jax.sweep(state, X, Y, config)
    assert type(step_info) is type(info) and int(new.sweep) == 1
    chex.assert_trees_all_equal_shapes_and_dtypes(new, state)
    assert list(algorithm.block_arrays(new.blocks)) == list(named)
    twice, _ = bcd_jax.sweep(new, X, Y, config)
    final, initial, history, completed = bcd_jax.run(state, X, Y, config, num_sweeps=2)
    assert np.asarray(completed).tolist() == [True, True]
    chex.assert_trees_all_close(final.blocks, twice.blocks, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(initial, info, rtol=1e-6, atol=1e-7)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. Lemma 5.1 for a one-signed output row
        result = bcd_jax.fit(X, Y, config, init_params=params, progress=None)
    assert result.diverged_at is None and result.sweeps_completed == 3
    assert type(result.history) is type(info) and np.asarray(result.history.train_loss).shape == (4,)
    chex.assert_trees_all_close(result.state.blocks, bcd_jax.run(state, X, Y, config)[0].blocks, rtol=1e-5, atol=1e-6)
    assert bcd_jax.predict(result.params, X, config).shape == Y.shape
    # movement: the squared distance between consecutive states over every block array
    expected = [
        sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(after.blocks), jax.tree.leaves(before.blocks)))
        for before, after in ((state, new), (new, twice))
    ]
    assert result.movement.shape == (4,) and np.isnan(result.movement[0])
    np.testing.assert_allclose(result.movement[1:3], expected, rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_resumes_bit_identically(name, small, tmp_path):
    X, Y = small
    config = _family_config(name, sweeps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = bcd_jax.fit(X, Y, config, key=jax.random.key(5), checkpoint_dir=tmp_path / "full", checkpoint_every=2)
        bcd_jax.fit(
            X, Y, config.replace(sweeps=2), key=jax.random.key(5), checkpoint_dir=tmp_path / "cut", checkpoint_every=2
        )
        resumed = bcd_jax.fit(
            X, Y, config, key=jax.random.key(5), checkpoint_dir=tmp_path / "cut", checkpoint_every=2, resume=True
        )
    assert full.diverged_at is None and resumed.sweeps_completed == 4
    chex.assert_trees_all_equal(resumed.state.blocks, full.state.blocks)
    assert _leaves_equal(resumed.history, full.history)
    np.testing.assert_array_equal(resumed.movement, full.movement)
