"""The common behavioural suite: every registered family, each test, no per-family test code.

Parametrised over the registry at collection time (as optax's ``_common_test.py`` and blackjax's
``test_sampling.py``): a family registered before collection -- the built-ins and the test family
``"toy_gd"`` (tests/toy_family.py, imported by conftest) -- gets every test here. Each family trains
the one small problem of ``helpers.family_config`` / ``helpers.family_data`` (changed for a family
only where ``helpers.FAMILY_OVERRIDES`` says), with the same shapes in every test, so that a family
compiles few programs: every fit below runs chunks of 2 sweeps with a validation set and a
checkpoint folder (one compiled loop per family and dtype).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.algorithms.base import make_data
from bcd_jax.config import config_from_dict
from bcd_jax.driver.blocks import block_names, per_sample_mask
from bcd_jax.driver.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from bcd_jax.network import input_features
from bcd_jax.stopping import Status, Stop
from bcd_jax.testing import reference_akiyama, reference_whole_objective, reference_zeng

from helpers import (
    FAMILY_OVERRIDES,
    FAMILY_SWEEPS,
    assert_close,
    assert_trees_close,
    dtype_rtol,
    family_config,
    family_data,
    leaves_equal,
    start_on_host_devices,
)

FAMILIES = sorted(bcd_jax.ALGORITHMS)
KEY = 1  # the seed of every run's initial weights, unless a test says otherwise


# -- the problem and the one way every test fits ------------------------------------------------


class Problem(NamedTuple):
    X: np.ndarray
    Y: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray


@functools.cache
def problem(dtype="float32") -> Problem:
    return Problem(*family_data(np.dtype(dtype)))


def fit(config, folder, data: Problem | None = None, *, key=KEY, **options) -> bcd_jax.FitResult:
    """``bcd_jax.fit`` as every test here runs it: a validation set, checkpoints every 2 sweeps in ``folder``."""
    data = problem() if data is None else data
    options.setdefault("validation", (data.X_val, data.Y_val))
    key = None if "init_params" in options else jax.random.key(key)
    return bcd_jax.fit(
        data.X, data.Y, config, key=key, checkpoint_dir=folder, checkpoint_every=2, progress=None, **options
    )


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """``(name, **structure) -> the uninterrupted 4-sweep run`` of a family (computed once, shared)."""
    runs = {}

    def get(name, **options):
        key = (name, *sorted(options.items()))
        if key not in runs:
            runs[key] = fit(family_config(name, **options), tmp_path_factory.mktemp(f"full_{name}"))
        return runs[key]

    return get


def other_numbers(config: bcd_jax.Config, factor=0.9):
    """The family's numbers, each scaled by ``factor`` (zero stays zero): new values, same program."""
    return type(config.hyper)(*(factor * v for v in config.hyper))


def float_leaves(tree):
    return [a for a in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)]


def test_the_test_family_is_in_the_suite():
    """``"toy_gd"`` was registered by conftest before collection, so every test below runs it too."""
    assert "toy_gd" in FAMILIES and bcd_jax.ALGORITHMS.module_of("toy_gd") == "toy_family"
    assert "toy_gd" not in FAMILY_OVERRIDES  # it runs the default problem
    assert set(FAMILY_OVERRIDES) <= set(FAMILIES)  # no stale entries


# -- protocol facts -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_protocol_facts(name, full_runs):
    data = problem()
    X, Y = data.X, data.Y
    config = family_config(name)
    algorithm, network = config.algorithm, config.resolved_network
    n, d_in, d_out = X.shape[0], X.shape[1], Y.shape[1]
    assert isinstance(algorithm, bcd_jax.Algorithm) and algorithm.name == name
    hash(algorithm)  # a static argument of every compiled function
    description = algorithm.describe()
    assert description["name"] == name and json.loads(json.dumps(description)) == description
    assert bcd_jax.get_algorithm(description) == algorithm
    assert bcd_jax.get_algorithm(name) == bcd_jax.get_algorithm({"name": name})
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.hyper == algorithm.make_hyper(FAMILY_OVERRIDES.get(name, {}).get("hyper"))
    assert all(type(v) is float for v in config.hyper)
    assert network.skip in (True, False)

    params = bcd_jax.init_params(jax.random.key(KEY), config, d_in, d_out)
    assert [w.shape for w in params] == list(network.layer_shapes(d_in, d_out))
    assert all(w.dtype == jnp.float32 for w in params)
    state = bcd_jax.init_state(params, X, Y, config)
    assert [w.shape for w in algorithm.weights(state.blocks)] == [w.shape for w in params]
    for w, w0 in zip(algorithm.weights(state.blocks), params):  # init keeps the weights it is given
        np.testing.assert_array_equal(np.asarray(w), np.asarray(w0))

    # Block names come out of the pytree: one per leaf, distinct, stable.
    leaves = jax.tree.leaves(state.blocks)
    names = block_names(state.blocks)
    assert len(names) == len(leaves) == len(set(names)) and all(isinstance(s, str) and s for s in names)
    assert block_names(jax.tree.map(jnp.zeros_like, state.blocks)) == names
    # The per-sample blocks are exactly the leaves with one row per sample.
    mask = per_sample_mask(algorithm, network, n, d_in + int(bool(network.bias)), d_out, X.dtype)
    assert mask == tuple(np.ndim(a) >= 1 and np.shape(a)[0] == n for a in leaves), (names, mask)

    # fit = the same sweeps one at a time (from the weights of the same key).
    result = full_runs(name)
    assert result.status == Status.BUDGET and result.sweeps_completed == FAMILY_SWEEPS
    history = result.history
    assert isinstance(history, bcd_jax.SweepInfo) and np.shape(history.objective) == (FAMILY_SWEEPS + 1,)
    rtol = dtype_rtol(X.dtype)
    # The initial record: the objective is finite, the extras describe a sweep (NaN).
    initial = jax.tree.map(lambda h: h[0], history)
    assert np.isfinite(initial.objective) and np.isfinite(initial.train_loss) and np.isfinite(initial.val_loss)
    assert all(np.all(np.isnan(a)) for a in float_leaves(initial.extras))
    current = state
    for k in range(1, FAMILY_SWEEPS + 1):
        new, info = bcd_jax.sweep(current, X, Y, config)
        assert int(new.sweep) == k and jax.tree.structure(new) == jax.tree.structure(current)
        assert [(a.shape, a.dtype) for a in jax.tree.leaves(new)] == [
            (a.shape, a.dtype) for a in jax.tree.leaves(current)
        ]
        entry = jax.tree.map(lambda h, k=k: h[k], history)
        for field in ("objective", "train_loss", "train_mse", "train_accuracy", "extras"):
            assert_trees_close(getattr(info, field), getattr(entry, field), rtol, f"sweep {k} {field}")
        # movement: the squared distance between consecutive blocks, over every float block array
        moved = sum(
            float(jnp.sum((a - b) ** 2)) for a, b in zip(float_leaves(new.blocks), float_leaves(current.blocks))
        )
        assert_close(info.movement, moved, rtol, "movement")
        assert_close(entry.movement, moved, rtol, "history movement")
        current = new
    assert int(state.sweep) == 0 and leaves_equal(jax.tree.leaves(state.blocks), leaves)  # inputs not consumed
    assert np.isnan(history.movement[0])
    assert_trees_close(result.state.blocks, current.blocks, rtol, "blocks")

    # The history's objective is the family's objective of the final blocks, and finite.
    objective = algorithm.objective(
        result.state.blocks, make_data(X, Y, network), config.hyper_arrays(X.dtype), network
    )
    assert np.all(np.isfinite(history.objective))
    assert_close(history.objective[-1], objective, rtol, "objective")
    assert bcd_jax.predict(result.params, X, config).shape == Y.shape
    assert leaves_equal(result.params, tuple(algorithm.weights(result.state.blocks)))


# -- jit, tracing, dtypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_jit_agrees_with_no_jit(name):
    data = problem()
    config = family_config(name)
    params = bcd_jax.init_params(jax.random.key(KEY), config, data.X.shape[1], data.Y.shape[1])
    state = bcd_jax.init_state(params, data.X, data.Y, config)
    jitted = bcd_jax.sweep(state, data.X, data.Y, config)
    with jax.disable_jit():
        eager = bcd_jax.sweep(state, data.X, data.Y, config)
    assert_trees_close(eager, jitted, dtype_rtol(data.X.dtype), "sweep")


@pytest.mark.parametrize("name", FAMILIES)
def test_new_numbers_do_not_recompile(name, compile_log, tmp_path):
    data = problem()
    config = family_config(name)
    params = bcd_jax.init_params(jax.random.key(KEY), config, data.X.shape[1], data.Y.shape[1])
    state = bcd_jax.init_state(params, data.X, data.Y, config)
    first_sweep, _ = bcd_jax.sweep(state, data.X, data.Y, config)
    first = fit(config, tmp_path / "first")
    before = compile_log.count()
    other = config.replace(hyper=other_numbers(config), seed=3)
    assert other.structure() == config.structure()
    second_sweep, _ = bcd_jax.sweep(state, data.X, data.Y, other)
    second = fit(other, tmp_path / "second", key=2)  # new numbers and other initial weights
    jax.block_until_ready((second_sweep, second.state))
    assert compile_log.count() == before, compile_log.messages[-5:]
    # The new numbers and weights were used.
    assert not leaves_equal(first_sweep.blocks, second_sweep.blocks)
    assert not np.allclose(np.asarray(first.params[0]), np.asarray(second.params[0]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", FAMILIES)
def test_dtype_is_kept(name, dtype, request, tmp_path):
    if dtype == "float64":
        request.getfixturevalue("x64")
    data = problem(dtype)
    config = family_config(name)
    params = bcd_jax.init_params(jax.random.key(KEY), config, data.X.shape[1], data.Y.shape[1], dtype=dtype)
    assert all(w.dtype == dtype for w in params)
    state = bcd_jax.init_state(params, data.X, data.Y, config)
    result = fit(config, tmp_path, data)
    assert result.status == Status.BUDGET
    assert state.sweep.dtype == result.state.sweep.dtype == jnp.int32
    for where, tree in (("init", state.blocks), ("fit", result.state.blocks)):
        for block, a in zip(block_names(tree), jax.tree.leaves(tree)):
            assert not a.weak_type, (where, block)
            if jnp.issubdtype(a.dtype, jnp.floating):
                assert a.dtype == dtype, (where, block, a.dtype)
    assert all(w.dtype == dtype for w in result.params)
    # Every field of the record (the driver's and the family's extras), as the compiled loop returns it.
    for path, a in jax.tree_util.tree_flatten_with_path(result.history)[0]:
        assert np.asarray(a).dtype == dtype, (jax.tree_util.keystr(path), np.asarray(a).dtype)
    assert bcd_jax.predict(result.params, data.X, config).dtype == dtype


# -- a grid of runs = separate runs -------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_grid_over_seeds_and_numbers_equals_separate_fits(name, tmp_path):
    data = problem()
    config = family_config(name)
    numbers = [config.hyper, other_numbers(config)]
    hyper = type(config.hyper)(*(np.array(column) for column in zip(*numbers)))
    seeds = np.array([KEY, 2])
    options = dict(validation=(data.X_val, data.Y_val))
    try:  # members side by side (vmap) where the family's program allows it on this platform
        grid = bcd_jax.run_grid(data.X, data.Y, config, hyper, seeds, batch_size=2, **options)
    except ValueError as exc:  # batched LAPACK calls are refused on CPU: one member at a time (lax.map)
        assert "batch_size" in str(exc)
        grid = bcd_jax.run_grid(data.X, data.Y, config, hyper, seeds, **options)
    assert grid.completed.shape == (2, FAMILY_SWEEPS) and grid.completed.all()
    rtol = dtype_rtol(data.X.dtype)
    for i in range(2):
        alone = fit(config.replace(hyper=numbers[i]), tmp_path / str(i), key=int(seeds[i]))
        member = jax.tree.map(lambda a, i=i: np.asarray(a)[i], (grid.initial, grid.history, grid.blocks))
        assert int(grid.status[i]) == alone.status
        assert_trees_close(member[0], jax.tree.map(lambda h: h[0], alone.history), rtol, f"member {i} initial")
        assert_trees_close(member[1], jax.tree.map(lambda h: h[1:], alone.history), rtol, f"member {i} history")
        assert_trees_close(member[2], alone.state.blocks, rtol, f"member {i} blocks")
    assert not np.allclose(grid.history.train_loss[0], grid.history.train_loss[1])


# -- divergence -----------------------------------------------------------------------------------------


class PoisonedBlocks(NamedTuple):
    inner: Any
    count: jax.Array


@dataclasses.dataclass(frozen=True)
class Poisoned(bcd_jax.Algorithm):
    """The family ``inner``, except that sweep ``at`` leaves every float block NaN."""

    inner: bcd_jax.Algorithm = None
    at: int = 2
    Hyper = property(lambda self: self.inner.Hyper)

    def init(self, weights, data, network):
        return PoisonedBlocks(self.inner.init(weights, data, network), jnp.zeros((), jnp.int32))

    def step(self, blocks, data, cache, hyper, network):
        new, extras = self.inner.step(blocks.inner, data, cache, hyper, network)
        count = blocks.count + 1
        poison = lambda a: jnp.where(count == self.at, jnp.nan, a) if jnp.issubdtype(a.dtype, jnp.floating) else a
        return PoisonedBlocks(jax.tree.map(poison, new), count), extras

    def weights(self, blocks):
        return self.inner.weights(blocks.inner)

    def objective(self, blocks, data, hyper, network):
        return self.inner.objective(blocks.inner, data, hyper, network)

    def prepare(self, data, network):
        return self.inner.prepare(data, network)

    def init_weights(self, key, network, d_in, d_out, dtype):
        return self.inner.init_weights(key, network, d_in, d_out, dtype)

    def resolve(self, network, hyper):
        return self.inner.resolve(network, hyper)


@pytest.fixture
def poisoned():
    """``"test_poisoned"`` is registered for one test."""
    bcd_jax.algorithms.register("test_poisoned", Poisoned)
    try:
        yield
    finally:
        bcd_jax.ALGORITHMS.unregister("test_poisoned")


@pytest.mark.parametrize("name", FAMILIES)
def test_divergence_freezes_the_last_finite_state(name, poisoned):
    data = problem()
    base = family_config(name)
    config = base.replace(algorithm=Poisoned(inner=base.algorithm))
    assert config.algorithm.name == "test_poisoned" and config.hyper == base.hyper
    params = bcd_jax.init_params(jax.random.key(KEY), base, data.X.shape[1], data.Y.shape[1])
    options = dict(init_params=params, validation=(data.X_val, data.Y_val), progress=None)
    with pytest.warns(bcd_jax.BCDDivergenceWarning) as caught:
        result = bcd_jax.fit(data.X, data.Y, config, **options)
    assert result.status == Status.DIVERGED and result.diverged_at == 2 and result.sweeps_completed == 1
    assert int(result.state.sweep) == 1 and np.shape(result.history.objective) == (2,)
    assert all(np.all(np.isfinite(getattr(result.history, f))) for f in ("objective", "train_loss", "train_mse"))
    # The blocks are those after sweep 1, bit for bit: a run with a budget of one sweep.
    one = bcd_jax.fit(data.X, data.Y, config.replace(sweeps=1), **options)
    assert one.status == Status.BUDGET and int(one.state.blocks.count) == 1
    assert leaves_equal(result.state.blocks, one.state.blocks)
    assert leaves_equal(result.history, one.history)
    # ... which are the inner family's blocks after one sweep.
    state = bcd_jax.init_state(params, data.X, data.Y, base)
    after_one, _ = bcd_jax.sweep(state, data.X, data.Y, base)
    assert_trees_close(result.state.blocks.inner, after_one.blocks, dtype_rtol(data.X.dtype), "after sweep 1")
    # One warning, naming the sweep and every block that went non-finite.
    messages = [str(w.message) for w in caught if issubclass(w.category, bcd_jax.BCDDivergenceWarning)]
    assert len(messages) == 1 and messages[0].startswith("BCD diverged at sweep 2: non-finite values in "), messages
    blocks = result.state.blocks
    for block, a in zip(block_names(blocks), jax.tree.leaves(blocks)):
        assert (block in messages[0]) == jnp.issubdtype(a.dtype, jnp.floating), (block, messages[0])


# -- stopping rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stop,status",
    [(Stop(objective_rtol=10.0), Status.OBJECTIVE_TOLERANCE), (Stop(target_loss=1e30), Status.TARGET_LOSS)],
    ids=["objective_rtol", "target_loss"],
)
@pytest.mark.parametrize("name", FAMILIES)
def test_a_rule_that_holds_after_sweep_1_stops_there(name, stop, status, full_runs, tmp_path):
    data = problem()
    config = family_config(name)
    result = fit(config.replace(stop=stop), tmp_path)
    assert result.status == status and result.sweeps_completed == 1 < config.sweeps
    assert int(result.state.sweep) == 1
    assert all(np.shape(a)[0] == 2 for a in jax.tree.leaves(result.history))  # initial + the sweep kept
    # The sweep kept is the first sweep of the run without the rule; the second of the chunk did not run.
    full = full_runs(name)
    assert leaves_equal(result.history, jax.tree.map(lambda h: h[:2], full.history))
    params = bcd_jax.init_params(jax.random.key(KEY), config, data.X.shape[1], data.Y.shape[1])
    after_one, _ = bcd_jax.sweep(bcd_jax.init_state(params, data.X, data.Y, config), data.X, data.Y, config)
    assert_trees_close(result.state.blocks, after_one.blocks, dtype_rtol(data.X.dtype), "blocks")
    assert read_checkpoint_meta(tmp_path)["status"] == status


def _patience_outcome(val_loss, patience, budget):
    """``(status, sweeps)`` of the patience rule, recomputed on the host from the recorded
    validation losses (entry k after sweep k; the score to maximise is minus the loss)."""
    best, since = -np.inf, 0
    for k in range(1, len(val_loss)):
        score = -float(val_loss[k])
        best, since = (score, 0) if score > best else (best, since + 1)
        if since >= patience:
            return Status.PATIENCE, k
    return Status.BUDGET, budget


@pytest.mark.parametrize("name", FAMILIES)
def test_patience_follows_the_recorded_validation_metric(name, tmp_path):
    data = problem()
    config = family_config(name).replace(stop=Stop(patience=1))
    # The held-out targets, and their negatives (whose loss rather rises): either rule outcome is checked.
    for i, targets in enumerate((data.Y_val, -data.Y_val)):
        result = fit(config, tmp_path / str(i), validation=(data.X_val, targets))
        status, sweeps = _patience_outcome(result.history.val_loss, 1, config.sweeps)
        assert (result.status, result.sweeps_completed) == (status, sweeps), result.history.val_loss
        assert np.shape(result.history.val_loss) == (sweeps + 1,)


# -- checkpoints, resume and interrupts ----------------------------------------------------------------


def _assert_same_run(a: bcd_jax.FitResult, b: bcd_jax.FitResult):
    assert a.status == b.status and a.sweeps_completed == b.sweeps_completed
    assert leaves_equal(a.state.blocks, b.state.blocks)
    assert leaves_equal(a.history, b.history)
    assert a.run_id == b.run_id


@pytest.mark.parametrize("name", FAMILIES)
def test_resume_is_bit_identical(name, full_runs, tmp_path, compile_log):
    config = family_config(name)
    full = full_runs(name)
    cut = fit(config.replace(sweeps=2), tmp_path)
    assert cut.status == Status.BUDGET and cut.sweeps_completed == 2
    before = compile_log.count("run_loop")
    resumed = fit(config, tmp_path, resume=True)
    assert compile_log.count("run_loop") == before  # the loop compiled for the fresh run serves the resumed one
    assert resumed.run_id == cut.run_id  # the same run, continued
    assert resumed.status == full.status == Status.BUDGET and resumed.sweeps_completed == 4
    assert leaves_equal(resumed.state.blocks, full.state.blocks)
    assert leaves_equal(resumed.history, full.history)
    assert read_checkpoint_meta(tmp_path)["sweep"] == 4


@pytest.mark.parametrize("name", FAMILIES)
def test_interrupt_stops_at_a_chunk_and_resumes_bit_identically(name, full_runs, tmp_path):
    config = family_config(name)
    seen = []

    def first_ctrl_c(done, history):  # the first Ctrl-C, as the SIGINT handler of fit records it
        seen.append(done)
        bcd_jax.interrupts.INTERRUPT.set()

    stopped = fit(config, tmp_path, callback=first_ctrl_c)
    assert seen == [2] and not bcd_jax.interrupts.INTERRUPT.is_set()  # fit cleared the event on its way out
    assert stopped.status == Status.INTERRUPTED and stopped.sweeps_completed == 2
    meta = read_checkpoint_meta(tmp_path)
    assert (meta["status"], meta["sweep"], meta["run_id"]) == (Status.INTERRUPTED, 2, stopped.run_id)
    resumed = fit(config, tmp_path, resume=True)
    full = full_runs(name)
    assert resumed.status == Status.BUDGET and resumed.run_id == stopped.run_id
    assert leaves_equal(resumed.state.blocks, full.state.blocks)
    assert leaves_equal(resumed.history, full.history)
    assert (tmp_path / CHECKPOINT_FILE).exists()


# -- exactness against the plain float64 references -----------------------------------------------------


def _features(X, network):
    return np.asarray(input_features(jnp.asarray(X), network.bias))


def _reference_akiyama(config, weights, X, Y, sweeps):
    ref = reference_akiyama
    network, h, algorithm = config.resolved_network, config.hyper, config.algorithm
    assert (algorithm.inner, algorithm.step_size, h.weight_decay) == ("gd", "fixed", 0.0)  # what the reference does
    act = ref.reference_activation(network.activation, network.negative_slope)
    W = ref.as_paper(weights)
    V = ref.forward_hidden(W, _features(X, network), act, network.skip)
    numbers = dict(gamma=h.gamma, eta_v=h.eta_v, eta_w=h.eta_w, eta_w1=h.eta_w1, k_v=algorithm.k_v, k_w=algorithm.k_w)
    W, V = ref.run(W, V, Y, sweeps, act=act, spec=algorithm.spec, **numbers)
    return bcd_jax.LayerBlocks(tuple(W[1:]), tuple(V[1:]))


def _reference_whole_objective(config, weights, X, Y, sweeps):
    network, h, algorithm = config.resolved_network, config.hyper, config.algorithm
    assert algorithm.inner == "gd" and network.activation == "leaky_relu" and network.loss == "squared"
    slope = network.negative_slope
    W = reference_akiyama.as_paper(weights)
    V = reference_akiyama.forward_hidden(W, _features(X, network), reference_akiyama.leaky(slope), network.skip)
    for _ in range(sweeps):
        W, V = reference_whole_objective.sweep(
            W,
            V,
            Y,
            gamma=h.gamma,
            eta_v=h.eta_v,
            eta_w=h.eta_w,
            lam=h.weight_decay,
            slope=slope,
            skip=network.skip,
            k_v=algorithm.k_v,
            k_w=algorithm.k_w,
            loss_grad=lambda p, y: p - y,
            beta=1.0,
            resync=algorithm.resync,
            decay=h.decay,
        )
    return bcd_jax.LayerBlocks(tuple(W[1:]), tuple(V[1:]))


def _reference_zeng(config, weights, X, Y, sweeps):
    ref = reference_zeng
    network, h = config.resolved_network, config.hyper
    assert network.activation == "leaky_relu" and network.loss == "squared"
    slope, skip, bias_all = network.negative_slope, network.skip, network.bias == "all"
    W = [None] + [np.asarray(w, np.float64) for w in weights]
    V, U = ref.forward(W, _features(X, network), slope, skip, bias_all)
    three = config.algorithm.splitting == "three"
    for _ in range(sweeps):
        if three:
            W, V, U = ref.three_splitting_sweep(
                W, V, U, Y, h.gamma, h.rho, h.alpha, h.weight_decay, slope, skip, bias_all
            )
        else:
            W, V = ref.two_splitting_sweep(W, V, Y, h.gamma, h.alpha, h.weight_decay, slope, skip, bias_all)
    return bcd_jax.ZengBlocks(tuple(W[1:]), tuple(V[1:]), tuple(U[1:]) if three else ())


# sign as plain pieces (low, high, slope, intercept), written here from its definition (sign(0) = 1)
SIGN_PIECES = ((-np.inf, 0.0, 0.0, -1.0), (0.0, np.inf, 0.0, 1.0))


def _reference_annealed(config, weights, X, Y, sweeps):
    """Each sweep: the reference's three-splitting sweep on the ramped sign of that sweep (the ramp
    starts at ``algorithm.ramp``, shrinks by ``ramp_decay`` and is 0 once below ``ramp_min``)."""
    ref = reference_zeng
    network, h, algorithm = config.resolved_network, config.hyper, config.algorithm
    assert network.activation == "sign" and network.loss == "squared" and network.bias == "all"
    W = [None] + [np.asarray(w, np.float64) for w in weights]
    V, U = ref.forward(W, _features(X, network), 0.0, network.skip, True, pieces=SIGN_PIECES)
    ramp, ramps = algorithm.ramp, []
    for _ in range(sweeps):
        ramps.append(ramp)
        W, V, U = ref.three_splitting_sweep(
            W, V, U, Y, h.gamma, h.rho, h.alpha, h.weight_decay, 0.0, network.skip, True,
            pieces=ref.ramped_pieces(SIGN_PIECES, ramp),
        )  # fmt: skip
        ramp = ramp * h.ramp_decay
        ramp = 0.0 if ramp < h.ramp_min else ramp
    assert ramps[0] > 0 and ramps[-1] == 0, ramps  # both the ramped and the true staircase are compared
    return bcd_jax.algorithms.AnnealedBlocks(tuple(W[1:]), tuple(V[1:]), tuple(U[1:]), np.float64(ramp))


# family -> its plain per-sample NumPy reference: (config, initial weights, X, Y, sweeps) -> the blocks.
REFERENCES = {
    "monotone": _reference_akiyama,
    "relu_skip": _reference_akiyama,
    "relu_noskip": _reference_akiyama,
    "whole_objective": _reference_whole_objective,
    "zeng_three_splitting": _reference_zeng,
    "zeng_two_splitting": _reference_zeng,
    "annealed_three_splitting": _reference_annealed,
}


@pytest.mark.parametrize("name", FAMILIES)
def test_iterates_equal_the_float64_reference(name, x64, tmp_path):
    if name not in REFERENCES:
        pytest.skip(f"{name!r} has no plain float64 reference (bcd_jax.testing)")
    data = problem("float64")
    config = family_config(name, sweeps=2)
    params = bcd_jax.init_params(jax.random.key(KEY), config, data.X.shape[1], data.Y.shape[1], dtype=jnp.float64)
    result = fit(config, tmp_path, data, init_params=params)
    assert result.status == Status.BUDGET and result.state.blocks.W[0].dtype == jnp.float64
    expected = REFERENCES[name](config, params, data.X, data.Y, 2)
    assert block_names(result.state.blocks) == block_names(expected)
    for block, got, want in zip(block_names(expected), jax.tree.leaves(result.state.blocks), jax.tree.leaves(expected)):
        assert_close(got, want, 1e-10, block)


# -- sample sharding: every family in ONE subprocess with 8 host devices ---------------------------------

# Every family's default structure, and the structural modes whose data-only caches run over the
# samples in another way (inner="exact": the factor of X's Gram, X^T X summed over the samples);
# whole_objective's exact sweep deadlocked on 2-4 CPU devices in 0.2 (batched LAPACK calls running at
# once on every device).
SHARDED_RUNS = {name: {"name": name} for name in FAMILIES}
SHARDED_RUNS.update(
    {f"{name}-inner_exact": {"name": name, "inner": "exact"} for name in ("monotone", "relu_skip", "whole_objective")}
)

SHARDED_SCRIPT = """
import json, sys, tempfile
import jax, numpy as np
import bcd_jax, toy_family  # noqa: F401 - the test family, as in the parent
from bcd_jax.driver.blocks import block_names, per_sample_mask
from helpers import family_config, family_data

assert jax.device_count() == 8, jax.devices()
mesh = jax.make_mesh((8,), ("samples",))
X, Y, X_val, Y_val = family_data()
runs, out = json.loads(sys.argv[1]), sys.argv[2]
for i, (label, description) in enumerate(runs.items()):  # as the parent's fit() runs them, samples sharded
    config = family_config(**description)
    result = bcd_jax.fit(X, Y, config, key=jax.random.key(1), validation=(X_val, Y_val), progress=None, mesh=mesh,
                         checkpoint_dir=tempfile.mkdtemp(), checkpoint_every=2)
    network = config.resolved_network
    mask = per_sample_mask(config.algorithm, network, X.shape[0], X.shape[1] + int(bool(network.bias)), Y.shape[1],
                           X.dtype)
    leaves = jax.tree.leaves(result.state.blocks)
    layout = {block: [len(a.sharding.device_set), bool(a.sharding.is_fully_replicated), split]
              for block, split, a in zip(block_names(result.state.blocks), mask, leaves)}
    replicated = all(w.sharding.is_fully_replicated for w in result.params)
    np.savez(f"{out}/run{i}.npz", *[np.asarray(a) for a in leaves])
    np.savez(f"{out}/run{i}_history.npz", *[np.asarray(a) for a in jax.tree.leaves(result.history)])
    print(json.dumps({"label": label, "status": int(result.status), "layout": layout, "params_replicated": replicated,
                      "file": f"run{i}"}))
try:
    bcd_jax.fit(X[:20], Y[:20], family_config("toy_gd"), mesh=mesh, progress=None)
except ValueError as exc:
    assert str(exc).startswith("mesh: n = 20 samples do not split evenly over 8 devices"), exc
else:
    raise AssertionError("n not divisible by the device count was accepted")
print("done")
"""


class _Sharded:
    """The subprocess that runs every family sharded over 8 host devices; started when the module's
    first test starts (so that it runs next to the others), collected by the first test that reads it.
    The single-device runs to compare with are the parent's (``full_runs``): the same fit, one device."""

    def __init__(self, out):
        self.out = out
        self.process = start_on_host_devices(SHARDED_SCRIPT, 8, args=[json.dumps(SHARDED_RUNS), str(out)])
        self.output = None

    def results(self) -> dict[str, dict]:
        if self.output is None:
            stdout, stderr = self.process.communicate(timeout=600)
            self.output = (self.process.returncode, stdout, stderr)
        code, stdout, stderr = self.output
        assert code == 0 and stdout.strip().endswith("done"), stdout + stderr
        rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return {row["label"]: row for row in rows}

    def arrays(self, row, part=""):
        with np.load(self.out / f"{row['file']}{part}.npz") as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture(scope="module", autouse=True)
def sharded(request, tmp_path_factory):
    wanted = any(
        item.module is request.module and item.originalname == "test_sharded_equals_single_device"
        for item in request.session.items
    )
    run = _Sharded(tmp_path_factory.mktemp("sharded")) if wanted else None
    yield run
    if run is not None:
        run.close()


@pytest.mark.parametrize("label", list(SHARDED_RUNS))
def test_sharded_equals_single_device(label, sharded, full_runs):
    row = sharded.results()[label]
    description = dict(SHARDED_RUNS[label])
    single = full_runs(description.pop("name"), **description)
    assert row["status"] == single.status == Status.BUDGET
    assert row["params_replicated"]
    assert list(row["layout"]) == block_names(single.state.blocks)
    for block, (devices, replicated, split) in row["layout"].items():
        assert devices == 8, block
        assert replicated is not split, (block, "per-sample blocks are split over the devices, the others replicated")
    assert any(split for _, _, split in row["layout"].values()) or label == "toy_gd"
    # All-reduces sum the samples in another order: equal to float tolerance.
    for block, a, b in zip(row["layout"], sharded.arrays(row), jax.tree.leaves(single.state.blocks)):
        assert_close(a, b, 1e-4, block)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(single.history)[0]]
    for path, a, b in zip(paths, sharded.arrays(row, "_history"), jax.tree.leaves(single.history)):
        nan = np.isnan(b)
        np.testing.assert_array_equal(np.isnan(a), nan, err_msg=path)
        assert_close(np.where(nan, 0, a), np.where(nan, 0, b), 1e-4, path)
