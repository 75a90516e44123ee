"""Initialisation (Algorithm 2 and the Gaussian draws) and diagnostics against plain NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.algorithms import make_data
from bcd_jax.algorithms.layered import layer_gaps, output_loss, spectral_extras
from bcd_jax.algorithms.primitives import singular_value_bounding
from bcd_jax.driver.blocks import block_arrays
from bcd_jax.testing import reference_akiyama as ref

from helpers import AKIYAMA, activation_for, assert_close, config, tree_all_finite


def _matrix_with_singular_values(rng, shape, svals):
    m, k = shape
    u, _ = np.linalg.qr(rng.normal(size=(m, min(m, k))))
    v, _ = np.linalg.qr(rng.normal(size=(k, min(m, k))))
    return u @ np.diag(svals) @ v.T, u, v


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (6, 2)])
def test_singular_value_bounding_clips_values_and_keeps_vectors(x64, shape):
    rng = np.random.default_rng(0)
    k = min(shape)
    svals = np.sort(np.linspace(0.05, 3.0, k))[::-1]  # straddles [0.5, 1.5] on both sides
    w, u, v = _matrix_with_singular_values(rng, shape, svals)
    out = np.asarray(singular_value_bounding(jnp.asarray(w), 0.5, 1.5))
    assert out.shape == shape and out.dtype == np.float64
    expected = u @ np.diag(np.clip(svals, 0.5, 1.5)) @ v.T  # same singular vectors, clipped values
    assert_close(out, expected, 1e-12, "SVB(W)")
    np.testing.assert_allclose(
        np.linalg.svd(out, compute_uv=False), np.sort(np.clip(svals, 0.5, 1.5))[::-1], rtol=1e-12
    )
    # Bounds that contain every singular value leave the matrix unchanged.
    assert_close(singular_value_bounding(jnp.asarray(w), 0.01, 10.0), w, 1e-12, "SVB no-op")


def test_singular_value_bounding_float32():
    rng = np.random.default_rng(1)
    w, _, _ = _matrix_with_singular_values(rng, (4, 4), np.array([4.0, 2.0, 0.5, 0.1]))
    out = singular_value_bounding(jnp.asarray(w, jnp.float32), 0.75, 1.25)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(
        np.linalg.svd(np.asarray(out, np.float64), compute_uv=False), [1.25, 1.25, 0.75, 0.75], rtol=1e-5
    )


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_init_params_bounds_the_paper_layers(algorithm):
    """SVB hits W_2..W_L (Algorithm 1) or W_2..W_{L-1} (Algorithm 3); never W_1."""
    cfg = config(algorithm, activation=activation_for(algorithm), depth=4, width=5, svb=(2.0, 3.0))
    spec = cfg.algorithm.spec
    params = bcd_jax.init_params(jax.random.key(0), cfg, 12, 2)
    assert [tuple(w.shape) for w in params] == [(5, 12), (5, 5), (5, 5), (2, 5)]
    assert all(w.dtype == jnp.float32 for w in params)
    svals = [np.linalg.svd(np.asarray(w, np.float64), compute_uv=False) for w in params]
    # Gaussian with variance 1/fan_in: all singular values well below 2 unless bounded.
    assert svals[0].max() < 2.0
    for j in (2, 3):
        assert svals[j - 1].min() >= 2.0 - 1e-5 and svals[j - 1].max() <= 3.0 + 1e-5, (j, svals[j - 1])
    if spec.svb_output_weight:
        assert svals[3].min() >= 2.0 - 1e-5
    else:
        assert svals[3].max() < 2.0


def test_init_params_default_bounds_and_output_weight():
    cfg1 = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=6))
    cfg3 = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=6, activation="relu"), algorithm="relu_skip")
    assert cfg1.algorithm.svb_bounds == (0.75, 1.25) and cfg3.algorithm.svb_bounds == (0.0, 0.25)
    p1 = bcd_jax.init_params(jax.random.key(1), cfg1, 10, 1)
    p3 = bcd_jax.init_params(jax.random.key(1), cfg3, 10, 1)
    s1 = np.linalg.svd(np.asarray(p1[1]), compute_uv=False)
    s3 = np.linalg.svd(np.asarray(p3[1]), compute_uv=False)
    assert s1.min() >= 0.75 - 1e-5 and s1.max() <= 1.25 + 1e-5
    assert s3.max() <= 0.25 + 1e-6
    # Algorithm 1 bounds the (1, r) output weight: its one singular value is its norm.
    assert 0.75 - 1e-5 <= np.linalg.norm(np.asarray(p1[-1])) <= 1.25 + 1e-5
    # Algorithm 3 keeps the Gaussian output weight (both signs, norm ~ 1, not <= 1/4).
    assert np.linalg.norm(np.asarray(p3[-1])) > 0.25


def test_init_params_gaussian_scale_and_seeding(x64):
    cfg = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=40, activation="relu"), algorithm="relu_skip")
    a = bcd_jax.init_params(jax.random.key(3), cfg, 400, 30, dtype=jnp.float64)
    b = bcd_jax.init_params(jax.random.key(3), cfg, 400, 30, dtype=jnp.float64)
    c = bcd_jax.init_params(jax.random.key(4), cfg, 400, 30, dtype=jnp.float64)
    assert all(w.dtype == jnp.float64 for w in a)
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    assert not np.allclose(np.asarray(a[0]), np.asarray(c[0]))
    # W_1 ~ N(0, 1/d_in) (16000 entries), unbounded W_L ~ N(0, 1/r) (1200 entries).
    assert np.var(np.asarray(a[0])) * 400 == pytest.approx(1.0, rel=0.05)
    assert abs(np.mean(np.asarray(a[0]))) < 0.05 / np.sqrt(400)
    assert np.var(np.asarray(a[-1])) * 40 == pytest.approx(1.0, rel=0.15)


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_diagnostics_of_an_arbitrary_state(x64, algorithm):
    """Layer losses (with the skip term for j >= 2 under Algorithm 3), C_V and the rest, by hand."""
    rng = np.random.default_rng(7)
    n, d_in, r, d_out, L = 6, 9, 4, 2, 4
    cfg = config(algorithm, activation=activation_for(algorithm), depth=L, width=r, gamma=0.7)
    X = rng.normal(size=(n, d_in))
    Y = rng.normal(size=(n, d_out))
    weights = (
        rng.normal(size=(r, d_in)),
        rng.normal(size=(r, r)),
        rng.normal(size=(r, r)),
        rng.normal(size=(d_out, r)),
    )
    hidden = tuple(np.abs(rng.normal(size=(n, r))) for _ in range(L - 1))  # not the forward pass
    blocks = bcd_jax.LayerBlocks(tuple(map(jnp.asarray, weights)), tuple(map(jnp.asarray, hidden)))
    state = bcd_jax.BCDState(blocks, (), jnp.asarray(3, jnp.int32))  # a record needs no cache
    info = bcd_jax.record(state, X, Y, cfg)
    assert isinstance(info, bcd_jax.SweepInfo)
    spec = cfg.algorithm.spec
    act = ref.reference_activation(cfg.network.activation, cfg.network.negative_slope)
    expected = ref.diagnostics(ref.as_paper(weights), [X, *hidden], Y, act=act, spec=spec, gamma=cfg.hyper.gamma)
    # 0.3: the record of a state has NaN extras (they describe a sweep); the family's diagnostics of
    # these blocks are the functions its sweep records them with. The objective and output_loss are
    # F/n on the library's 1/2 scale: half the reference's (paper-scale) values.
    assert all(np.isnan(np.asarray(a)).all() for a in jax.tree.leaves(info.extras))
    network = cfg.resolved_network
    data = make_data(X, Y, network)
    spectral = spectral_extras(blocks, True, jnp.float64)
    got = {
        "objective": info.objective,
        "output_loss": output_loss(blocks, data, network),
        "layer_losses": layer_gaps(blocks, data, network),
        "train_mse": info.train_mse,
        "sv_min": spectral.sv_min,
        "sv_max": spectral.sv_max,
        "v_gram_max": spectral.v_gram_max,
    }
    assert set(got) == set(expected)
    for field, value in expected.items():
        assert_close(got[field], value / 2 if field in ("objective", "output_loss") else value, 1e-10, field)
    # The family's own objective of these blocks is the one recorded.
    hyper = cfg.hyper_arrays(jnp.float64)
    assert_close(cfg.algorithm.objective(blocks, data, hyper, network), expected["objective"] / 2, 1e-10, "F / n")
    assert np.asarray(got["layer_losses"]).shape == (L - 1,)
    assert np.asarray(got["sv_min"]).shape == (L,) and np.asarray(got["v_gram_max"]).shape == (L - 1,)
    assert list(block_arrays(state.blocks)) == [f"W_{j}" for j in range(1, L + 1)] + [f"V_{j}" for j in range(1, L)]
    assert tree_all_finite(state.blocks)
    assert float(np.min(np.asarray(got["layer_losses"]))) > 0  # a state that is not the forward pass


def test_diagnostics_flags_the_non_finite_block(x64):
    cfg = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=3))
    X, Y = np.ones((4, 5)) * np.arange(5), np.arange(4.0)
    params = bcd_jax.init_params(jax.random.key(0), cfg, 5, 1, dtype=jnp.float64)
    state = bcd_jax.init_state(params, X, Y, cfg)
    hidden = state.blocks.V
    bad = state._replace(blocks=state.blocks._replace(V=(hidden[0], hidden[1].at[2, 1].set(jnp.nan))))
    # 0.3: records no longer carry blocks_finite; the driver names a non-finite block from the
    # blocks pytree (its leaf names, as the divergence warning does), and the record is not finite.
    arrays = block_arrays(bad.blocks)
    finite = {name: bool(np.isfinite(np.asarray(a)).all()) for name, a in arrays.items()}
    assert finite == {"W_1": True, "W_2": True, "W_3": True, "V_1": True, "V_2": False}
    assert list(finite) == ["W_1", "W_2", "W_3", "V_1", "V_2"]
    assert not np.isfinite(float(bcd_jax.record(bad, X, Y, cfg).objective))
