"""The benchmark's building blocks: the FLOP count of a sweep and the backprop baseline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax import flops


@pytest.mark.parametrize(
    "changes",
    [dict(), dict(first_layer_form="primal"), dict(inner="exact"), dict(algorithm="relu_skip", activation="relu"), dict(bias=True)],
)
def test_closed_form_flops_match_the_traced_sweep(changes):
    n, d_in = 200, 240  # large enough that the few small terms the closed form omits are < 2%
    config = bcd_jax.Config(depth=4, width=20, k_v=20, k_w=20, **changes)
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=n, d_in=d_in)
    params = bcd_jax.init_params(jax.random.key(1), config, d_in, 1)
    state = bcd_jax.init_state(params, X, Y, config)
    # bcd_jax.sweep does the data preparation (X X^T, pinv) itself and returns diagnostics.
    counted = flops.jaxpr_flops(lambda s, X, Y: bcd_jax.sweep(s, X, Y, config), state, X, Y)
    closed = flops.sweep_flops(config, n, d_in, 1, include_diagnostics=True) + flops.prepare_flops(config, n, d_in)
    assert abs(counted - closed) <= 0.02 * closed, (counted, closed)


def test_fig1_sweep_is_dominated_by_the_first_layer_loop():
    parts = flops.sweep_flops_breakdown(bcd_jax.Config(), 500, 600, 1)
    total = sum(parts.values())
    assert 1.5e9 < total < 3e9  # about 2.2 GFLOP per sweep in the Gram form
    assert flops.uses_gram_form(bcd_jax.Config(), 500, 600)


def test_backprop_baseline_trains_the_same_network():
    optax = pytest.importorskip("optax")
    from bcd_jax.baselines import fit_backprop, mse_loss

    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=40, d_in=30)
    config = bcd_jax.Config(depth=3, width=8)
    result = fit_backprop(X, Y, config, optimizer=optax.adam(1e-2), steps=200)
    start = bcd_jax.fit(X, Y, config.replace(sweeps=1), quiet=True).history.train_mse[0]
    np.testing.assert_allclose(result.train_mse[0], start, rtol=1e-5)  # same initial network
    assert result.train_mse.shape == (201,)
    assert result.train_mse[-1] < 0.05 * result.train_mse[0]
    np.testing.assert_allclose(float(mse_loss(result.params, X, Y, config)), result.train_mse[-1], rtol=1e-5)
    residual = bcd_jax.predict(result.params, X, config) - Y
    np.testing.assert_allclose(float(jnp.mean(jnp.sum(residual**2, -1))), result.train_mse[-1], rtol=1e-5)
