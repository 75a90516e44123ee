"""Networks with hard-threshold and quantised activations (step, sign, k-level staircases) trained
by the three-splitting BCD: the float64 iterates equal a plain per-sample NumPy reference whose
scalar prox is written from the pieces (no brute force, nothing shared with bcd_jax), the
objective never increases, and the trained network is the deployed one (its hidden layers take
only the activation's levels)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.network import hidden_forward, input_features
from bcd_jax.testing import reference_zeng as ref

from helpers import REPO, assert_close

# Plain tuples (low, high, slope, intercept), written here from the definitions: the reference
# must not read bcd_jax.activations (quantized(levels=4) on [-1, 1]: levels -1, -1/3, 1/3, 1).
INF = np.inf
PIECES = {
    "sign": ((-INF, 0.0, 0.0, -1.0), (0.0, INF, 0.0, 1.0)),
    "step": ((-INF, 0.0, 0.0, 0.0), (0.0, INF, 0.0, 1.0)),
    "quantized(levels=4)": (
        (-INF, -2 / 3, 0.0, -1.0),
        (-2 / 3, 0.0, 0.0, -1 / 3),
        (0.0, 2 / 3, 0.0, 1 / 3),
        (2 / 3, INF, 0.0, 1.0),
    ),
    "quantized(levels=3, low=0, high=2)": ((-INF, 0.5, 0.0, 0.0), (0.5, 1.5, 0.0, 1.0), (1.5, INF, 0.0, 2.0)),
    "relu": ((-INF, 0.0, 0.0, 0.0), (0.0, INF, 1.0, 0.0)),
}
FLAT = [name for name in PIECES if name != "relu"]
LEVELS = {name: sorted({p[3] for p in pieces}) for name, pieces in PIECES.items() if name in FLAT}


def _config(activation, *, bias="all", skip=False, loss="squared", depth=4, width=4, dtype_hyper=None):
    network = bcd_jax.Network(depth=depth, width=width, activation=activation, bias=bias, skip=skip, loss=loss)
    # gamma large against rho + alpha: the U prox often crosses a jump (lands on its boundary)
    hyper = dtype_hyper or {"gamma": 2.0, "rho": 0.6, "alpha": 0.3, "weight_decay": 0.1}
    return bcd_jax.Config(network=network, algorithm=bcd_jax.Zeng("three"), hyper=hyper, sweeps=3)


def _layer_pieces(activation, depth):
    names = activation if isinstance(activation, list) else [activation] * (depth - 1)
    return [PIECES[name] for name in names]


def _small_problem(config, loss, *, seed, key, n=7, d_in=5, d_out=3):
    """Random float64 data (one-hot rows for a classification loss), initial weights and the state."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_in))
    Y = rng.normal(size=(n, d_out)) if loss == "squared" else np.eye(d_out)[np.arange(n) % d_out]
    params = bcd_jax.init_params(jax.random.key(key), config, d_in, d_out, dtype=jnp.float64)
    return X, Y, params, bcd_jax.init_state(params, X, Y, config)


# (activation, bias, skip, loss): every staircase, a mixed relu/sign network, both forms and both losses.
CASES = [
    ("sign", "all", False, "squared"),
    ("sign", True, True, "squared"),
    ("step", "all", False, "squared"),
    ("step", "all", False, "softmax_cross_entropy"),
    ("quantized(levels=4)", "all", False, "squared"),
    ("quantized(levels=3, low=0, high=2)", "all", True, "squared"),
    (["relu", "sign", "sign"], "all", False, "squared"),
    (["sign", "quantized(levels=4)", "relu"], True, False, "softmax_cross_entropy"),
]


def _cross_entropy_grad(v, y):
    p = np.exp(v - v.max())
    return p / p.sum() - y


@pytest.mark.parametrize("activation,bias,skip,loss", CASES)
def test_iterates_equal_the_per_sample_reference(x64, activation, bias, skip, loss):
    config = _config(activation, bias=bias, skip=skip, loss=loss)
    X, Y, params, state = _small_problem(config, loss, seed=0, key=1)
    n = len(X)
    pieces = _layer_pieces(activation, 4)
    W = [None] + [np.asarray(w, np.float64) for w in params]
    Xb = np.concatenate([X, np.ones((n, 1))], axis=1) if bias else X
    V, U = ref.forward(W, Xb, 0.0, skip, bias == "all", pieces=pieces)
    h = config.hyper
    grad = None if loss == "squared" else _cross_entropy_grad
    for sweep in range(3):
        state, info = bcd_jax.sweep(state, X, Y, config)
        W, V, U = ref.three_splitting_sweep(
            W, V, U, Y, h.gamma, h.rho, h.alpha, h.weight_decay, 0.0, skip, bias == "all", grad, pieces=pieces
        )
        for j in range(1, len(W)):
            assert_close(state.blocks.W[j - 1], W[j], 1e-10, f"sweep {sweep + 1} W_{j}")
            assert_close(state.blocks.V[j - 1], V[j], 1e-10, f"sweep {sweep + 1} V_{j}")
            assert_close(state.blocks.U[j - 1], U[j], 1e-10, f"sweep {sweep + 1} U_{j}")
    if loss == "squared":
        expected = ref.objective(
            W, V, U, Y, h.gamma, h.rho, h.weight_decay, 0.0, skip, bias == "all", True, pieces=pieces
        )
        assert_close(info.objective, expected, 1e-10, "objective")


@pytest.mark.parametrize("name", list(PIECES))
def test_the_reference_prox_is_exact(x64, name):
    """The reference's prox from plain pieces: never worse than a fine grid, equal to bcd_jax's."""
    pieces = PIECES[name]
    rng = np.random.default_rng(2)
    a, t = rng.normal(size=150) * 1.5, rng.normal(size=150) * 1.5
    g = rng.uniform(0.05, 5.0, size=150)
    grid = np.linspace(-6, 6, 240_001)
    sigma = np.vectorize(lambda u: ref.piecewise_value(u, pieces))(grid)
    ours = np.asarray(bcd_jax.get_activation(name).prox(jnp.asarray(a), jnp.asarray(t), jnp.asarray(g)))
    for k in range(len(a)):
        u = ref.scalar_prox_pieces(a[k], t[k], g[k], pieces)
        cost = (ref.piecewise_value(u, pieces) - a[k]) ** 2 + g[k] * (u - t[k]) ** 2
        assert cost <= np.min((sigma - a[k]) ** 2 + g[k] * (grid - t[k]) ** 2) + 1e-12
        assert abs(u - ours[k]) <= 1e-12 * max(1.0, abs(u)), (k, u, ours[k])


@pytest.mark.parametrize("name", ["sign", "step"])
def test_the_reference_prox_stays_below_a_jump_at_zero(name):
    """A target just below the jump at 0 whose level is the lower one: the best point is the last
    normal float below 0 (-tiny, as bcd_jax: XLA flushes subnormals), still on the lower piece."""
    pieces = PIECES[name]
    low_level = pieces[0][3]
    u = ref.scalar_prox_pieces(low_level, 1e-3, 1.0, pieces)  # t above the jump, a the lower level
    assert u == -np.finfo(np.float64).tiny and ref.piecewise_value(u, pieces) == low_level
    assert ref.piecewise_value(0.0, pieces) == pieces[1][3]  # right-continuous: sigma(0) is the upper level


def test_leaky_slope_reference_is_unchanged(x64):
    """The pieces path of the reference agrees with its LeakyReLU path (the functions kept working)."""
    slope = 0.3
    pieces = ((-INF, 0.0, slope, 0.0), (0.0, INF, 1.0, 0.0))
    rng = np.random.default_rng(3)
    for a, t, g in zip(rng.normal(size=50), rng.normal(size=50), rng.uniform(0.1, 3.0, size=50)):
        assert abs(ref.scalar_prox(a, t, g, slope) - ref.scalar_prox_pieces(a, t, g, pieces)) < 1e-14


def _classification(n=60, d_in=8, classes=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d_in)) * 2
    y = np.arange(n) % classes
    X = centres[y] + rng.normal(size=(n, d_in))
    return X.astype(dtype), y.astype(np.int32)


def _check_monotone(objective, rtol):
    objective = np.asarray(objective, np.float64)
    assert np.all(np.isfinite(objective))
    increase = np.diff(objective)
    allowed = rtol * np.abs(objective[:-1])
    assert np.all(increase <= allowed), (np.max(increase - allowed), objective)


# f32: the blocks are solved in float32, so F may move by its own rounding (about 1e-7 of F) at a
# point the sweep no longer changes; f64 leaves far less room.
@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("activation", [*FLAT, ["relu", "sign", "step"]])
def test_the_objective_never_increases(activation, dtype, rtol):
    X, y = _classification(dtype=dtype)
    config = bcd_jax.Config(
        network=bcd_jax.Network(depth=4, width=16, activation=activation, bias="all", loss="squared_multiclass"),
        algorithm=bcd_jax.Zeng("three"),
        hyper={"gamma": 1.0, "rho": 1.0, "alpha": 0.5, "weight_decay": 0.1},
        sweeps=12,
    )
    with jax.enable_x64(dtype == np.float64):
        result = bcd_jax.fit(X, y, config, key=jax.random.key(0), progress=None)
    assert result.history.objective.dtype == dtype
    _check_monotone(result.history.objective, rtol)
    assert result.history.objective[-1] < 0.5 * result.history.objective[1]  # and it does train


@pytest.mark.parametrize("activation", [*FLAT, ["relu", "sign", "sign"]])
def test_fit_and_predict_use_the_true_activation(activation):
    """The trained network is the deployed network: the hidden layers of predict's forward pass take
    only the activation's levels, predict equals a plain NumPy forward pass with the hard threshold,
    and the accuracy fit reports is that network's."""
    X, y = _classification()
    config = bcd_jax.Config(
        network=bcd_jax.Network(depth=4, width=16, activation=activation, bias="all", loss="squared_multiclass"),
        algorithm=bcd_jax.Zeng("three"),
        hyper={"gamma": 1.0, "rho": 1.0, "alpha": 0.5},
        sweeps=6,
    )
    result = bcd_jax.fit(X, y, config, key=jax.random.key(0), progress=None)
    network = config.resolved_network
    names = activation if isinstance(activation, list) else [activation] * 3
    hidden = hidden_forward(result.params, input_features(jnp.asarray(X), network.bias), network)
    for j, (h, name) in enumerate(zip(hidden, names), start=1):
        h = np.asarray(h)
        if name == "relu":
            assert np.all(h >= 0)
            continue
        assert np.all(np.isin(h, np.asarray(LEVELS[name], np.float32))), (j, np.unique(h))
    # predict against NumPy, layer by layer, with sigma from the plain pieces
    W = [np.asarray(w, np.float64) for w in result.params]
    h = np.asarray(X, np.float64)
    for w, name in zip(W[:-1], names):
        z = np.concatenate([h, np.ones((len(h), 1))], axis=1) @ w.T
        h = np.vectorize(lambda u, p=PIECES[name]: ref.piecewise_value(u, p))(z)
    out = np.concatenate([h, np.ones((len(h), 1))], axis=1) @ W[-1].T
    pred = np.asarray(bcd_jax.predict(result.params, X, config))
    assert_close(pred, out, 1e-4, "predict")
    accuracy = np.mean(np.argmax(pred, axis=1) == y)
    assert abs(accuracy - result.history.train_accuracy[-1]) < 1e-6
    assert abs(accuracy - bcd_jax.evaluate(result.params, X, y, config)["accuracy"]) < 1e-6


# -- annealed_three_splitting: the same network, its jumps annealed from ramps ---------------------


def _annealed(activation, *, ramp, hyper, bias="all", loss="squared", depth=4, width=4):
    network = bcd_jax.Network(depth=depth, width=width, activation=activation, bias=bias, loss=loss)
    algorithm = bcd_jax.get_algorithm("annealed_three_splitting", ramp=ramp)
    return bcd_jax.Config(network=network, algorithm=algorithm, hyper=hyper, sweeps=4)


ANNEAL_HYPER = {"gamma": 2.0, "rho": 0.6, "alpha": 0.3, "weight_decay": 0.1, "ramp_decay": 0.5, "ramp_min": 0.15}


@pytest.mark.parametrize(
    "activation,loss",
    [
        ("sign", "squared"),
        ("step", "softmax_cross_entropy"),
        ("quantized(levels=4)", "squared"),
        (["relu", "sign", "quantized(levels=4)"], "squared"),
    ],
)
def test_annealed_iterates_equal_the_reference_on_the_ramped_pieces(x64, activation, loss):
    """Ramps 0.8, 0.4, 0.2 then 0 (below ramp_min): each sweep equals the reference's three-splitting
    sweep on that ramp's pieces, and the last one the plain sweep on the staircase."""
    config = _annealed(activation, ramp=0.8, hyper=ANNEAL_HYPER, loss=loss)
    X, Y, params, state = _small_problem(config, loss, seed=4, key=2)
    n = len(X)
    pieces = _layer_pieces(activation, 4)
    W = [None] + [np.asarray(w, np.float64) for w in params]
    V, U = ref.forward(W, np.concatenate([X, np.ones((n, 1))], axis=1), 0.0, False, True, pieces=pieces)
    h = config.hyper
    grad = None if loss == "squared" else _cross_entropy_grad
    for sweep, ramp in enumerate([0.8, 0.4, 0.2, 0.0]):
        assert float(state.blocks.ramp) == pytest.approx(ramp, abs=1e-15)
        state, info = bcd_jax.sweep(state, X, Y, config)
        layer = [ref.ramped_pieces(p, ramp) for p in pieces]
        W, V, U = ref.three_splitting_sweep(
            W, V, U, Y, h.gamma, h.rho, h.alpha, h.weight_decay, 0.0, False, True, grad, pieces=layer
        )
        for j in range(1, len(W)):
            assert_close(state.blocks.W[j - 1], W[j], 1e-10, f"sweep {sweep + 1} W_{j}")
            assert_close(state.blocks.V[j - 1], V[j], 1e-10, f"sweep {sweep + 1} V_{j}")
            assert_close(state.blocks.U[j - 1], U[j], 1e-10, f"sweep {sweep + 1} U_{j}")
        assert float(info.extras.ramp) == pytest.approx(ramp, abs=1e-15)
        if loss == "squared":
            expected = ref.objective(W, V, U, Y, h.gamma, h.rho, h.weight_decay, 0.0, False, True, True, pieces=layer)
            assert_close(info.extras.end_objective, expected, 1e-10, "end objective")


def test_annealed_with_no_ramp_is_the_plain_three_splitting(x64):
    X, y = _classification(dtype=np.float64)
    hyper = {"gamma": 1.0, "rho": 1.0, "alpha": 0.5}
    network = bcd_jax.Network(depth=3, width=8, activation="sign", bias="all", loss="squared_multiclass")
    plain = bcd_jax.Config(network=network, algorithm=bcd_jax.Zeng("three"), hyper=hyper, sweeps=3)
    annealed = bcd_jax.Config(
        network=network, algorithm=bcd_jax.get_algorithm("annealed_three_splitting", ramp=0.0), hyper=hyper, sweeps=3
    )
    a = bcd_jax.fit(X, y, plain, key=jax.random.key(0), progress=None)
    b = bcd_jax.fit(X, y, annealed, key=jax.random.key(0), progress=None)
    for name in ("W", "V", "U"):
        for x, z in zip(getattr(a.state.blocks, name), getattr(b.state.blocks, name)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(z))
    np.testing.assert_array_equal(a.history.objective, b.history.objective)


@pytest.mark.parametrize("name", FLAT)
@pytest.mark.parametrize("ramp", [1.0, 0.3, 0.02])
def test_the_ramped_prox_is_exact(x64, name, ramp):
    """The ramped staircase's prox against a fine grid (and its value against the plain pieces)."""
    from bcd_jax.algorithms.annealed import ramped

    pieces = ref.ramped_pieces(PIECES[name], ramp)
    stand_in = ramped(bcd_jax.get_activation(name), ramp)
    grid = np.linspace(-5, 5, 200_001)
    sigma = np.vectorize(lambda u: ref.piecewise_value(u, pieces))(grid)
    np.testing.assert_allclose(np.asarray(stand_in(jnp.asarray(grid))), sigma, atol=1e-12)
    rng = np.random.default_rng(5)
    a, z = rng.normal(size=60) * 1.5, rng.normal(size=60) * 1.5
    weight = rng.uniform(0.05, 5.0, size=60)
    u = np.asarray(stand_in.prox(jnp.asarray(a), jnp.asarray(z), jnp.asarray(weight)))
    for k in range(len(a)):
        cost = (ref.piecewise_value(u[k], pieces) - a[k]) ** 2 + weight[k] * (u[k] - z[k]) ** 2
        assert cost <= np.min((sigma - a[k]) ** 2 + weight[k] * (grid - z[k]) ** 2) + 1e-12


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("activation", ["sign", "quantized(levels=4)"])
def test_annealed_sweeps_never_increase_the_objective_they_descend(activation, dtype, rtol):
    """Each sweep lowers F at its own ramp (extras.end_objective <= the previous entry's objective);
    the ramp follows ramp * decay^k until it drops below ramp_min, then is 0, and from there on the
    history (the true network's F) never increases."""
    X, y = _classification(dtype=dtype)
    hyper = {"gamma": 1.0, "rho": 1.0, "alpha": 0.5, "ramp_decay": 0.6, "ramp_min": 0.1}
    config = _annealed(activation, ramp=1.0, hyper=hyper, loss="squared_multiclass", width=16).replace(sweeps=10)
    with jax.enable_x64(dtype == np.float64):
        result = bcd_jax.fit(X, y, config, key=jax.random.key(0), progress=None)
    history = result.history
    before = np.asarray(history.objective[:-1], np.float64)
    assert np.all(np.asarray(history.extras.end_objective[1:]) <= before + rtol * np.abs(before))
    expected = [0.6**k if 0.6**k >= 0.1 else 0.0 for k in range(10)]
    np.testing.assert_allclose(history.extras.ramp[1:], expected, rtol=1e-6)
    exact = int(np.argmax(history.extras.ramp[1:] == 0)) + 1  # the first sweep on the true staircase
    _check_monotone(history.objective[exact:], rtol)


def test_annealed_options_are_checked():
    with pytest.raises(ValueError, match="ramp"):
        bcd_jax.get_algorithm("annealed_three_splitting", ramp=1.5)
    with pytest.raises(ValueError, match="splitting"):
        bcd_jax.algorithms.AnnealedThreeSplitting(splitting="two")
    network = bcd_jax.Network(depth=3, width=4, activation="sign", bias="all")
    for field, value in (("ramp_decay", 0.0), ("ramp_decay", 1.5), ("ramp_min", -1.0)):
        with pytest.raises(ValueError, match=f"hyper.{field}"):
            bcd_jax.Config(network=network, algorithm="annealed_three_splitting", hyper={field: value})


def test_annealed_family_round_trips_and_resumes_bit_identically(tmp_path):
    """The registry, config and checkpoint machinery carry the family and its ramp block (the common
    protocol suite runs over the registry too)."""
    from bcd_jax.config import config_from_dict
    from bcd_jax.driver.blocks import block_names, per_sample_mask

    X, y = _classification(n=30)
    hyper = {"gamma": 1.0, "rho": 1.0, "alpha": 0.5, "ramp_decay": 0.5, "ramp_min": 0.2}
    config = _annealed(["sign", "quantized(levels=4)"], ramp=0.9, hyper=hyper, loss="squared_multiclass", depth=3)
    algorithm = config.algorithm
    assert algorithm.name == "annealed_three_splitting" and "splitting" not in algorithm.describe()
    assert bcd_jax.get_algorithm(algorithm.describe()) == algorithm
    assert config_from_dict(config.to_dict()) == config
    state = bcd_jax.init_state(bcd_jax.init_params(jax.random.key(0), config, 8, 3), X, y, config)
    assert block_names(state.blocks)[-1] == "ramp"
    assert per_sample_mask(algorithm, config.resolved_network, 30, 9, 3, jnp.float32)[-1] is False
    full = bcd_jax.fit(X, y, config, key=jax.random.key(1), checkpoint_dir=tmp_path / "full", checkpoint_every=2)
    bcd_jax.fit(X, y, config.replace(sweeps=2), key=jax.random.key(1), checkpoint_dir=tmp_path / "cut")
    resumed = bcd_jax.fit(
        X, y, config, key=jax.random.key(1), checkpoint_dir=tmp_path / "cut", checkpoint_every=2, resume=True
    )
    for a, b in zip(jax.tree.leaves(full.state.blocks), jax.tree.leaves(resumed.state.blocks)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(full.history.objective, resumed.history.objective)
    np.testing.assert_allclose(full.history.extras.ramp[1:], [0.9, 0.45, 0.225, 0.0], rtol=1e-6)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "binary").glob("*.toml")), ids=lambda p: p.stem)
def test_the_binary_configs_run_from_the_command_line_and_resume(path, tmp_path):
    """configs/binary: a sign network on the digits through ``bcd-jax run``, cut after 2 sweeps and
    resumed to 3 from its checkpoint; the resumed run equals a straight 3-sweep run."""
    from bcd_jax import cli
    from bcd_jax.experiments import load_experiment

    def read_json(path):
        return json.loads(path.read_text())

    experiment = load_experiment(path)
    assert experiment.config.resolved_network.activation == "sign"
    cut, straight = tmp_path / "cut", tmp_path / "straight"
    assert cli.main(["run", str(path), "--out", str(cut), "--set", "sweeps=2", "--quiet"]) == 0
    assert cli.main(["run", "--resume", str(cut), "--set", "sweeps=3", "--quiet"]) == 0
    assert cli.main(["run", str(path), "--out", str(straight), "--set", "sweeps=3", "--quiet"]) == 0
    resumed, once = read_json(cut / "metrics.json"), read_json(straight / "metrics.json")
    assert resumed["sweeps_completed"] == once["sweeps_completed"] == 3
    assert resumed["objective"] == once["objective"] and resumed["test_accuracy"] == once["test_accuracy"] > 0.15
