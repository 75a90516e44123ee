"""Divergence is data: runs that overflow by themselves stop, warn with the sweep, and keep the last
finite state.

That ``fit`` freezes every family's last finite blocks bit for bit and names the blocks is tested for
each registered family in tests/test_families.py (with a family that poisons a chosen sweep); here,
Akiyama's Algorithm 1 and 3 overflow through their own arithmetic (huge steps), and ``run`` freezes
as ``fit`` does.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import bcd_jax
from bcd_jax.driver.blocks import block_names

from helpers import SMALL_D_IN, SMALL_D_OUT, SMALL_N, assert_close, make_data, small_config, tree_all_finite

# The paper's diagnostics (the extras' fields and the driver's); the optional fields (accuracy,
# validation) are NaN by design when they do not apply, so they are left out of the finiteness checks.
PAPER_FIELDS = ("objective", "output_loss", "layer_losses", "train_mse", "sv_min", "sv_max", "v_gram_max")


def _field(history, name):
    for where in (history, history.extras, history.extras.spectral):
        if name in where._fields:
            return np.asarray(getattr(where, name))
    raise KeyError(name)


def _data():
    return make_data(SMALL_N, SMALL_D_IN, SMALL_D_OUT, seed=0, dtype=np.float32)


def _non_finite_fields(history, start=0):
    bad = []
    for field in PAPER_FIELDS:
        values = _field(history, field)[start:]
        if not np.all(np.isfinite(values)):
            bad.append(f"{field}={values.tolist()}")
    return bad


def test_huge_steps_warn_and_return_the_last_finite_state():
    X, Y = _data()
    cfg = small_config("monotone", sweeps=6, gamma=1.0, eta_v=1e3, eta_w=1e3, eta_w1=1e3)
    params = bcd_jax.init_params(jax.random.key(0), cfg, SMALL_D_IN, SMALL_D_OUT)
    with pytest.warns(bcd_jax.BCDDivergenceWarning) as record:
        result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    k = result.diverged_at
    assert result.status == bcd_jax.Status.DIVERGED and isinstance(k, int) and 1 <= k <= cfg.sweeps
    messages = [str(w.message) for w in record if issubclass(w.category, bcd_jax.BCDDivergenceWarning)]
    assert len(messages) == 1 and f"sweep {k}" in messages[0], messages
    # Names what became non-finite: blocks (W_j, V_j) or, when the blocks are still finite but the
    # losses overflowed, the record's fields; and says what usually helps.
    assert any(name in messages[0] for name in ("W_", "V_", "objective", "train_loss", "train_mse")), messages
    assert f"returning the last finite state (after sweep {k - 1})" in messages[0]
    assert "smaller step sizes (hyper.eta_v, hyper.eta_w, hyper.eta_w1)" in messages[0]
    assert result.sweeps_completed == k - 1 == int(result.state.sweep)
    assert tree_all_finite(result.state.blocks) and tree_all_finite(result.params)
    for field in PAPER_FIELDS:
        assert _field(result.history, field).shape[0] == k, field  # initial + completed sweeps
    # Entry 0's extras are NaN (they describe a sweep); every sweep kept is finite.
    assert not _non_finite_fields(result.history, start=1), _non_finite_fields(result.history, start=1)

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
    final, initial, history, completed, status = bcd_jax.run(state0, X, Y, cfg)
    completed = np.asarray(completed)
    m = int(completed.sum())
    assert 1 <= m < cfg.sweeps, completed  # this setting completes at least one sweep, then diverges
    assert completed.tolist() == [True] * m + [False] * (cfg.sweeps - m)
    assert int(status) == bcd_jax.Status.DIVERGED
    assert int(final.sweep) == m and tree_all_finite(final.blocks)
    state = state0
    for i in range(m):
        state, info = bcd_jax.sweep(state, X, Y, cfg)
        assert_close(history.train_mse[i], info.train_mse, 1e-5)
    for a, b in zip(jax.tree.leaves(final.blocks), jax.tree.leaves(state.blocks)):
        assert_close(a, b, 1e-5)
    # The sweep that failed (sweep never freezes): which blocks it left non-finite.
    failed_state, failed_info = bcd_jax.sweep(state, X, Y, cfg)
    names = block_names(failed_state.blocks)
    failed = [n for n, a in zip(names, jax.tree.leaves(failed_state.blocks)) if not np.all(np.isfinite(a))]
    failed += [f for f in ("objective", "train_loss", "train_mse") if not np.isfinite(getattr(failed_info, f))]
    assert failed
    # fit reports the same sweep, and exactly those blocks and fields by name.
    with pytest.warns(bcd_jax.BCDDivergenceWarning, match=f"sweep {m + 1}: non-finite values in ") as record:
        result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    assert result.diverged_at == m + 1
    message = next(str(w.message) for w in record if issubclass(w.category, bcd_jax.BCDDivergenceWarning))
    named = message.split("non-finite values in ")[1].split("; returning")[0].split(", ")
    assert named == failed, (named, failed)


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
    bad = _non_finite_fields(result.history, start=1)
    assert not bad or (reported and result.diverged_at is not None), (result.diverged_at, bad)
    assert not bad, bad  # the last state kept has finite diagnostics
    assert reported == (result.status == bcd_jax.Status.DIVERGED)
