"""The two speed options are the same algorithm: the Gram form of the K_W loop gives the
primal iterates, and ``inner="exact"`` is the limit of long K_V / K_W gradient loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.solver import Structure, _use_gram_form

from helpers import activation_for, assert_close, make_data


def _run(config, X, Y, params, sweeps):
    state = bcd_jax.init_state(params, X, Y, config)
    state, _, _, completed = bcd_jax.run(state, X, Y, config, num_sweeps=sweeps)
    assert bool(np.all(completed))
    return state


@pytest.mark.parametrize("algorithm", sorted(bcd_jax.ALGORITHMS))
def test_gram_form_gives_the_primal_iterates(x64, algorithm):
    X, Y = make_data(n=8, d_in=12, seed=3)
    config = bcd_jax.Config(algorithm=algorithm, activation=activation_for(algorithm), depth=3, width=4,
                            k_v=4, k_w=6, gamma=0.3, eta_w1=0.5)
    params = bcd_jax.init_params(jax.random.key(0), config, 12, 1, dtype=jnp.float64)
    primal = _run(config.replace(first_layer_form="primal"), X, Y, params, 3)
    gram = _run(config.replace(first_layer_form="gram"), X, Y, params, 3)
    for a, b, name in zip(gram.weights + gram.hidden, primal.weights + primal.hidden, ["W1", "W2", "W3", "V1", "V2"]):
        assert_close(a, b, 1e-10, name)


def test_auto_form_picks_the_cheaper_one():
    base = Structure.of(bcd_jax.Config())
    assert _use_gram_form(base, n=500, d_in=600)  # the paper's Figure 1 size: n < d_in
    assert not _use_gram_form(base, n=8192, d_in=784)
    assert not _use_gram_form(base._replace(first_layer_form="primal"), n=500, d_in=600)
    assert _use_gram_form(base._replace(first_layer_form="gram"), n=8192, d_in=784)
    assert not _use_gram_form(base._replace(inner="exact"), n=500, d_in=600)


def _long_gd_vs_exact(algorithm, n, d_in, x64_steps=4000):
    X, Y = make_data(n=n, d_in=d_in, seed=5)
    # Step sizes that make both inner loops contractions on this data.
    lam = float(np.linalg.eigvalsh(X.T @ X / n)[-1])
    config = bcd_jax.Config(algorithm=algorithm, activation=activation_for(algorithm), depth=3, width=4,
                            gamma=1.0, eta_v=0.5, eta_w=0.5, eta_w1=1.0 / lam, k_v=x64_steps, k_w=x64_steps)
    params = bcd_jax.init_params(jax.random.key(2), config, d_in, 1, dtype=jnp.float64)
    gd = _run(config, X, Y, params, 1)
    exact = _run(config.replace(inner="exact"), X, Y, params, 1)
    return gd, exact


def test_exact_is_the_limit_of_long_gd_loops_monotone(x64):
    gd, exact = _long_gd_vs_exact("monotone", n=6, d_in=10)
    for a, b, name in zip(exact.weights + exact.hidden, gd.weights + gd.hidden, ["W1", "W2", "W3", "V1", "V2"]):
        assert_close(a, b, 1e-6, name)


@pytest.mark.parametrize("n,d_in", [(6, 10), (14, 5)])
def test_exact_first_layer_is_the_gd_limit_for_the_linear_surrogate(x64, n, d_in):
    # Algorithm 3's W_1 block is linear least squares: the gd limit is the pinv solution
    # started at W_1^0, for n <= d_in (interpolation) and n > d_in (least squares) alike.
    gd, exact = _long_gd_vs_exact("relu_skip", n=n, d_in=d_in)
    assert_close(exact.weights[0], gd.weights[0], 1e-6, "W1")
    for a, b in zip(exact.hidden, gd.hidden):  # V blocks stay gd in both runs
        assert_close(a, b, 1e-6)


def test_exact_zeroes_every_hidden_layer_loss(x64):
    X, Y = make_data(n=10, d_in=16, seed=1)
    config = bcd_jax.Config(depth=4, width=5, sweeps=4, inner="exact")
    result = bcd_jax.fit(X, Y, config, key=jax.random.key(0))
    assert np.max(result.history.layer_losses[1:]) < 1e-20
    assert result.history.train_mse[-1] < 1e-6 * result.history.train_mse[0]


def test_exact_needs_an_invertible_activation():
    with pytest.raises(ValueError, match="inner"):
        bcd_jax.Config(algorithm="monotone", activation="relu", inner="exact")
    with pytest.raises(ValueError, match="inner"):
        bcd_jax.Config(activation=lambda z: z + 0.5 * jnp.tanh(z), inner="exact")
    with pytest.raises(ValueError, match="inner"):
        bcd_jax.Config(inner="newton")
    with pytest.raises(ValueError, match="first_layer_form"):
        bcd_jax.Config(first_layer_form="dual")
    # Algorithm 3 accepts it: its W_1 block is linear.
    bcd_jax.Config(algorithm="relu_skip", activation="relu", inner="exact")
