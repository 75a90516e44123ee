"""Float64 exactness: bcd_jax against the plain per-sample NumPy reference (bcd_jax.testing.reference_akiyama)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.algorithms.akiyama import FIRST_LAYER_FORMS
from bcd_jax.algorithms.layered import layer_gaps
from bcd_jax.testing import reference_akiyama as ref

from helpers import (
    AKIYAMA,
    SMALL_D_IN,
    SMALL_D_OUT,
    SMALL_N,
    assert_close,
    assert_layer_blocks_match,
    small_config,
    spec_of,
    tree_all_finite,
)

RTOL = 1e-10
N, D_IN, D_OUT = SMALL_N, SMALL_D_IN, SMALL_D_OUT
# Seeds for which every W_L row has both signs (Lemma 5.1) and no ReLU pre-activation is near 0.
SEEDS = {"monotone": 0, "relu_skip": 3, "relu_noskip": 3}


def _config(algorithm, **overrides):
    return small_config(algorithm, **overrides)


def _problem(cfg, seed):
    """float64 data and the library's own initial weights for ``cfg``."""
    X, Y = make_problem_data(seed)
    params = bcd_jax.init_params(jax.random.key(seed), cfg, D_IN, D_OUT, dtype=jnp.float64)
    assert all(w.dtype == jnp.float64 for w in params)
    w_out = np.asarray(params[-1])
    assert ((w_out > 0).any(axis=1) & (w_out < 0).any(axis=1)).all(), "test seed: W_L row of one sign"
    return X, Y, params


def make_problem_data(seed):
    rng = np.random.default_rng(100 + seed)
    X = rng.normal(size=(N, D_IN))
    Y = rng.normal(size=(N, D_OUT))
    return X, Y


def _ref_kwargs(cfg, act):
    hyper = cfg.hyper
    return dict(
        act=act,
        spec=cfg.algorithm.spec,
        gamma=hyper.gamma,
        eta_v=hyper.eta_v,
        eta_w=hyper.eta_w,
        eta_w1=hyper.eta_w1,
        k_v=cfg.algorithm.k_v,
        k_w=cfg.algorithm.k_w,
    )


# The reference's diagnostics keep the paper's scale: objective = F/n = output + gamma sum(layers), with
# output = mean_i ||W_L v_i - y_i||^2. Since 0.3 the library reports F/n on its 1/2 scale (squared loss
# 1/2 ||.||^2, gamma/2 per layer term): the objective and extras.output_loss are the reference's halves;
# layer_losses, train_mse and the spectral numbers are unchanged.
_HALVED = ("objective", "output_loss")
_EXTRAS = ("output_loss", "layer_losses", "sv_min", "sv_max", "v_gram_max")


def _record_fields(info):
    """The fields the reference computes, read from a ``bcd_jax.SweepInfo`` (or a history of them)."""
    extras = info.extras
    return {
        "objective": info.objective,
        "output_loss": extras.output_loss,
        "layer_losses": extras.layer_losses,
        "train_mse": info.train_mse,
        "sv_min": extras.spectral.sv_min,
        "sv_max": extras.spectral.sv_max,
        "v_gram_max": extras.spectral.v_gram_max,
    }


def _assert_diagnostics(info, expected, index=None, *, initial=False):
    """``info`` (entry ``index`` of a history) against the reference's diagnostics of the same blocks.

    ``initial``: the record of a state no sweep produced (history entry 0): its extras describe a
    sweep, so they are NaN (0.3); the objective and the network's error are still checked.
    """
    for field, got in _record_fields(info).items():
        got = np.asarray(got)
        if index is not None:
            got = got[index]
        if initial and field in _EXTRAS:
            assert np.isnan(got).all(), field
            continue
        want = np.asarray(expected[field]) / 2 if field in _HALVED else expected[field]
        assert_close(got, want, RTOL, field)


def test_paper_switches_of_the_registered_algorithms():
    """The flags that the generic reference reads, pinned to the paper's boxes."""
    a1, a3, a3n = (spec_of(k) for k in ("monotone", "relu_skip", "relu_noskip"))
    assert (a1.skip, a1.project_nonneg, a1.train_output_weight, a1.linear_first_layer_fit) == (
        False,
        False,
        True,
        False,
    )
    assert (a3.skip, a3.project_nonneg, a3.train_output_weight, a3.linear_first_layer_fit) == (True, True, False, True)
    assert (a3n.skip, a3n.project_nonneg, a3n.train_output_weight, a3n.linear_first_layer_fit) == (
        False,
        True,
        False,
        True,
    )
    assert a1.svb_output_weight and not a3.svb_output_weight and not a3n.svb_output_weight
    assert a1.default_svb == (0.75, 1.25) and a3.default_svb == (0.0, 0.25)
    # The registry builds these variants, and the network form follows the variant's switch.
    for name, spec in (("monotone", a1), ("relu_skip", a3), ("relu_noskip", a3n)):
        algorithm = bcd_jax.ALGORITHMS[name]()
        assert isinstance(algorithm, bcd_jax.Akiyama) and algorithm.name == name and algorithm.spec == spec
        assert bcd_jax.Config(algorithm=name).resolved_network.skip is spec.skip


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_init_state_is_the_exact_forward_pass(x64, algorithm):
    cfg = _config(algorithm)
    X, Y, params = _problem(cfg, SEEDS.get(algorithm, 0))
    state = bcd_jax.init_state(params, X, Y, cfg)
    spec = cfg.algorithm.spec
    V = ref.forward_hidden(ref.as_paper(params), X, ref.reference_activation(cfg.network.activation, 0.3), spec.skip)
    assert isinstance(state.blocks, bcd_jax.LayerBlocks)
    for j in range(1, cfg.network.depth):
        assert_close(state.blocks.V[j - 1], V[j], RTOL, f"V_{j}")
        assert state.blocks.V[j - 1].dtype == jnp.float64
    for w, w0 in zip(state.blocks.W, params):
        np.testing.assert_array_equal(np.asarray(w), np.asarray(w0))
    assert int(state.sweep) == 0 and state.sweep.dtype == jnp.int32
    # At the exact initialisation every layer loss is zero and the objective is the output loss.
    # (0.3: the record of a state has NaN extras, so the layer losses are computed from the blocks;
    # the objective is F/n on the 1/2 scale, i.e. half the training MSE here.)
    data = bcd_jax.algorithms.make_data(X, Y, cfg.resolved_network)
    np.testing.assert_allclose(np.asarray(layer_gaps(state.blocks, data, cfg.resolved_network)), 0.0, atol=1e-28)
    info = bcd_jax.record(state, X, Y, cfg)
    assert np.isnan(np.asarray(info.extras.layer_losses)).all()
    assert_close(info.objective, np.asarray(info.train_mse) / 2, RTOL)


@pytest.mark.parametrize("depth,k_v,k_w", [(4, 3, 2), (2, 2, 3), (3, 0, 0)])
@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_sweep_matches_reference(x64, algorithm, depth, k_v, k_w):
    cfg = _config(algorithm, depth=depth, k_v=k_v, k_w=k_w)
    seed = SEEDS.get(algorithm, 0)
    X, Y, params = _problem(cfg, seed)
    act = ref.reference_activation(cfg.network.activation, 0.3)
    spec = cfg.algorithm.spec
    kinks = ref.Kinks()
    W = ref.as_paper(params)
    V = ref.forward_hidden(W, X, act, spec.skip, kinks)
    kw = _ref_kwargs(cfg, act)

    state = bcd_jax.init_state(params, X, Y, cfg)
    for k in range(1, cfg.sweeps + 1):
        state, info = bcd_jax.sweep(state, X, Y, cfg)
        W, V = ref.sweep(W, V, Y, kinks=kinks, **kw)
        assert int(state.sweep) == k
        assert_layer_blocks_match(state, W, V, RTOL)
        assert tree_all_finite(state.blocks)
        _assert_diagnostics(info, ref.diagnostics(W, V, Y, act=act, spec=spec, gamma=cfg.hyper.gamma))
    if cfg.network.activation == "relu":
        assert kinks.min_abs > 1e-6, "test data hit the ReLU kink; pick another seed"
    if not spec.train_output_weight:
        np.testing.assert_array_equal(np.asarray(state.blocks.W[-1]), np.asarray(params[-1]))
    if spec.project_nonneg:
        assert all(bool((np.asarray(v) >= 0).all()) for v in state.blocks.V)


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_run_and_fit_match_reference(x64, algorithm):
    cfg = _config(algorithm)
    seed = SEEDS.get(algorithm, 0)
    X, Y, params = _problem(cfg, seed)
    act = ref.reference_activation(cfg.network.activation, 0.3)
    spec = cfg.algorithm.spec
    kw = _ref_kwargs(cfg, act)
    W = ref.as_paper(params)
    V = ref.forward_hidden(W, X, act, spec.skip)
    expected = [ref.diagnostics(W, V, Y, act=act, spec=spec, gamma=cfg.hyper.gamma)]
    for _ in range(cfg.sweeps):
        W, V = ref.sweep(W, V, Y, **kw)
        expected.append(ref.diagnostics(W, V, Y, act=act, spec=spec, gamma=cfg.hyper.gamma))

    # run: one compiled scan.
    state0 = bcd_jax.init_state(params, X, Y, cfg)
    final, initial, history, completed, status = bcd_jax.run(state0, X, Y, cfg)
    assert_layer_blocks_match(final, W, V, RTOL)
    assert tree_all_finite(final.blocks)
    assert int(final.sweep) == cfg.sweeps
    assert int(status) not in (bcd_jax.Status.DIVERGED, bcd_jax.Status.INTERRUPTED)
    _assert_diagnostics(initial, expected[0], initial=True)
    assert np.asarray(completed).tolist() == [True] * cfg.sweeps
    for k in range(cfg.sweeps):
        _assert_diagnostics(history, expected[k + 1], index=k)

    # fit: the host-side wrapper, from the same initial weights.
    result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    assert result.diverged_at is None and result.sweeps_completed == cfg.sweeps
    assert result.status == bcd_jax.Status.BUDGET
    assert_layer_blocks_match(result.state, W, V, RTOL)
    for j in range(1, cfg.network.depth + 1):
        assert_close(result.params[j - 1], W[j], RTOL, f"params W_{j}")
    assert np.asarray(result.history.train_mse).shape == (cfg.sweeps + 1,)
    for k in range(cfg.sweeps + 1):
        _assert_diagnostics(result.history, expected[k], index=k, initial=k == 0)
    assert result.train_mse == pytest.approx(expected[-1]["train_mse"], rel=RTOL)


def test_fit_draws_weights_from_key_like_init_params(x64):
    """``fit(key=...)`` starts from ``init_params(key, ...)``; ``key=None`` uses ``config.seed``."""
    cfg = _config("monotone", sweeps=2).replace(seed=5)
    X, Y = make_problem_data(0)
    params = bcd_jax.init_params(jax.random.key(5), cfg, D_IN, D_OUT, dtype=jnp.float64)
    from_seed = bcd_jax.fit(X, Y, cfg, progress=None)
    from_key = bcd_jax.fit(X, Y, cfg, key=jax.random.key(5), progress=None)
    from_params = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    for a, b, c in zip(from_seed.params, from_key.params, from_params.params):
        assert a.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
        np.testing.assert_array_equal(np.asarray(b), np.asarray(c))
    other = bcd_jax.fit(X, Y, cfg, key=jax.random.key(6), progress=None)
    assert not np.allclose(np.asarray(other.params[0]), np.asarray(from_key.params[0]))


def test_user_activation_end_to_end_matches_hand_derivative(x64):
    """A user callable: the algorithm's sigma' is autodiff's, equal to the hand-written one."""

    def tanh_plus(z):
        return z + 0.5 * jnp.tanh(z)

    cfg = _config("monotone", activation=tanh_plus)
    X, Y, params = _problem(cfg, 0)
    act = ref.reference_activation("tanh_plus")
    spec = cfg.algorithm.spec
    W = ref.as_paper(params)
    V = ref.forward_hidden(W, X, act, spec.skip)
    W, V = ref.run(W, V, Y, cfg.sweeps, **_ref_kwargs(cfg, act))
    result = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    assert result.diverged_at is None
    assert_layer_blocks_match(result.state, W, V, RTOL)
    pred = bcd_jax.predict(result.params, X, cfg)
    assert_close(pred, ref.predict(W, X, act, False), RTOL, "predict")


@pytest.mark.parametrize("form", [f for f in FIRST_LAYER_FORMS if f != "auto"])
@pytest.mark.parametrize("algorithm", ["monotone", "relu_skip"])
def test_every_first_layer_form_matches_reference(x64, algorithm, form):
    """The K_W loop on W_1 (sigma-fit and linear-surrogate fit) in each of its computed forms."""
    cfg = _config(algorithm, depth=3, k_v=2, k_w=4, first_layer_form=form)
    X, Y, params = _problem(cfg, SEEDS[algorithm])
    assert cfg.algorithm.uses_gram_form(N, D_IN) is (form == "gram")
    act = ref.reference_activation(cfg.network.activation, 0.3)
    W = ref.as_paper(params)
    V = ref.forward_hidden(W, X, act, cfg.algorithm.spec.skip)
    state = bcd_jax.init_state(params, X, Y, cfg)
    for _ in range(2):
        state, _ = bcd_jax.sweep(state, X, Y, cfg)
        W, V = ref.sweep(W, V, Y, **_ref_kwargs(cfg, act))
    assert_layer_blocks_match(state, W, V, RTOL)
