"""bcd_jax.rates: the K-step sufficient-decrease check and the rate / KL-exponent fits."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import bcd_jax
from bcd_jax import rates


def test_a_monotone_sequence_passes_with_k1_and_the_constant_is_the_smallest_ratio():
    objective = np.array([10.0, 6.0, 4.0, 3.0, 2.5])
    movement = np.array([np.nan, 2.0, 4.0, 0.5, 1.0])
    check = rates.sufficient_decrease(objective, movement)
    assert check.holds and check.window == 1 and check.monotone and check.judged == 4
    assert check.constant == pytest.approx(min(4 / 2, 2 / 4, 1 / 0.5, 0.5 / 1))
    assert check.largest_rise == 0.0


def test_a_non_monotone_sequence_needs_a_longer_window():
    # F rises every other sweep, but falls over every pair of sweeps
    objective = np.array([10.0, 11.0, 8.0, 9.0, 6.0, 7.0, 4.0])
    movement = np.ones_like(objective)
    check = rates.sufficient_decrease(objective, movement, max_window=3)
    assert check.holds and check.window == 2 and not check.monotone
    assert check.constant == pytest.approx(1.0)  # every 2-window drops 2 over a travelled 2
    assert check.largest_rise == pytest.approx(1 / 6)  # 6 -> 7
    failing = rates.sufficient_decrease(objective, movement, max_window=1)
    assert not failing.holds and failing.window == 1 and failing.constant < 0


def test_rounding_noise_at_convergence_is_not_judged():
    objective = np.array([1.0, 0.5, 0.25, 0.25 + 1e-15, 0.25])
    check = rates.sufficient_decrease(objective, np.ones(5))
    assert check.holds and check.window == 1 and check.judged == 2


def test_a_rise_without_movement_never_counts_as_sufficient():
    check = rates.sufficient_decrease(np.array([1.0, 2.0]), np.array([np.nan, 0.0]), max_window=1)
    assert not check.holds and check.constant == -np.inf


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="movement"):
        rates.sufficient_decrease(np.ones(4), np.ones(3))
    with pytest.raises(ValueError, match="max_window"):
        rates.sufficient_decrease(np.ones(4), np.ones(4), max_window=0)
    with pytest.raises(ValueError, match="reference"):
        rates.convergence_rate(np.ones(5), reference="best")


def test_a_geometric_gap_above_a_nonzero_minimum_gives_theta_one_half():
    k = np.arange(40)
    fit = rates.convergence_rate(0.5 + 2.0 * 0.8**k, reference=0.5)
    assert fit.linear and fit.kl_theta == 0.5 and fit.rho == pytest.approx(0.8, rel=1e-6)
    assert fit.reference == 0.5


def test_a_power_law_gap_gives_its_kl_exponent():
    # F - F* = k^-2 is the objective rate of theta = (1 + p) / (2 p) = 3/4
    k = np.arange(1, 200, dtype=float)
    fit = rates.convergence_rate(np.concatenate([[5.0], 1.0 + k**-2.0]), reference=1.0)
    assert fit.preferred == "power" and fit.power_p == pytest.approx(2.0, rel=1e-6)
    assert fit.kl_theta == pytest.approx(0.75)


def test_final_reference_subtracts_the_last_value():
    values = 3.0 + 0.5 ** np.arange(30)
    fit = rates.convergence_rate(values, reference="final", stop=20)
    assert fit.reference == values[-1] and fit.rho == pytest.approx(0.5, rel=1e-3)


@pytest.mark.parametrize("name", ["whole_objective", "zeng_three_splitting"])
def test_the_monotone_families_pass_with_k1_on_a_real_run(name):
    """Both families descend F block by block, so every sweep's drop is sufficient."""
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=12, d_in=20, teacher_width=4)
    bias = "all" if name.startswith("zeng") else False
    config = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=6, bias=bias), algorithm=name, sweeps=15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = bcd_jax.fit(X, Y, config, progress=None)
    report = rates.rate_report(result.history.objective, result.history.movement, start=2)
    assert report.decrease.holds and report.decrease.window == 1 and report.decrease.monotone
    assert report.decrease.constant > 0 and report.decrease.judged >= 10
    assert report.rate is not None and report.rate.rho < 1
    assert "K=1" in report.summary()
