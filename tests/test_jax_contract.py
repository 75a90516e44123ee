"""The JAX contract: jit agrees, step sizes do not recompile, dtypes and pytrees are kept, vmap = loop."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax

from helpers import AKIYAMA, SMALL_D_IN, SMALL_D_OUT, SMALL_N, assert_close, make_data, small_config


def _setup(algorithm="monotone", dtype=np.float32, n=SMALL_N, d_in=SMALL_D_IN, d_out=SMALL_D_OUT, **overrides):
    cfg = small_config(algorithm, **overrides)
    X, Y = make_data(n, d_in, d_out, seed=11, dtype=dtype)
    params = bcd_jax.init_params(jax.random.key(2), cfg, d_in, d_out, dtype=X.dtype)
    return cfg, X, Y, params


def _avals(tree):
    return [(a.shape, a.dtype, a.weak_type) for a in jax.tree.leaves(tree)]


def _assert_trees_close(a, b, rtol):
    chex.assert_trees_all_equal_structs(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if np.issubdtype(np.asarray(y).dtype, np.floating):
            assert_close(x, y, rtol)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _with_hyper(cfg, **values):
    return cfg.with_overrides({f"hyper.{k}": v for k, v in values.items()})


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_sweep_inside_user_jit_agrees(algorithm):
    cfg, X, Y, params = _setup(algorithm)
    state = bcd_jax.init_state(params, X, Y, cfg)

    @jax.jit
    def two_sweeps(s, X, Y):
        s, _ = bcd_jax.sweep(s, X, Y, cfg)
        return bcd_jax.sweep(s, X, Y, cfg)

    jitted_state, jitted_info = two_sweeps(state, X, Y)
    plain_state, _ = bcd_jax.sweep(state, X, Y, cfg)
    plain_state, plain_info = bcd_jax.sweep(plain_state, X, Y, cfg)
    _assert_trees_close(jitted_state, plain_state, 1e-5)
    _assert_trees_close(jitted_info, plain_info, 1e-4)
    assert int(jitted_state.sweep) == 2


def test_sweep_step_sizes_do_not_recompile(compile_log):
    cfg, X, Y, params = _setup(width=3, k_v=7, k_w=5)  # a structure no other test compiles
    state = bcd_jax.init_state(params, X, Y, cfg)
    jax.block_until_ready(bcd_jax.sweep(state, X, Y, cfg))
    assert compile_log.count() >= 1  # the detector sees the first compile of this structure
    before = compile_log.count()
    out_a = bcd_jax.sweep(state, X, Y, _with_hyper(cfg, gamma=0.1, eta_v=0.2, eta_w=0.05, eta_w1=0.7))
    out_b = bcd_jax.sweep(state, X + 1.0, Y * 2.0, _with_hyper(cfg, gamma=3.0))  # new values, same shapes
    out_c = bcd_jax.sweep(state, X, Y, cfg.replace(seed=9))  # the seed is not part of a sweep either
    jax.block_until_ready((out_a, out_b, out_c))
    assert compile_log.count() == before, compile_log.messages
    # The new step sizes were used: the results differ.
    first, _ = bcd_jax.sweep(state, X, Y, cfg)
    assert not np.allclose(np.asarray(first.blocks.weights[-1]), np.asarray(out_a[0].blocks.weights[-1]))
    # Configs that differ in hyper and seed only share one structure (what a program depends on).
    assert _with_hyper(cfg, gamma=3.0).replace(seed=4).structure() == cfg.structure()
    assert cfg.with_overrides({"network.width": 4}).structure() != cfg.structure()


def test_user_jit_around_sweep_traces_once():
    """New data values (same shapes) and new states never retrace a user's jitted step."""
    cfg, X, Y, params = _setup(width=3, k_v=7, k_w=5)
    state = bcd_jax.init_state(params, X, Y, cfg)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(s, X, Y):
        return bcd_jax.sweep(s, X, Y, cfg)

    s1, _ = step(state, X, Y)
    s2, _ = step(s1, X + 1.0, Y * 2.0)
    s3, info = step(s2, jnp.asarray(X), jnp.asarray(Y))
    assert int(s3.sweep) == 3
    chex.assert_trees_all_equal_shapes_and_dtypes(s3, state)
    chex.assert_tree_all_finite(s3.blocks)
    chex.assert_type(info.objective, jnp.float32)


def test_run_and_fit_step_sizes_do_not_recompile(compile_log):
    cfg, X, Y, params = _setup(width=3, k_v=6, k_w=4, sweeps=4)
    state = bcd_jax.init_state(params, X, Y, cfg)
    jax.block_until_ready(bcd_jax.run(state, X, Y, cfg))
    after_run = compile_log.count()
    first_fit = bcd_jax.fit(X, Y, cfg, init_params=params, progress=None)
    assert after_run >= 1 and compile_log.count() > after_run  # both first calls compile, and are seen
    before = compile_log.count()
    other = _with_hyper(cfg, gamma=0.9, eta_v=0.05, eta_w=0.07, eta_w1=0.11)
    jax.block_until_ready(bcd_jax.run(state, X, Y, other))
    second_fit = bcd_jax.fit(X, Y, other, init_params=params, progress=None)
    from_seed = bcd_jax.fit(X, Y, other.replace(seed=3), progress=None)  # drawing other weights: no compile
    assert compile_log.count() == before, compile_log.messages
    assert not np.allclose(np.asarray(first_fit.params[0]), np.asarray(second_fit.params[0]))
    assert not np.allclose(np.asarray(from_seed.params[0]), np.asarray(second_fit.params[0]))


def test_sweep_reuses_the_cache_of_init_state(x64):
    """The data-only work (here X X^T of the Gram form) is done once, in init_state, and carried."""
    cfg, X, Y, params = _setup(dtype=np.float64, first_layer_form="gram")
    state = bcd_jax.init_state(params, X, Y, cfg)
    assert isinstance(state.cache, bcd_jax.algorithms.akiyama.AkiyamaCache)
    assert_close(state.cache.gram, X @ X.T, 1e-12, "X X^T")
    new, _ = bcd_jax.sweep(state, X, Y, cfg)
    chex.assert_trees_all_equal(new.cache, state.cache)
    final, *_ = bcd_jax.run(state, X, Y, cfg, num_sweeps=2)
    chex.assert_trees_all_equal(final.cache, state.cache)
    # sweep reads state.cache rather than recomputing it: a different cache gives a different W_1.
    poisoned = state._replace(cache=state.cache._replace(gram=2.0 * state.cache.gram))
    other, _ = bcd_jax.sweep(poisoned, X, Y, cfg)
    assert not np.allclose(np.asarray(other.blocks.weights[0]), np.asarray(new.blocks.weights[0]))
    np.testing.assert_array_equal(np.asarray(other.blocks.weights[1]), np.asarray(new.blocks.weights[1]))


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_float32_state_keeps_dtype_and_structure(algorithm):
    cfg, X, Y, params = _setup(algorithm)
    state = bcd_jax.init_state(params, X, Y, cfg)
    chex.assert_type(list(state.blocks.weights + state.blocks.hidden), jnp.float32)
    chex.assert_shape(list(state.blocks.hidden), (SMALL_N, 5))
    chex.assert_type(state.sweep, jnp.int32)
    new, info = bcd_jax.sweep(state, X, Y, cfg)
    chex.assert_trees_all_equal_structs(new, state)
    assert _avals(new) == _avals(state)  # shapes, dtypes and weak types
    assert not any(a.weak_type for a in jax.tree.leaves(new))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(info) if a.dtype != jnp.bool_)
    final, initial, history, completed = bcd_jax.run(state, X, Y, cfg)
    assert _avals(final) == _avals(state)
    assert completed.dtype == jnp.bool_ and completed.shape == (cfg.sweeps,)
    chex.assert_shape(history.train_mse, (cfg.sweeps,))
    chex.assert_type(history.train_mse, jnp.float32)


def test_float64_state_keeps_dtype(x64):
    cfg, X, Y, params = _setup("relu_skip", dtype=np.float64)
    state = bcd_jax.init_state(params, X, Y, cfg)
    chex.assert_type(list(state.blocks.weights + state.blocks.hidden), jnp.float64)
    new, info = bcd_jax.sweep(state, X, Y, cfg)
    assert _avals(new) == _avals(state)
    assert info.objective.dtype == jnp.float64
    result = bcd_jax.fit(X, Y, cfg, progress=None)
    assert all(w.dtype == jnp.float64 for w in result.params)
    assert _avals(result.state) == _avals(state)
    assert bcd_jax.predict(result.params, X, cfg).dtype == jnp.float64


def test_float32_data_with_float64_weights_stays_float32(x64):
    """The data's dtype decides: float64 init_params are cast to float32 data, not the reverse."""
    cfg, X, Y, params64 = _setup(dtype=np.float64)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    state = bcd_jax.init_state(params64, X32, Y32, cfg)
    chex.assert_type(list(state.blocks.weights + state.blocks.hidden), jnp.float32)
    new, _ = bcd_jax.sweep(state, X32, Y32, cfg)
    assert _avals(new) == _avals(state)


def test_integer_targets_are_cast_to_the_data_dtype():
    cfg, X, _, params = _setup(d_out=1)
    Y_int = np.arange(X.shape[0]) % 3
    state = bcd_jax.init_state(params, X, Y_int, cfg)
    new, _ = bcd_jax.sweep(state, X, Y_int, cfg)
    ref_state, _ = bcd_jax.sweep(state, X, Y_int.astype(np.float32)[:, None], cfg)
    assert new.blocks.weights[-1].dtype == jnp.float32
    _assert_trees_close(new, ref_state, 1e-6)


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_run_equals_repeated_sweeps(x64, algorithm):
    cfg, X, Y, params = _setup(algorithm, dtype=np.float64)
    state = bcd_jax.init_state(params, X, Y, cfg)
    k = 4
    final, initial, history, completed = bcd_jax.run(state, X, Y, cfg, num_sweeps=k)
    assert np.asarray(completed).tolist() == [True] * k
    _assert_trees_close(initial, bcd_jax.diagnostics(state, X, Y, cfg), 1e-12)
    s = state
    for i in range(k):
        s, info = bcd_jax.sweep(s, X, Y, cfg)
        _assert_trees_close(jax.tree.map(lambda h: h[i], history), info, 1e-12)
    _assert_trees_close(final, s, 1e-12)
    assert int(final.sweep) == k
    # The input state is not consumed (run does not donate it).
    assert int(state.sweep) == 0 and np.isfinite(np.asarray(state.blocks.hidden[0])).all()


def test_fit_leaves_the_callers_arrays_usable():
    cfg, X, Y, params = _setup()
    copies = [np.array(w) for w in params]
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    bcd_jax.fit(Xj, Yj, cfg, init_params=params, progress=None)
    for w, c in zip(params, copies):
        assert not w.is_deleted()
        np.testing.assert_array_equal(np.asarray(w), c)
    assert not Xj.is_deleted() and not Yj.is_deleted()


def _train(key, X, Y, cfg):
    """A pure function of (key, data): draw weights, build the state, run two sweeps."""
    params = bcd_jax.init_params(key, cfg, X.shape[1], Y.shape[1], dtype=X.dtype)
    state = bcd_jax.init_state(params, X, Y, cfg)
    final, _, history, completed = bcd_jax.run(state, X, Y, cfg, num_sweeps=2)
    return final, history.train_mse, completed


def test_vmap_over_seeds_and_data_equals_loop(x64):
    cfg, _, _, _ = _setup("relu_skip", dtype=np.float64)
    train = jax.jit(functools.partial(_train, cfg=cfg))  # the loop reuses one compiled program
    keys = jax.random.split(jax.random.key(0), 3)
    data = [make_data(SMALL_N, SMALL_D_IN, SMALL_D_OUT, seed=s) for s in (1, 1, 2)]  # runs 0 and 1: same data
    Xs = np.stack([d[0] for d in data])
    Ys = np.stack([d[1] for d in data])

    batched = jax.vmap(train)(keys, Xs, Ys)
    for b in range(3):
        _assert_trees_close(jax.tree.map(lambda a: a[b], batched), train(keys[b], Xs[b], Ys[b]), 1e-9)
    # Different seeds on the same data really give different runs.
    weights_1 = np.asarray(batched[0].blocks.weights[0])
    assert not np.allclose(weights_1[0], weights_1[1])


def test_clear_caches_frees_the_compiled_programs(compile_log):
    cfg, X, Y, params = _setup(width=2, k_v=2, k_w=1)  # a structure no other test compiles
    state = bcd_jax.init_state(params, X, Y, cfg)
    jax.block_until_ready(bcd_jax.sweep(state, X, Y, cfg))
    before = compile_log.count()
    jax.block_until_ready(bcd_jax.sweep(state, X, Y, cfg))
    assert compile_log.count() == before  # cached
    bcd_jax.clear_caches()
    jax.block_until_ready(bcd_jax.sweep(state, X, Y, cfg))
    assert compile_log.count() > before  # compiled again: the program was freed
