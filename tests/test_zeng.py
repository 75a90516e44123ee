"""Zeng et al.'s BCD: float64 iterates against a plain per-sample reference, closed forms against
brute force, and the three-splitting objective never increases."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.algorithms.zeng import Zeng
from bcd_jax.testing import reference_zeng as ref

from helpers import assert_close

SLOPE = 0.3


def _config(splitting, *, skip, bias, loss="squared", depth=4, hyper=None):
    network = bcd_jax.Network(
        depth=depth, width=4, activation="leaky_relu", negative_slope=SLOPE, bias=bias, skip=skip, loss=loss
    )
    hyper = hyper or {"gamma": 0.7, "rho": 1.3, "alpha": 2.0, "weight_decay": 0.1}
    return bcd_jax.Config(network=network, algorithm=Zeng(splitting=splitting), hyper=hyper, sweeps=3)


def _problem(config, n=6, d_in=5, d_out=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_in))
    Y = rng.normal(size=(n, d_out))
    params = bcd_jax.init_params(jax.random.key(seed), config, d_in, d_out, dtype=jnp.float64)
    return X, Y, params


def _paper(params, X, bias):
    W = [None] + [np.asarray(w, np.float64) for w in params]
    X = np.asarray(X, np.float64)
    return W, (np.concatenate([X, np.ones((X.shape[0], 1))], axis=1) if bias else X)


def _cross_entropy_grad(v, y):
    p = np.exp(v - v.max())
    p /= p.sum()
    return p - y


CASES = list(itertools.product(("three", "two"), (False, True), (True, "all"), ("squared", "softmax_cross_entropy")))


@pytest.mark.parametrize("splitting,skip,bias,loss", CASES)
def test_iterates_equal_the_per_sample_reference(x64, splitting, skip, bias, loss):
    config = _config(splitting, skip=skip, bias=bias, loss=loss)
    X, Y, params = _problem(config)
    if loss != "squared":
        Y = np.eye(2)[np.arange(6) % 2]  # one-hot rows
    state = bcd_jax.init_state(params, X, Y, config)
    h = config.hyper
    W, Xb = _paper(params, X, bias)
    V, U = ref.forward(W, Xb, SLOPE, skip, bias == "all")
    grad = None if loss == "squared" else _cross_entropy_grad
    for sweep in range(3):
        state, info = bcd_jax.sweep(state, X, Y, config)
        if splitting == "three":
            W, V, U = ref.three_splitting_sweep(
                W, V, U, Y, h.gamma, h.rho, h.alpha, h.weight_decay, SLOPE, skip, bias == "all", grad
            )
        else:
            W, V = ref.two_splitting_sweep(W, V, Y, h.gamma, h.alpha, h.weight_decay, SLOPE, skip, bias == "all", grad)
        blocks = state.blocks
        for j in range(1, len(W)):
            assert_close(blocks.W[j - 1], W[j], 1e-10, f"sweep {sweep + 1} W_{j}")
            assert_close(blocks.V[j - 1], V[j], 1e-10, f"sweep {sweep + 1} V_{j}")
            if splitting == "three":
                assert_close(blocks.U[j - 1], U[j], 1e-10, f"sweep {sweep + 1} U_{j}")
    if loss == "squared":
        expected = ref.objective(
            W, V, U, Y, h.gamma, h.rho, h.weight_decay, SLOPE, skip, bias == "all", splitting == "three"
        )
        assert_close(info.objective, expected, 1e-10, "objective")


@pytest.mark.parametrize("slope", [0.0, SLOPE, 1.0])
def test_the_u_prox_is_the_brute_force_minimiser(x64, slope):
    rng = np.random.default_rng(1)
    a, t = rng.normal(size=200) * 2, rng.normal(size=200) * 2
    weight = rng.uniform(0.1, 5.0, size=200)
    # 0.3: the U block's prox is the activation's own (leaky_relu_prox -> Activation.prox(a, z, weight)).
    act = bcd_jax.get_activation("leaky_relu", slope)
    closed = np.asarray(act.prox(jnp.asarray(a), jnp.asarray(t), jnp.asarray(weight)))
    grid = np.linspace(-12, 12, 480_001)
    for k in range(len(a)):
        sigma = np.where(grid >= 0, grid, slope * grid)
        cost = (sigma - a[k]) ** 2 + weight[k] * (grid - t[k]) ** 2
        best = grid[np.argmin(cost)]
        closed_cost = (max(closed[k], slope * closed[k]) - a[k]) ** 2 + weight[k] * (closed[k] - t[k]) ** 2
        assert closed_cost <= cost.min() + 1e-9
        assert abs(closed[k] - best) < 1e-3


def _block_objective_is_minimal(fun, x_star, scale=1e-4, trials=200, seed=0):
    """Random perturbations never lower a convex block objective below its closed-form minimiser."""
    rng = np.random.default_rng(seed)
    base = fun(x_star)
    for _ in range(trials):
        assert fun(x_star + scale * rng.normal(size=x_star.shape)) >= base - 1e-12


def test_every_closed_form_block_minimises_its_objective(x64):
    """After each block update of one three-splitting sweep, that block minimises F (with its prox term)."""
    config = _config("three", skip=False, bias="all", depth=3)
    X, Y, params = _problem(config, seed=3)
    h = config.hyper
    W, Xb = _paper(params, X, True)
    V, U = ref.forward(W, Xb, SLOPE, False, True)
    new_W, new_V, new_U = ref.three_splitting_sweep(
        W, V, U, Y, h.gamma, h.rho, h.alpha, h.weight_decay, SLOPE, False, True
    )
    f, _ = ref.leaky(SLOPE)
    n = X.shape[0]
    one = np.ones((n, 1))
    # W_3 (output weights): rho/2 ||U_3 - W [V_2, 1]||^2 + alpha/2 ||W - W_old||^2 + lambda/2 ||W||^2.
    inputs = np.concatenate([np.array(V[2]), one], axis=1)

    def w3_objective(w):
        return (
            0.5 * h.rho * np.sum((new_U[3] - inputs @ w.T) ** 2)
            + 0.5 * h.alpha * np.sum((w - W[3]) ** 2)
            + 0.5 * h.weight_decay * np.sum(w * w)
        )

    _block_objective_is_minimal(w3_objective, new_W[3])
    # V_2: gamma/2 ||V - sigma(U_2)||^2 + rho/2 ||U_3 - W_3 [V; 1]||^2 (per sample; new U_3, W_3).

    def v2_objective(v):
        return 0.5 * h.gamma * np.sum((v - f(U[2][0])) ** 2) + 0.5 * h.rho * np.sum(
            (new_U[3][0] - new_W[3] @ np.append(v, 1.0)) ** 2
        )

    _block_objective_is_minimal(v2_objective, new_V[2][0])


@pytest.mark.parametrize("skip", [False, True])
def test_three_splitting_objective_never_increases(x64, skip):
    config = _config("three", skip=skip, bias="all", depth=4).replace(sweeps=25)
    X, Y, params = _problem(config, n=12, seed=5)
    result = bcd_jax.fit(X, Y, config, init_params=params, progress=None)
    objective = result.history.objective
    assert np.all(np.diff(objective) <= 1e-12 * np.abs(objective[:-1])), objective
    assert objective[-1] < 0.5 * objective[0]


def test_two_splitting_with_a_large_prox_weight_never_increases(x64):
    config = _config(
        "two", skip=False, bias=True, depth=4, hyper={"gamma": 1.0, "rho": 1.0, "alpha": 50.0, "weight_decay": 0.0}
    ).replace(sweeps=25)
    X, Y, params = _problem(config, n=12, seed=6)
    objective = bcd_jax.fit(X, Y, config, init_params=params, progress=None).history.objective
    assert np.all(np.diff(objective) <= 1e-12 * np.abs(objective[:-1])), objective


def test_smooth_activation_needs_the_two_splitting_form():
    network = bcd_jax.Network(depth=3, width=4, activation="tanh_shortcut")
    three = "^activation: the three-splitting U_j update is an exact prox for piecewise-linear activations"
    with pytest.raises(ValueError, match=three):
        bcd_jax.Config(network=network, algorithm=Zeng(splitting="three"))
    bcd_jax.Config(network=network, algorithm=Zeng(splitting="two"))  # accepted


def test_init_scale_scales_the_initial_weights_and_is_checked():
    network = bcd_jax.Network(depth=3, width=4, bias="all")
    base = bcd_jax.Config(network=network, algorithm=Zeng())
    doubled = base.replace(algorithm=Zeng(init_scale=2.0))
    for w, w2 in zip(
        bcd_jax.init_params(jax.random.key(0), base, 5, 2), bcd_jax.init_params(jax.random.key(0), doubled, 5, 2)
    ):
        np.testing.assert_allclose(np.asarray(w2), 2.0 * np.asarray(w), rtol=1e-6)
    with pytest.raises(ValueError, match=r"^init_scale: expected a number in \(0, inf\), got 0.0"):
        Zeng(init_scale=0)


# -- the authors' settings and the two-splitting's per-block weights ----------------------------


@pytest.mark.parametrize("skip", (False, True))
def test_jacobi_bias_step_equals_the_authors_update_per_sample(x64, skip):
    """bias_update='jacobi' is the authors' updateWb (W from the old b, b from the old W), checked
    against a plain per-sample NumPy version over 3 sweeps, from their initialisation."""
    algorithm = Zeng("three", bias_update="jacobi", weight_init="normal", init_scale=0.3, init_bias=0.1)
    network = bcd_jax.Network(depth=4, width=4, activation="relu", bias="all", skip=skip)
    config = bcd_jax.Config(network=network, algorithm=algorithm, hyper={"alpha": 1.0, "weight_decay": 0.05})
    X, Y, params = _problem(config)
    for w in params:
        np.testing.assert_array_equal(np.asarray(w)[:, -1], 0.1)  # the authors' b = 0.1
    state = bcd_jax.init_state(params, X, Y, config)
    h = config.hyper
    W, Xb = _paper(params, X, True)
    V, U = ref.forward(W, Xb, 0.0, skip, True)
    for sweep in range(3):
        state, _ = bcd_jax.sweep(state, X, Y, config)
        W, V, U = ref.three_splitting_sweep(
            W, V, U, Y, h.gamma, h.rho, h.alpha, h.weight_decay, 0.0, skip, True, bias_update="jacobi"
        )
        for j in range(1, len(W)):
            assert_close(state.blocks.W[j - 1], W[j], 1e-10, f"sweep {sweep + 1} W_{j}")
            assert_close(state.blocks.U[j - 1], U[j], 1e-10, f"sweep {sweep + 1} U_{j}")


def test_normal_initialisation_is_scale_times_a_standard_normal(x64):
    """weight_init='normal': the authors' 0.01 * randn, not scaled by the fan-in."""
    network = bcd_jax.Network(depth=3, width=400, activation="relu", bias="all")
    fan_in = bcd_jax.Config(network=network, algorithm=Zeng(init_scale=0.01))
    normal = bcd_jax.Config(network=network, algorithm=Zeng(weight_init="normal", init_scale=0.01))
    w_fan = np.asarray(bcd_jax.init_params(jax.random.key(0), fan_in, 300, 2, dtype=jnp.float64)[0])
    w_norm = np.asarray(bcd_jax.init_params(jax.random.key(0), normal, 300, 2, dtype=jnp.float64)[0])
    assert abs(w_norm.std() / 0.01 - 1) < 0.02
    assert abs(w_fan.std() * np.sqrt(301) / 0.01 - 1) < 0.02


def test_authors_options_are_checked_against_the_network():
    with pytest.raises(ValueError, match=r"bias_update: .*bias='all'"):
        bcd_jax.Config(network=bcd_jax.Network(bias=True), algorithm=Zeng(bias_update="jacobi"))
    with pytest.raises(ValueError, match=r"init_bias: .*bias='all'"):
        bcd_jax.Config(network=bcd_jax.Network(bias=False), algorithm=Zeng(init_bias=0.1))
    with pytest.raises(ValueError, match=r"prox_weights: 'lipschitz' sets the two-splitting"):
        Zeng("three", prox_weights="lipschitz")
    with pytest.raises(ValueError, match=r"weight_init: expected one of"):
        Zeng(weight_init="xavier")


def test_lipschitz_prox_weights_make_the_two_splitting_descend_where_one_alpha_diverges():
    """One shared alpha below W_1's Lipschitz constant (which grows with n) diverges; each block
    with alpha times its own constant descends at every sweep and fits the data."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    labels = (X[:, :3].sum(axis=1) > 0).astype(np.int32) + 2 * (X[:, 3] > 0)
    network = bcd_jax.Network(depth=3, width=32, activation="relu", bias="all", loss="squared_multiclass")
    shared = bcd_jax.Config(network=network, algorithm=Zeng("two"), hyper={"alpha": 2.0}, sweeps=6)
    per_block = shared.replace(algorithm=Zeng("two", prox_weights="lipschitz"), hyper={"alpha": 1.1})
    with pytest.warns(bcd_jax.BCDDivergenceWarning):
        diverged = bcd_jax.fit(X, labels, shared, progress=None)
    assert diverged.status == bcd_jax.Status.DIVERGED
    result = bcd_jax.fit(X, labels, per_block, progress=None)
    objective = result.history.objective
    assert result.status == bcd_jax.Status.BUDGET
    assert np.all(np.diff(objective) <= 1e-6 * np.abs(objective[:-1])), objective
    accuracy = result.history.train_accuracy
    assert accuracy[-1] > 0.7 and accuracy[-1] > accuracy[0] + 0.3, accuracy  # 4 classes: chance is 0.25
