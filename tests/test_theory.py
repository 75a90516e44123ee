"""bcd_jax.theory: the paper's formulas by hand arithmetic, the assumption and run checks, rates."""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax import theory

# A hand-checkable data set: x_i = 2 e_i in R^4 (n = 3), so s = sigma_min = sigma_max = 2, max ||x_i|| = 2.
X_HAND = 2.0 * np.eye(3, 4)
RES_HAND = np.array([1.0, -2.0, 2.0])  # R = 1 + 4 + 4 = 9, R_max = 2
LEAKY = bcd_jax.get_activation("leaky_relu", 0.5)  # alpha = 0.5, ell = 1


def test_theorem_4_1_matches_the_slides_formulas_by_hand():
    b = theory.theorem_4_1(X_HAND, RES_HAND, activation=LEAKY, depth=4, width=5, gamma=0.5, c_v=8.0, epsilon=0.01)
    alpha, ell, g, L, r, n, eps, s, x_max, R, R_max, c_v = 0.5, 1.0, 0.5, 4, 5, 3, 0.01, 2.0, 2.0, 9.0, 2.0, 8.0
    assert (b.s, b.x_norm_max, b.R, b.R_max) == pytest.approx((s, x_max, R, R_max))

    eta_v = alpha / (16 * g * ell**4)  # = 1/16
    assert b.paper_eta_v_max == b.paper_eta_v == pytest.approx(1 / 16)
    K = math.ceil(2 / eta_v * math.log(3 * R / eps))  # ceil(32 log 2700) = ceil(252.8)
    assert b.K == K == 253
    eta_w_1 = 1 / eta_v / (8 * math.sqrt(r) * c_v * K) * (alpha / 2) ** L
    assert b.paper_eta_w_1_max == pytest.approx(eta_w_1, rel=1e-12)
    assert b.paper_eta_w_2_max == pytest.approx(1 / (g * ell**4 * x_max**2)) == 0.5
    C_K = (2 / alpha) ** L * (4 * R_max * eta_v + 2 / (2 - alpha) * math.sqrt(eps))  # 256 * (0.5 + 2/15)
    assert b.C_K == pytest.approx(C_K, rel=1e-12) and C_K == pytest.approx(256 * (0.5 + 2 / 15))
    K_V = math.ceil(
        1 / (g * alpha * ell * eta_v) * math.log(48 * g * ell**2 * (L - 2) * r * n * C_K**2 / (alpha**2 * eps))
    )
    K_W = math.ceil(
        1 / (4 * g * s * alpha**2 * 0.5) * math.log(3 * ell**2 * x_max**2 * r * n * C_K**2 / (alpha**2 * s**2 * eps))
    )
    assert (b.K_V, b.K_W) == (K_V, K_W)
    assert b.w1_step_ratio == pytest.approx(g * ell**2 * 4.0 * 0.5)  # sigma_max(X)^2 = 4

    # The library's Config fields: eta_v = 2 eta_V, eta_w = 2 n eta_W^(1), eta_w1 = 2 n eta_W^(2).
    assert b.eta_v == pytest.approx(1 / 8)
    assert b.eta_w == pytest.approx(2 * n * eta_w_1, rel=1e-12)
    assert b.eta_w1 == pytest.approx(3.0)
    assert (b.sweeps, b.k_v, b.k_w) == (K, K_V, K_W)


def test_theorem_4_1_given_step_sizes_and_edge_counts():
    kwargs = dict(activation=LEAKY, depth=2, width=5, gamma=0.5, c_v=8.0)
    b = theory.theorem_4_1(X_HAND, RES_HAND, epsilon=0.01, paper_eta_v=0.01, paper_eta_w_2=0.1, **kwargs)
    assert b.K == math.ceil(2 / 0.01 * math.log(2700)) and b.paper_eta_w_2 == 0.1
    assert b.K_V == 0  # L = 2: the log's argument has the factor L - 2 = 0, no hidden V loop
    assert theory.theorem_4_1(X_HAND, RES_HAND, epsilon=100.0, **kwargs).K == 0  # 3R/eps < 1: already there
    with pytest.raises(ValueError, match="paper_eta_v: .* exceeds the theorem's bound"):
        theory.theorem_4_1(X_HAND, RES_HAND, epsilon=0.01, paper_eta_v=1.0, **kwargs)


def test_theorem_5_3_matches_the_review_copy_by_hand():
    w_out = np.array([[0.3, -0.4, 0.5, -0.1]])  # ||w_+||^2 = 0.34, ||w_-||^2 = 0.17
    b = theory.theorem_5_3(X_HAND, RES_HAND, w_out, depth=3, width=4, gamma=0.5, c_v=8.0, epsilon=0.01)
    m, W2, g, L, r, n, eps, s, x_max, R, R_max, c_v = 0.17, 0.51, 0.5, 3, 4, 3, 0.01, 2.0, 2.0, 9.0, 2.0, 8.0
    assert (b.w_plus_sq, b.w_minus_sq) == pytest.approx((0.34, m))
    assert b.paper_eta_v_max == pytest.approx(1 / (2 * m))  # as printed
    eta_v = 1 / (2 * W2)  # the default step (see the docstring)
    assert b.paper_eta_v == pytest.approx(eta_v)
    K = math.ceil(1 / (4 * eta_v * m) * math.log(3 * R / eps))
    assert b.K == K
    assert b.paper_eta_w_1_max == pytest.approx(1 / eta_v / (24 * math.sqrt(r) * c_v * K) * (2 / 3) ** L, rel=1e-12)
    assert b.paper_eta_w_2_max == pytest.approx(1 / (2 * x_max))
    C_K = (4 * R_max * eta_v + 5 * math.sqrt(eps)) * 1.5**L
    assert b.C_K == pytest.approx(C_K, rel=1e-12)
    assert b.K_V == math.ceil(3 / (4 * g * eta_v) * math.log(49 * (L - 2) * r * n * C_K**2 / (3 * eps)))
    assert b.K_W == math.ceil(1 / (4 * g * s * 0.25) * math.log(C_K**2 / eps))
    assert (b.alpha, b.ell, b.svb, b.algorithm) == (None, None, (0.0, 0.25), "relu_skip")
    # Up to the printed bound is accepted, above it is not; W_L needs both signs (Lemma 5.1).
    assert theory.theorem_5_3(X_HAND, RES_HAND, w_out, depth=3, width=4, gamma=0.5, c_v=8.0, epsilon=0.01,
                              paper_eta_v=1 / (2 * m)).paper_eta_v == pytest.approx(1 / (2 * m))  # fmt: skip
    with pytest.raises(ValueError, match="w_out: W_L needs entries of both signs"):
        theory.theorem_5_3(X_HAND, RES_HAND, np.abs(w_out), depth=3, width=4, gamma=0.5, c_v=8.0, epsilon=0.01)


def test_theorem_4_1_rejects_alpha_zero_and_unknown_constants():
    kwargs = dict(depth=3, width=4, gamma=0.2, c_v=1.0, epsilon=0.1)
    with pytest.raises(ValueError, match=r"activation: Theorem 4.1 needs alpha .* > 0.*relu.*theorem_5_3"):
        theory.theorem_4_1(X_HAND, RES_HAND, activation=bcd_jax.get_activation("relu"), **kwargs)
    relu_config = bcd_jax.Config(network=bcd_jax.Network(activation="relu", depth=3, width=4))
    with pytest.raises(ValueError, match="activation: Theorem 4.1 needs alpha"):
        theory.theorem_4_1(X_HAND, RES_HAND, relu_config, c_v=1.0, epsilon=0.1)

    def softsign(z):
        return z / (1 + jnp.abs(z))

    with pytest.raises(ValueError, match=r"activation: the constants alpha .* of \['softsign'\] are unknown"):
        theory.theorem_4_1(X_HAND, RES_HAND, activation=softsign, **kwargs)
    with pytest.raises(ValueError, match="X: Theorem 4.1 needs rank X = n"):
        theory.theorem_4_1(np.ones((3, 4)), RES_HAND, activation=LEAKY, **kwargs)
    with pytest.raises(ValueError, match="config: Theorem 4.1 is about algorithm 'monotone'"):
        relu_skip = bcd_jax.Config(network=bcd_jax.Network(activation="relu"), algorithm="relu_skip")
        theory.theorem_4_1(X_HAND, RES_HAND, relu_skip, c_v=1.0, epsilon=0.1)
    with pytest.raises(ValueError, match="residuals: "):
        theory.theorem_4_1(X_HAND, RES_HAND[:2], activation=LEAKY, **kwargs)
    with pytest.raises(ValueError, match="depth: not given"):
        theory.theorem_4_1(X_HAND, RES_HAND, activation=LEAKY, width=4, gamma=0.2, c_v=1.0, epsilon=0.1)


def test_to_config_returns_a_valid_config_with_the_theorems_values():
    network = bcd_jax.Network(activation="leaky_relu", negative_slope=0.5, depth=4, width=5)
    base = bcd_jax.Config(network=network, hyper={"gamma": 0.5}, seed=7)
    b = theory.theorem_4_1(X_HAND, RES_HAND, base, c_v=8.0, epsilon=0.01)
    cfg = b.to_config()
    assert isinstance(cfg, bcd_jax.Config)
    assert (cfg.algorithm.name, cfg.algorithm.svb_bounds, cfg.seed) == ("monotone", (0.75, 1.25), 7)
    assert (cfg.network.depth, cfg.network.width, cfg.hyper.gamma) == (4, 5, 0.5)
    assert (cfg.hyper.eta_v, cfg.hyper.eta_w, cfg.hyper.eta_w1) == (b.eta_v, b.eta_w, b.eta_w1)
    assert (cfg.algorithm.k_v, cfg.algorithm.k_w, cfg.sweeps) == (b.K_V, b.K_W, b.K)
    assert cfg.resolved_network.layer_activations[0].alpha == 0.5
    assert (cfg.network.loss, cfg.hyper.weight_decay, cfg.algorithm.step_size) == ("squared", 0.0, "fixed")
    with pytest.raises(ValueError, match="base: its activation has alpha = 1.0"):
        b.to_config(bcd_jax.Config(network=bcd_jax.Network(activation="identity")))
    # Without a Config: the activation given is carried over.
    b = theory.theorem_4_1(X_HAND, RES_HAND, activation=LEAKY, depth=4, width=5, gamma=0.5, c_v=8.0, epsilon=0.01)
    cfg = b.to_config()
    assert cfg.resolved_network.layer_activations[0].alpha == 0.5 and cfg.network.depth == 4

    b = theory.theorem_5_3(X_HAND, RES_HAND, [0.3, -0.4, 0.5, -0.1], depth=3, width=4, gamma=0.5, c_v=8.0, epsilon=0.01)
    cfg = b.to_config(bcd_jax.Config(seed=3))
    assert (cfg.algorithm.name, cfg.network.activation, cfg.algorithm.svb_bounds, cfg.seed) == (
        "relu_skip",
        "relu",
        (0.0, 0.25),
        3,
    )
    assert cfg.resolved_network.skip  # Algorithm 3's form
    assert (cfg.hyper.eta_v, cfg.hyper.eta_w, cfg.hyper.eta_w1) == (b.eta_v, b.eta_w, b.eta_w1)
    assert (cfg.algorithm.k_v, cfg.algorithm.k_w, cfg.sweeps) == (b.K_V, b.K_W, b.K)


def test_data_report_detects_rank_deficiency():
    rep = theory.data_report([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    assert (rep.n, rep.d_in, rep.rank, rep.full_row_rank, rep.n_le_d_in) == (2, 3, 2, True, True)
    assert (rep.sigma_min, rep.sigma_max, rep.x_norm_max) == pytest.approx((3.0, 4.0, 4.0))

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 8))
    X[4] = X[0] - 2 * X[1]  # a dependent row
    rep = theory.data_report(X)
    assert rep.rank == 4 and not rep.full_row_rank and rep.sigma_min < 1e-12
    # float32 data: rank judged at float32 resolution.
    low_rank = (rng.normal(size=(4, 2)) @ rng.normal(size=(2, 6))).astype(np.float32)
    assert theory.data_report(low_rank).rank == 2
    rep = theory.data_report(rng.normal(size=(6, 4)))  # n > d_in: Assumption 1 impossible
    assert (rep.n_le_d_in, rep.full_row_rank, rep.rank, rep.sigma_min) == (False, False, 4, 0.0)


@pytest.fixture(scope="module")
def tiny_run():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 16)).astype(np.float32)
    Y = rng.normal(size=(10, 1)).astype(np.float32)
    algorithm = bcd_jax.Akiyama("monotone", k_v=5, k_w=5)
    config = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=4), algorithm=algorithm, sweeps=5)
    return X, Y, config, bcd_jax.fit(X, Y, config, key=jax.random.key(0), progress=None)


def test_check_run_on_a_real_run(tiny_run):
    X, Y, config, result = tiny_run
    # 0.3: the spectral numbers are the family's extras, which describe a sweep (NaN at history entry 0):
    # check_run's rows are the sweeps 1..K.
    h = result.history.extras.spectral
    assert np.isnan(h.sv_min[0]).all() and np.isnan(h.v_gram_max[0]).all()
    sv_min, sv_max, v_gram_max = h.sv_min[1:], h.sv_max[1:], h.v_gram_max[1:]
    check = theory.check_run(result.history, config, c_v=1e6)
    assert check.band == (0.75, 1.25) and check.layers == (2,)
    assert check.sv_min.shape == check.sv_max.shape == check.inside.shape == (5, 1)
    # Singular value bounding put W_2 in [s1, s2] at initialisation (the initial weights of the same key).
    w2 = np.asarray(bcd_jax.init_params(jax.random.key(0), config, X.shape[1], Y.shape[1])[1], np.float64)
    s = np.linalg.svd(w2, compute_uv=False)
    assert s.min() >= 0.75 * (1 - 1e-4) and s.max() <= 1.25 * (1 + 1e-4)
    np.testing.assert_array_equal(check.sv_min[:, 0], sv_min[:, 1])
    expected = (sv_min[:, 1] >= 0.75 * (1 - 1e-4)) & (sv_max[:, 1] <= 1.25 * (1 + 1e-4))
    np.testing.assert_array_equal(check.inside_per_sweep, expected)
    assert check.all_inside == bool(expected.all())
    np.testing.assert_allclose(check.c_v_per_sweep, v_gram_max.max(axis=1))
    np.testing.assert_allclose(check.c_v_per_layer, v_gram_max.max(axis=0))
    assert check.c_v_empirical == pytest.approx(float(v_gram_max.max())) and check.c_v_ok
    # The spectral extras themselves (every row a sweep) give the same check.
    direct = theory.check_run(h._replace(sv_min=sv_min, sv_max=sv_max, v_gram_max=v_gram_max), config, c_v=1e6)
    np.testing.assert_array_equal(direct.inside, check.inside)
    assert direct.c_v_empirical == check.c_v_empirical
    assert theory.check_run(result.history, config, c_v=check.c_v_empirical / 2).c_v_ok is False
    silent = config.replace(algorithm=config.algorithm.replace(spectral_diagnostics=False))
    with pytest.raises(ValueError, match="config: check_run reads the spectral diagnostics"):
        theory.check_run(result.history, silent)


def test_check_run_detects_a_singular_value_leaving_the_band():
    ones = np.ones((5, 4))  # 5 history entries, L = 4: W_2, W_3 are the hidden ones
    history = types.SimpleNamespace(sv_min=0.8 * ones, sv_max=1.2 * ones, v_gram_max=np.arange(15.0).reshape(5, 3))
    assert theory.check_run(history, svb=(0.75, 1.25)).all_inside
    history.sv_min[2, 2] = 0.5  # W_3 after sweep 2
    history.sv_max[3, 1] = 1.3  # W_2 after sweep 3
    check = theory.check_run(history, bcd_jax.Config(network=bcd_jax.Network(depth=4)))
    assert not check.all_inside and check.first_exit == (2, 3) and check.layers == (2, 3)
    np.testing.assert_array_equal(check.inside_per_sweep, [True, True, False, False, True])
    assert (check.sv_min_overall, check.sv_max_overall, check.c_v_empirical) == (0.5, 1.3, 14.0)
    assert theory.check_run(history, band=(0.5, 2.0)).all_inside  # a wider band
    with pytest.raises(ValueError, match="band: give"):
        theory.check_run(history)


def test_generalization_bound_term_by_term(tiny_run):
    X, Y, config, result = tiny_run
    g = theory.generalization_bound(result.params, X, Y, config, delta=0.05)
    L, r, n, d_in = 3, 4, 10, 16
    b_x = float(np.max(np.linalg.norm(X.astype(np.float64), axis=1)))
    b_y = float(np.max(np.abs(Y)))
    M = b_y + 2**L * 1.0 ** (L - 1) * b_x
    assert (g.b_x, g.b_y, g.output_range) == pytest.approx((b_x, b_y, M))
    x_fro = float(np.linalg.norm(X.astype(np.float64)))
    assert g.complexity == pytest.approx(x_fro / n * M * math.sqrt(d_in) * L**1.5 * (2 * r) ** (L / 2) * math.log(r))
    assert g.confidence == pytest.approx(M**2 * math.sqrt(math.log(1 / 0.05) / n))
    assert g.empirical == pytest.approx(float(result.history.train_mse[-1]), rel=1e-4)
    assert g.total == pytest.approx(g.empirical + g.complexity + g.confidence)
    norms = [float(np.linalg.norm(np.asarray(w, np.float64), 2)) for w in result.params]
    trained = theory.generalization_bound(result.params, X, Y, config, delta=0.05, norms="trained")
    assert trained.norm_product == pytest.approx(np.prod(norms)) and trained.spectral_norms == pytest.approx(norms)
    with pytest.raises(ValueError, match="delta: "):
        theory.generalization_bound(result.params, X, Y, config, delta=1.5)
    with pytest.raises(ValueError, match="config: Theorem 4.3 is about Algorithm 1"):
        relu_skip = config.with_overrides({"algorithm.name": "relu_skip", "network.activation": "relu"})
        theory.generalization_bound(result.params, X, Y, relu_skip, delta=0.1)


def test_convergence_rate_recovers_a_geometric_rate():
    k = np.arange(41)
    fit = theory.convergence_rate(3.0 * 0.7**k)
    assert fit.rho == pytest.approx(0.7, abs=1e-6) and fit.r2 == pytest.approx(1.0)
    assert fit.linear and fit.preferred == "geometric" and fit.kl_theta == 0.5
    # A transient, then a geometric tail; values at the float floor are ignored.
    seq = np.maximum(0.5**k, 1e-30)
    seq[:3] = [5.0, 4.0, 3.5]
    fit = theory.convergence_rate(np.concatenate([seq, np.full(50, 1e-30)]), start=3)
    assert fit.rho == pytest.approx(0.5, abs=1e-6) and fit.indices[-1] == 40 and fit.linear
    fit32 = theory.convergence_rate((0.8 ** np.arange(30)).astype(np.float32))
    assert fit32.rho == pytest.approx(0.8, abs=1e-6)


def test_convergence_rate_prefers_a_power_law_for_sublinear_decay():
    k = np.arange(1, 61)
    fit = theory.convergence_rate(np.concatenate([[10.0], 5.0 * k**-2.0]))
    assert not fit.linear and fit.preferred == "power"
    assert (fit.power_p, fit.power_c, fit.power_r2) == pytest.approx((2.0, 5.0, 1.0))
    assert fit.kl_theta == pytest.approx(0.75)  # p = 1/(2 theta - 1)
    with pytest.raises(ValueError, match="losses: need at least 3"):
        theory.convergence_rate([1.0, 0.5, 0.25])
