"""The JAX contract of the functional API: sweep inside the user's jit and vmap, run = sweeps, caches.

What holds for every family -- jit agrees with no jit, new numbers never recompile, dtypes are kept,
a grid equals separate runs -- is tested for each registered family in tests/test_families.py;
this module checks the functional API's composition with the user's own JAX code, on Algorithm 1.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax

from helpers import SMALL_D_IN, SMALL_D_OUT, SMALL_N, assert_close, make_data, small_config


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
            nan = np.isnan(np.asarray(y))
            np.testing.assert_array_equal(np.isnan(np.asarray(x)), nan)
            assert_close(np.where(nan, 0, x), np.where(nan, 0, y), rtol)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _with_hyper(cfg, **values):
    return cfg.with_overrides({f"hyper.{k}": v for k, v in values.items()})


def test_sweep_inside_user_jit_agrees():
    cfg, X, Y, params = _setup()
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


def test_structure_is_what_a_program_depends_on():
    """Configs that differ in their numbers, seed and stopping rules share one structure."""
    cfg, *_ = _setup()
    other = _with_hyper(cfg, gamma=3.0).replace(seed=4, stop=bcd_jax.Stop(patience=3))
    assert other.structure() == cfg.structure()
    assert cfg.with_overrides({"network.width": 4}).structure() != cfg.structure()
    assert cfg.with_overrides({"algorithm.k_v": 4}).structure() != cfg.structure()


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


def test_sweep_reuses_the_cache_of_init_state(x64):
    """The data-only work (here X X^T of the Gram form) is done once, in init_state, and carried."""
    cfg, X, Y, params = _setup(dtype=np.float64, first_layer_form="gram")
    state = bcd_jax.init_state(params, X, Y, cfg)
    assert isinstance(state.cache, bcd_jax.algorithms.akiyama.AkiyamaCache)
    assert_close(state.cache.gram, X @ X.T, 1e-12, "X X^T")
    new, _ = bcd_jax.sweep(state, X, Y, cfg)
    chex.assert_trees_all_equal(new.cache, state.cache)
    final = bcd_jax.run(state, X, Y, cfg, num_sweeps=2).state
    chex.assert_trees_all_equal(final.cache, state.cache)
    # sweep reads state.cache rather than recomputing it: a different cache gives a different W_1.
    poisoned = state._replace(cache=state.cache._replace(gram=2.0 * state.cache.gram))
    other, _ = bcd_jax.sweep(poisoned, X, Y, cfg)
    assert not np.allclose(np.asarray(other.blocks.W[0]), np.asarray(new.blocks.W[0]))
    np.testing.assert_array_equal(np.asarray(other.blocks.W[1]), np.asarray(new.blocks.W[1]))


def test_float32_data_with_float64_weights_stays_float32(x64):
    """The data's dtype decides: float64 init_params are cast to float32 data, not the reverse."""
    cfg, X, Y, params64 = _setup(dtype=np.float64)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    state = bcd_jax.init_state(params64, X32, Y32, cfg)
    chex.assert_type(list(state.blocks.W + state.blocks.V), jnp.float32)
    new, _ = bcd_jax.sweep(state, X32, Y32, cfg)
    assert _avals(new) == _avals(state)


def test_integer_labels_become_targets_of_the_data_dtype():
    """Integer labels are class rows of the data's dtype under a classification loss; a regression
    loss refuses them (it would regress on the class index)."""
    cfg, X, _, _ = _setup(d_out=1)
    labels = np.arange(X.shape[0]) % 3
    with pytest.raises(ValueError, match=r"^Y: integer labels with the regression loss 'squared'"):
        bcd_jax.init_state(bcd_jax.init_params(jax.random.key(2), cfg, SMALL_D_IN, 1), X, labels, cfg)
    cfg = cfg.with_overrides({"network.loss": "squared_multiclass"})
    params = bcd_jax.init_params(jax.random.key(2), cfg, SMALL_D_IN, 3)
    state = bcd_jax.init_state(params, X, labels, cfg)
    new, _ = bcd_jax.sweep(state, X, labels, cfg)
    ref_state, _ = bcd_jax.sweep(state, X, np.eye(3, dtype=np.float32)[labels], cfg)
    assert new.blocks.W[-1].dtype == jnp.float32
    _assert_trees_close(new, ref_state, 1e-6)


def test_run_equals_repeated_sweeps(x64, compile_log):
    cfg, X, Y, params = _setup(dtype=np.float64)
    state = bcd_jax.init_state(params, X, Y, cfg)
    k = 4
    out = bcd_jax.run(state, X, Y, cfg, num_sweeps=k)
    before = compile_log.count()
    other = bcd_jax.run(state, X, Y, _with_hyper(cfg, gamma=0.9, eta_v=0.05, eta_w=0.07, eta_w1=0.11), num_sweeps=k)
    assert compile_log.count() == before  # new numbers: the same program
    assert not np.allclose(np.asarray(other.state.blocks.W[0]), np.asarray(out.state.blocks.W[0]))
    final, initial, history, completed, status = out  # still unpackable, now with the status
    assert np.asarray(completed).tolist() == [True] * k and int(status) == bcd_jax.Status.RUNNING
    _assert_trees_close(initial, bcd_jax.record(state, X, Y, cfg), 1e-12)
    assert all(np.all(np.isnan(a)) for a in jax.tree.leaves(initial.extras))  # extras describe a sweep
    s = state
    for i in range(k):
        s, info = bcd_jax.sweep(s, X, Y, cfg)
        _assert_trees_close(jax.tree.map(lambda h: h[i], history), info, 1e-12)
    _assert_trees_close(final, s, 1e-12)
    assert int(final.sweep) == k
    # The input state is not consumed (run does not donate it).
    assert int(state.sweep) == 0 and np.isfinite(np.asarray(state.blocks.V[0])).all()


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
    out = bcd_jax.run(state, X, Y, cfg, num_sweeps=2)
    return out.state, out.history.train_mse, out.completed


def test_user_vmap_over_seeds_and_data_equals_loop(x64):
    """``jax.vmap`` of the user's own function of the functional API (the common suite's grids run
    one member at a time on CPU, where the families' LAPACK calls may not be batched)."""
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
    weights_1 = np.asarray(batched[0].blocks.W[0])
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
