"""The benchmark's building blocks: the FLOP count of a sweep and the backprop baseline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.benchmarking import akiyama_flops, flops

FLOPS_BASE = bcd_jax.Config(network=bcd_jax.Network(depth=4, width=20), algorithm=bcd_jax.Akiyama(k_v=20, k_w=20))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"algorithm.first_layer_form": "primal"},
        {"algorithm.inner": "exact"},
        {"algorithm.name": "relu_skip", "network.activation": "relu"},
        {"network.bias": True},
        {"algorithm.spectral_diagnostics": False},
    ],
)
def test_closed_form_flops_match_the_traced_sweep(overrides):
    n, d_in = 200, 240  # large enough that the few small terms the closed form omits are < 2%
    config = FLOPS_BASE.with_overrides(overrides)
    # The program of one sweep (with its diagnostics) and the data preparation, as compiled.
    counted = flops.traced_sweep_flops(config, n, d_in, 1)
    closed = akiyama_flops.sweep_flops(config, n, d_in, 1, include_diagnostics=True)
    assert abs(counted["step"] - closed) <= 0.02 * closed, (counted, closed)
    prepare = akiyama_flops.prepare_flops(config, n, d_in)
    assert abs(counted["prepare"] - prepare) <= 0.02 * max(prepare, 1), (counted, prepare)


def test_closed_form_flops_use_the_algorithms_gram_form_rule():
    config = FLOPS_BASE
    n, d_in = 200, 240
    primal = config.with_overrides({"algorithm.first_layer_form": "primal"})
    gram = config.with_overrides({"algorithm.first_layer_form": "gram"})
    parts = {
        c.algorithm.first_layer_form: akiyama_flops.sweep_flops_breakdown(c, n, d_in)["W_1"]
        for c in (config, primal, gram)
    }
    assert parts["auto"] == parts["gram" if config.algorithm.uses_gram_form(n, d_in) else "primal"]
    assert parts["primal"] != parts["gram"]
    assert akiyama_flops.prepare_flops(primal, n, d_in) == 0 < akiyama_flops.prepare_flops(gram, n, d_in)
    with pytest.raises(ValueError, match="config.network.loss: .*squared loss only"):
        akiyama_flops.sweep_flops(config.with_overrides({"network.loss": "logistic"}), n, d_in)


def test_fig1_sweep_is_dominated_by_the_first_layer_loop():
    parts = akiyama_flops.sweep_flops_breakdown(bcd_jax.Config(), 500, 600, 1)
    total = sum(parts.values())
    assert 1.5e9 < total < 3e9  # about 2.2 GFLOP per sweep in the Gram form
    assert bcd_jax.Config().algorithm.uses_gram_form(500, 600)
    assert parts["W_1"] > 0.5 * total


def test_backprop_baseline_trains_the_same_network():
    optax = pytest.importorskip("optax")
    from bcd_jax.baselines import fit_backprop, objective

    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=40, d_in=30)
    config = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=8))
    result = fit_backprop(X, Y, config, optimizer=optax.adam(1e-2), steps=200, loss="squared")
    curve = result.history.objective  # the minimised objective, mean_i ||f(x_i) - y_i||^2
    start = bcd_jax.fit(X, Y, config.replace(sweeps=1), progress=None).history.train_mse[0]
    np.testing.assert_allclose(curve[0], start, rtol=1e-5)  # same initial network
    assert curve.shape == (201,) and result.per == "step" and result.loss == "squared"
    assert result.iterations == 200
    assert curve[-1] < 0.05 * curve[0]
    final = curve[-1]
    np.testing.assert_allclose(float(objective(result.params, X, Y, config, loss="squared")), final, rtol=1e-5)
    residual = bcd_jax.predict(result.params, X, config) - Y
    np.testing.assert_allclose(float(jnp.mean(jnp.sum(residual**2, -1))), final, rtol=1e-5)
    np.testing.assert_allclose(result.history.train_mse[-1], final, rtol=1e-5)
    np.testing.assert_allclose(result.train_loss, final, rtol=1e-5)  # the squared network's loss, MSE scale
    assert np.all(np.isnan(result.history.val_loss)) and result.diverged_at is None


def test_backprop_baseline_mini_batches_with_the_network_loss():
    optax = pytest.importorskip("optax")
    from bcd_jax.baselines import fit_backprop, objective

    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(20, 5)).astype(np.float32)
    y, yv = rng.integers(0, 3, 60), rng.integers(0, 3, 20)
    network = bcd_jax.Network(depth=3, width=8, bias=True, loss="softmax_cross_entropy")
    config = bcd_jax.Config(network=network, seed=2)
    kwargs = dict(optimizer=optax.sgd, learning_rate=0.1, epochs=4, batch_size=16, validation=(Xv, yv))
    result = fit_backprop(X, y, config, shuffle_seed=3, **kwargs)
    assert result.history.train_loss.shape == (5,) and result.per == "epoch" and result.loss == "softmax_cross_entropy"

    # Entry 0 is bcd_jax's train_loss of the same initial network, in the same scale.
    bcd = bcd_jax.fit(X, y, config.replace(sweeps=1), validation=(Xv, yv), progress=None)
    np.testing.assert_allclose(result.history.train_loss[0], bcd.history.train_loss[0], rtol=1e-5)
    np.testing.assert_allclose(result.history.val_accuracy[0], bcd.history.val_accuracy[0], rtol=1e-5)
    np.testing.assert_allclose(result.train_loss, result.history.train_loss[-1], rtol=1e-5)
    val_acc = np.mean(np.argmax(np.asarray(bcd_jax.predict(result.params, Xv, config)), -1) == yv)
    assert result.final()["val_accuracy"] == pytest.approx(val_acc)

    # The same steps by hand: batches of 16 from a permutation per epoch, the last 12 samples of each dropped.
    Y = np.eye(3, dtype=np.float32)[y]
    params = bcd_jax.init_params(jax.random.key(2), config, 5, 3)
    grad = jax.jit(jax.grad(lambda p, a, b: objective(p, a, b, config)))
    for epoch_key in jax.random.split(jax.random.key(3), 4):
        order = np.asarray(jax.random.permutation(epoch_key, 60))[:48].reshape(3, 16)
        for idx in order:
            params = tuple(w - 0.1 * g for w, g in zip(params, grad(params, X[idx], Y[idx])))
    for got, want in zip(result.params, params):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    # Another learning rate reuses the compiled program; another seed reshuffles.
    again = fit_backprop(X, y, config, shuffle_seed=3, **{**kwargs, "learning_rate": 0.05})
    assert again.compile_time == result.compile_time and again.learning_rate == 0.05
    other = fit_backprop(X, y, config, shuffle_seed=4, **kwargs)
    assert not np.allclose(other.history.train_loss[1:], result.history.train_loss[1:])
    with pytest.raises(ValueError, match="epochs: mini-batch training"):
        fit_backprop(X, y, config, optimizer=optax.sgd(0.1), steps=5, batch_size=16)
    with pytest.raises(ValueError, match="learning_rate: the optimizer factory"):
        fit_backprop(X, y, config, optimizer=optax.sgd, steps=5)
    with pytest.raises(ValueError, match="batch_size: 100 exceeds the n = 60"):
        fit_backprop(X, y, config, optimizer=optax.sgd(0.1), epochs=1, batch_size=100)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "squared"])
def test_backprop_validation_history_is_each_iterates_validation_metric(loss):
    """history.val_*[k] is the metric of the network after k steps, as bcd_jax.fit's history reports it."""
    optax = pytest.importorskip("optax")
    from bcd_jax.baselines import fit_backprop

    rng = np.random.default_rng(1)
    X, Xv = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(size=(15, 4)).astype(np.float32)
    if loss == "squared":
        y, yv = rng.normal(size=(40, 2)).astype(np.float32), rng.normal(size=(15, 2)).astype(np.float32)
    else:
        y, yv = rng.integers(0, 3, 40), rng.integers(0, 3, 15)
    config = bcd_jax.Config(network=bcd_jax.Network(depth=2, width=6, bias=True, loss=loss), seed=1)
    kwargs = dict(optimizer=optax.adam, learning_rate=0.05, validation=(Xv, yv))
    result = fit_backprop(X, y, config, steps=3, **kwargs)
    curve = result.history.val_mse if loss == "squared" else result.history.val_accuracy
    assert curve.shape == (4,)
    params = bcd_jax.init_params(jax.random.key(1), config, 4, 2 if loss == "squared" else 3)
    for k in range(4):
        at_k = params if k == 0 else fit_backprop(X, y, config, steps=k, **kwargs).params
        pred = np.asarray(bcd_jax.predict(at_k, Xv, config))
        want = np.mean(np.sum((pred - yv) ** 2, -1)) if loss == "squared" else np.mean(pred.argmax(-1) == yv)
        assert curve[k] == pytest.approx(want, rel=1e-5, abs=1e-6)
    metric = "val_mse" if loss == "squared" else "val_accuracy"
    assert curve[-1] == pytest.approx(result.final()[metric], rel=1e-5)
    assert bcd_jax.evaluate(result.params, Xv, yv, config)[metric[4:]] == pytest.approx(curve[-1], rel=1e-5, abs=1e-6)
    without = fit_backprop(X, y, config, steps=2, optimizer=optax.adam, learning_rate=0.05)
    assert np.all(np.isnan(without.history.val_accuracy)) and np.all(np.isnan(without.history.val_loss))


def test_timing_helpers_time_calls_and_account_for_contention():
    from bcd_jax.benchmarking import timing

    meter = timing.Contention()
    assert meter.others_fraction is None  # nothing measured yet
    calls = []
    times = timing.time_calls(lambda: calls.append(1) or jnp.ones(3), 3, contention=meter)
    assert len(times) == len(calls) == 3 and all(t >= 0 for t in times)
    assert timing.best_of(lambda: jnp.ones(3), 2) >= 0
    if timing.cpu_ticks() is not None:  # Linux: /proc/stat
        assert meter.wall_s > 0 and 0 <= meter.others_fraction
    waited, _ = timing.wait_for_idle(0.0, interval=0.01)
    assert waited == 0.0
    load = timing.load_average()
    assert load is None or len(load) == 3
    with pytest.raises(ValueError, match="repeats: expected an int >= 1, got 0"):
        timing.time_calls(lambda: None, 0)
