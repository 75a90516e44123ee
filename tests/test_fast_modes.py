"""The two speed options are the same algorithm: the Gram form of the K_W loop gives the
primal iterates, and ``inner="exact"`` is the limit of long K_V / K_W gradient loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax

from helpers import AKIYAMA, activation_for, assert_close, config, make_data


def _run(config, X, Y, params, sweeps):
    state = bcd_jax.init_state(params, X, Y, config)
    out = bcd_jax.run(state, X, Y, config, num_sweeps=sweeps)
    assert bool(np.all(out.completed))
    return out.state


def _blocks(state):
    return state.blocks.W + state.blocks.V


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_gram_form_gives_the_primal_iterates(x64, algorithm):
    X, Y = make_data(n=8, d_in=12, seed=3)
    cfg = config(algorithm, activation=activation_for(algorithm), depth=3, width=4, k_v=4, k_w=6, gamma=0.3, eta_w1=0.5)
    params = bcd_jax.init_params(jax.random.key(0), cfg, 12, 1, dtype=jnp.float64)
    primal = _run(cfg.with_overrides({"algorithm.first_layer_form": "primal"}), X, Y, params, 3)
    gram = _run(cfg.with_overrides({"algorithm.first_layer_form": "gram"}), X, Y, params, 3)
    assert primal.cache.gram is None and gram.cache.gram is not None  # the data-only X X^T, made once
    for a, b, name in zip(_blocks(gram), _blocks(primal), ["W1", "W2", "W3", "V1", "V2"]):
        assert_close(a, b, 1e-10, name)


def test_auto_form_picks_the_cheaper_one():
    base = bcd_jax.Akiyama()
    assert base.uses_gram_form(n=500, d_in=600)  # the paper's Figure 1 size: n < d_in
    assert not base.uses_gram_form(n=8192, d_in=784)
    assert not base.replace(first_layer_form="primal").uses_gram_form(n=500, d_in=600)
    assert base.replace(first_layer_form="gram").uses_gram_form(n=8192, d_in=784)
    assert not base.replace(inner="exact").uses_gram_form(n=500, d_in=600)
    # Reached through a Config as well.
    assert bcd_jax.Config().algorithm.uses_gram_form(500, 600)


def _long_gd_vs_exact(algorithm, n, d_in, x64_steps=4000):
    X, Y = make_data(n=n, d_in=d_in, seed=5)
    # Step sizes that make both inner loops contractions on this data.
    lam = float(np.linalg.eigvalsh(X.T @ X / n)[-1])
    cfg = config(
        algorithm,
        activation=activation_for(algorithm),
        depth=3,
        width=4,
        gamma=1.0,
        eta_v=0.5,
        eta_w=0.5,
        eta_w1=1.0 / lam,
        k_v=x64_steps,
        k_w=x64_steps,
    )
    params = bcd_jax.init_params(jax.random.key(2), cfg, d_in, 1, dtype=jnp.float64)
    gd = _run(cfg, X, Y, params, 1)
    exact = _run(cfg.with_overrides({"algorithm.inner": "exact"}), X, Y, params, 1)
    assert exact.cache.x_factor is not None and gd.cache.x_factor is None
    return gd, exact


def test_exact_is_the_limit_of_long_gd_loops_monotone(x64):
    gd, exact = _long_gd_vs_exact("monotone", n=6, d_in=10)
    for a, b, name in zip(_blocks(exact), _blocks(gd), ["W1", "W2", "W3", "V1", "V2"]):
        assert_close(a, b, 1e-6, name)


@pytest.mark.parametrize("n,d_in", [(6, 10), (14, 5)])
def test_exact_first_layer_is_the_gd_limit_for_the_linear_surrogate(x64, n, d_in):
    # Algorithm 3's W_1 block is linear least squares: the gd limit is the pinv solution
    # started at W_1^0, for n <= d_in (interpolation) and n > d_in (least squares) alike.
    gd, exact = _long_gd_vs_exact("relu_skip", n=n, d_in=d_in)
    assert_close(exact.blocks.W[0], gd.blocks.W[0], 1e-6, "W1")
    for a, b in zip(exact.blocks.V, gd.blocks.V):  # V blocks stay gd in both runs
        assert_close(a, b, 1e-6)


def test_exact_zeroes_every_hidden_layer_loss(x64):
    X, Y = make_data(n=10, d_in=16, seed=1)
    cfg = bcd_jax.Config(network=bcd_jax.Network(depth=4, width=5), algorithm=bcd_jax.Akiyama(inner="exact"), sweeps=4)
    result = bcd_jax.fit(X, Y, cfg, key=jax.random.key(0), progress=None)
    assert np.max(result.history.extras.layer_losses[1:]) < 1e-20
    assert result.history.train_mse[-1] < 1e-6 * result.history.train_mse[0]


def test_exact_needs_an_invertible_activation():
    exact = bcd_jax.Akiyama("monotone", inner="exact")
    with pytest.raises(ValueError, match="^inner"):
        bcd_jax.Config(network=bcd_jax.Network(activation="relu"), algorithm=exact)
    with pytest.raises(ValueError, match="^inner"):
        bcd_jax.Config(network=bcd_jax.Network(activation=lambda z: z + 0.5 * jnp.tanh(z)), algorithm=exact)
    with pytest.raises(ValueError, match="^inner"):  # one layer without an inverse is enough
        bcd_jax.Config(network=bcd_jax.Network(depth=3, activation=["leaky_relu", "relu"]), algorithm=exact)
    with pytest.raises(ValueError, match="^inner"):
        bcd_jax.Akiyama(inner="newton")
    with pytest.raises(ValueError, match=r"^overrides: \[algorithm\] inner: "):  # 0.3: errors name their source
        bcd_jax.Config().with_overrides({"algorithm.inner": "newton"})
    with pytest.raises(ValueError, match="^first_layer_form"):
        bcd_jax.Akiyama(first_layer_form="dual")
    with pytest.raises(ValueError, match="^hyper.weight_decay"):
        bcd_jax.Config(algorithm=exact, hyper={"weight_decay": 0.1})
    # Algorithm 3 accepts it: its W_1 block is linear.
    bcd_jax.Config(network=bcd_jax.Network(activation="relu"), algorithm=bcd_jax.Akiyama("relu_skip", inner="exact"))
