"""End-to-end behaviour on small teacher problems, and predict()."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.testing import reference_akiyama as ref

from helpers import AKIYAMA, SMALL_D_IN, SMALL_D_OUT, SMALL_N, assert_close, make_data, small_config


def test_algorithm1_reaches_100x_lower_error_monotonically():
    """n <= d_in (X has full row rank, Theorem 4.1's setting): the error falls steadily."""
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=20, d_in=40, teacher_width=5)
    cfg = bcd_jax.Config(
        network=bcd_jax.Network(depth=3, width=8),
        algorithm=bcd_jax.Akiyama(k_v=20, k_w=20),
        hyper={"gamma": 0.2, "eta_v": 0.5, "eta_w": 0.3, "eta_w1": 1.0},
        sweeps=30,
    )
    result = bcd_jax.fit(X, Y, cfg, progress=None)
    mse = np.asarray(result.history.train_mse, np.float64)
    objective = np.asarray(result.history.objective, np.float64)
    assert result.status == bcd_jax.Status.BUDGET and result.diverged_at is None and mse.shape == (31,)
    assert mse[-1] <= mse[0] / 100, mse
    assert np.all(np.diff(mse) <= 1e-6 * mse[:-1]), mse  # monotone (float32 slack)
    assert np.all(np.diff(objective) <= 1e-6 * objective[:-1]), objective
    # The hidden-layer losses stay small next to the output loss (Section 6, Figure 1).
    assert float(np.max(result.history.extras.layer_losses[1:])) < mse[0]
    assert np.all(np.isnan(result.history.extras.layer_losses[0]))  # extras describe a sweep


def test_algorithm3_relu_skip_reduces_error_10x():
    X, Y = bcd_jax.teacher_problem(jax.random.key(1), n=20, d_in=40, teacher_width=5, activation="relu")
    cfg = bcd_jax.Config(
        network=bcd_jax.Network(depth=3, width=8, activation="relu"),
        algorithm=bcd_jax.Akiyama("relu_skip", k_v=20, k_w=20),
        hyper={"gamma": 0.2},
        sweeps=30,
    )
    params = bcd_jax.init_params(jax.random.key(0), cfg, 40, 1)
    w_out = np.asarray(params[-1])
    assert (w_out > 0).any() and (w_out < 0).any()
    result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    mse = np.asarray(result.history.train_mse, np.float64)
    assert result.status == bcd_jax.Status.BUDGET
    assert mse[-1] <= mse[0] / 10, mse
    np.testing.assert_array_equal(np.asarray(result.params[-1]), w_out)  # W_L is never trained
    assert all(bool((np.asarray(v) >= 0).all()) for v in result.state.blocks.V)  # projected V


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_predict_is_the_forward_pass(x64, algorithm):
    cfg = small_config(algorithm)
    X, Y = make_data(SMALL_N, SMALL_D_IN, SMALL_D_OUT, seed=4)
    params = bcd_jax.init_params(jax.random.key(3), cfg, SMALL_D_IN, SMALL_D_OUT, dtype=jnp.float64)
    spec = cfg.algorithm.spec
    act = ref.reference_activation(cfg.network.activation, cfg.network.negative_slope)
    out = bcd_jax.predict(params, X, cfg)
    assert out.shape == (SMALL_N, SMALL_D_OUT) and out.dtype == jnp.float64
    assert_close(out, ref.predict(ref.as_paper(params), X, act, spec.skip), 1e-12, "predict")
    # New inputs of another batch size.
    X_new = make_data(3, SMALL_D_IN, seed=9)[0]
    assert_close(bcd_jax.predict(params, X_new, cfg), ref.predict(ref.as_paper(params), X_new, act, spec.skip), 1e-12)
    # hidden_forward gives the same hidden layers as the reference.
    assert cfg.network.skip is None and cfg.resolved_network.skip is spec.skip  # the form the variant is written for
    hidden = bcd_jax.hidden_forward(params, X, cfg.resolved_network)
    V = ref.forward_hidden(ref.as_paper(params), X, act, spec.skip)
    for j in range(1, cfg.network.depth):
        assert_close(hidden[j - 1], V[j], 1e-12, f"h_{j}")


def test_predict_after_fit_matches_reported_train_mse():
    X, Y = make_data(SMALL_N, SMALL_D_IN, 1, seed=2, dtype=np.float32)
    cfg = small_config("monotone", sweeps=3)
    result = bcd_jax.fit(X, Y[:, 0], cfg, progress=None)  # vector targets
    pred = bcd_jax.predict(result.params, X, cfg)
    assert pred.shape == (SMALL_N, 1) and pred.dtype == jnp.float32
    mse = float(np.mean(np.sum((np.asarray(pred, np.float64) - Y) ** 2, axis=1)))
    assert mse == pytest.approx(result.train_mse, rel=1e-4)
    assert result.sweeps_completed == 3 and result.wall_time >= 0 and result.compile_time >= 0
    assert result.config == cfg


def test_teacher_problem_shapes_and_formula(x64):
    key = jax.random.key(0)
    X, Y = bcd_jax.teacher_problem(key, n=9, d_in=6, teacher_width=4, activation="relu", d_out=2, dtype=jnp.float64)
    assert X.shape == (9, 6) and Y.shape == (9, 2) and X.dtype == jnp.float64
    _, kb, ka = jax.random.split(key, 3)
    B = np.asarray(jax.random.normal(kb, (4, 6), jnp.float64)) / np.sqrt(6)
    A = np.asarray(jax.random.normal(ka, (2, 4), jnp.float64)) / np.sqrt(4)
    np.testing.assert_allclose(np.asarray(Y), np.maximum(np.asarray(X) @ B.T, 0) @ A.T, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="teacher_width"):
        bcd_jax.teacher_problem(key, n=9, d_in=6, teacher_width=0)
