"""Divergence is data: the run stops, warns with the sweep, and returns the last finite state."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import bcd_jax

from helpers import AKIYAMA, SMALL_D_IN, SMALL_D_OUT, SMALL_N, assert_close, make_data, small_config, tree_all_finite

# The paper's diagnostics; the newer optional fields (accuracy, validation) are NaN by design
# when they do not apply, so they are left out of the finiteness checks.
PAPER_FIELDS = ("objective", "output_loss", "layer_losses", "train_mse", "sv_min", "sv_max", "v_gram_max")


def _data():
    return make_data(SMALL_N, SMALL_D_IN, SMALL_D_OUT, seed=0, dtype=np.float32)


def _non_finite_fields(history, upto=None):
    bad = []
    for field in PAPER_FIELDS:
        values = np.asarray(getattr(history, field))[:upto]
        if not np.all(np.isfinite(values)):
            bad.append(f"{field}={values.tolist()}")
    return bad


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_huge_steps_warn_and_return_the_last_finite_state(algorithm):
    X, Y = _data()
    cfg = small_config(algorithm, sweeps=6, gamma=1.0, eta_v=1e3, eta_w=1e3, eta_w1=1e3)
    params = bcd_jax.init_params(jax.random.key(0), cfg, SMALL_D_IN, SMALL_D_OUT)
    with pytest.warns(bcd_jax.BCDDivergenceWarning) as record:
        result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    k = result.diverged_at
    assert isinstance(k, int) and 1 <= k <= cfg.sweeps
    messages = [str(w.message) for w in record if issubclass(w.category, bcd_jax.BCDDivergenceWarning)]
    assert len(messages) == 1 and f"sweep {k}" in messages[0], messages
    # Names what became non-finite: blocks (W_j, V_j) or, when the blocks are still finite but
    # the losses overflowed, the diagnostics.
    assert any(name in messages[0] for name in ("W_", "V_") + PAPER_FIELDS), messages
    assert result.sweeps_completed == k - 1 == int(result.state.sweep)
    assert tree_all_finite(result.state.blocks) and tree_all_finite(result.params)
    for field in PAPER_FIELDS:
        assert np.asarray(getattr(result.history, field)).shape[0] == k, field  # initial + completed sweeps
    assert not _non_finite_fields(result.history), _non_finite_fields(result.history)

    # The returned state is exactly the state after the last completed sweep.
    state = bcd_jax.init_state(params, X, Y, cfg)
    for _ in range(k - 1):
        state, _ = bcd_jax.sweep(state, X, Y, cfg)
    assert int(state.sweep) == int(result.state.sweep)
    for a, b in zip(jax.tree.leaves(result.state.blocks), jax.tree.leaves(state.blocks)):
        assert_close(a, b, 1e-5)


def test_run_freezes_the_state_at_the_first_non_finite_sweep():
    X, Y = _data()
    cfg = small_config("monotone", sweeps=6, gamma=1.0, eta_v=3.0, eta_w=3.0, eta_w1=1.0)
    params = bcd_jax.init_params(jax.random.key(1), cfg, SMALL_D_IN, SMALL_D_OUT)
    state0 = bcd_jax.init_state(params, X, Y, cfg)
    final, initial, history, completed = bcd_jax.run(state0, X, Y, cfg)
    completed = np.asarray(completed)
    m = int(completed.sum())
    assert 1 <= m < cfg.sweeps, completed  # this setting completes at least one sweep, then diverges
    assert completed.tolist() == [True] * m + [False] * (cfg.sweeps - m)
    assert not np.asarray(history.blocks_finite[m]).all()  # the sweep that failed says where
    assert int(final.sweep) == m and tree_all_finite(final.blocks)
    state = state0
    for i in range(m):
        state, info = bcd_jax.sweep(state, X, Y, cfg)
        assert_close(history.train_mse[i], info.train_mse, 1e-5)
    for a, b in zip(jax.tree.leaves(final.blocks), jax.tree.leaves(state.blocks)):
        assert_close(a, b, 1e-5)
    # fit reports the same sweep, and the blocks that became non-finite by name.
    failed = [
        name
        for name, ok in zip(["W_1", "W_2", "W_3", "W_4", "V_1", "V_2", "V_3"], np.asarray(history.blocks_finite[m]))
        if not ok
    ]
    with pytest.warns(bcd_jax.BCDDivergenceWarning, match=f"sweep {m + 1}: non-finite values in {failed[0]}\\b"):
        result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    assert result.diverged_at == m + 1


def test_overflowing_losses_are_reported_as_divergence():
    """A run whose objective overflows to inf/NaN must not be reported as a clean run.

    Here every block stays finite while W_1 grows to ~1e19, so the real network's error and
    the objective overflow; fit returned diverged_at=None, no warning, and a NaN objective.
    """
    X, Y = _data()
    cfg = small_config("relu_noskip", sweeps=12, gamma=1.0, eta_v=3.0, eta_w=3.0, eta_w1=1.0)
    params = bcd_jax.init_params(jax.random.key(0), cfg, SMALL_D_IN, SMALL_D_OUT)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    reported = any(issubclass(w.category, bcd_jax.BCDDivergenceWarning) for w in record)
    bad = _non_finite_fields(result.history)
    assert not bad or (reported and result.diverged_at is not None), (result.diverged_at, bad)
    assert not bad, bad  # the last state kept has finite diagnostics
