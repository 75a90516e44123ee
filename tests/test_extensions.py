"""The paper's Appendix A-B extensions: losses, per-layer activations, weight decay, bias,
automatic step sizes and validation metrics."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax

from helpers import AKIYAMA, activation_for, assert_close
from helpers import config as make_config

# -- a plain reference for a two-layer network (W_1, W_2, V_1), one loss gradient per sample --


def _loss_gradient(name, p, y):
    """d loss / d pred, written out by hand for each built-in loss (one sample)."""
    if name in ("squared", "squared_multiclass"):
        return p - y
    if name == "softmax_cross_entropy":
        e = np.exp(p - p.max())
        return e / e.sum() - y
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-p)) - y
    if name == "hinge":
        true = int(np.argmax(y))
        others = p.copy()
        others[true] = -np.inf
        c = int(np.argmax(others))
        g = np.zeros_like(p)
        if 1.0 + p[c] - p[true] > 0:
            g[c], g[true] = 1.0, -1.0
        return g
    raise KeyError(name)


def _reference_two_layer(W1, W2, V1, X, Y, loss, *, slope, gamma, eta_v, eta_w, eta_w1, weight_decay, k_w, sweeps):
    W1, W2, V1 = W1.copy(), W2.copy(), V1.copy()
    n = X.shape[0]
    act = lambda z: np.where(z >= 0, z, slope * z)  # noqa: E731
    dact = lambda z: np.where(z >= 0, 1.0, slope)  # noqa: E731
    for _ in range(sweeps):
        grad = np.zeros_like(W2)
        for i in range(n):
            grad += np.outer(_loss_gradient(loss, W2 @ V1[i], Y[i]), V1[i]) / n
        W2 = W2 - eta_w * (grad + weight_decay * W2)
        for i in range(n):
            V1[i] = V1[i] - eta_v * W2.T @ _loss_gradient(loss, W2 @ V1[i], Y[i])
        for _ in range(k_w):
            grad = np.zeros_like(W1)
            for i in range(n):
                z = W1 @ X[i]
                grad += np.outer(dact(z) * (act(z) - V1[i]), X[i]) / n
            W1 = W1 - eta_w1 * (gamma * grad + weight_decay * W1)
    return W1, W2, V1


def _targets(loss, n, rng):
    task = bcd_jax.LOSSES[loss].task
    if task == "multiclass":
        return np.eye(3)[rng.integers(0, 3, n)]
    if task == "binary":
        return rng.integers(0, 2, (n, 1)).astype(np.float64)
    return rng.normal(size=(n, 2))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("loss", sorted(bcd_jax.LOSSES))
def test_output_layer_steps_use_the_loss_gradient(x64, loss, weight_decay):
    rng = np.random.default_rng(4)
    n, d_in = 9, 11
    X = rng.normal(size=(n, d_in))
    Y = _targets(loss, n, rng)
    config = bcd_jax.Config(
        network=bcd_jax.Network(depth=2, width=5, loss=loss),
        algorithm=bcd_jax.Akiyama(k_w=4, first_layer_form="primal"),
        hyper={"gamma": 0.5, "eta_v": 0.7, "eta_w": 0.6, "eta_w1": 0.4, "weight_decay": weight_decay},
    )
    params = bcd_jax.init_params(jax.random.key(0), config, d_in, Y.shape[1], dtype=jnp.float64)
    state = bcd_jax.init_state(params, X, Y, config)
    V1 = np.asarray(state.blocks.V[0])
    for _ in range(3):
        state, _ = bcd_jax.sweep(state, X, Y, config)
    W1, W2, V1 = _reference_two_layer(
        np.asarray(params[0]),
        np.asarray(params[1]),
        V1,
        X,
        Y,
        loss,
        slope=0.5,
        gamma=0.5,
        eta_v=0.7,
        eta_w=0.6,
        eta_w1=0.4,
        weight_decay=weight_decay,
        k_w=4,
        sweeps=3,
    )
    assert_close(state.blocks.W[0], W1, 1e-10, "W_1")
    assert_close(state.blocks.W[1], W2, 1e-10, "W_2")
    assert_close(state.blocks.V[0], V1, 1e-10, "V_1")


@pytest.mark.parametrize("algorithm", AKIYAMA)
def test_gram_form_with_weight_decay_gives_the_primal_iterates(x64, algorithm):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(8, 12)), rng.normal(size=(8, 1))
    config = make_config(
        algorithm, activation=activation_for(algorithm), depth=3, width=4, k_v=3, k_w=5, weight_decay=0.05
    )
    params = bcd_jax.init_params(jax.random.key(1), config, 12, 1, dtype=jnp.float64)
    out = {}
    for form in ("primal", "gram"):
        cfg = config.with_overrides({"algorithm.first_layer_form": form})
        out[form] = bcd_jax.run(bcd_jax.init_state(params, X, Y, cfg), X, Y, cfg, num_sweeps=3).state
    assert out["primal"].cache.gram is None and out["gram"].cache.gram is not None
    for a, b in zip(jax.tree.leaves(out["gram"].blocks), jax.tree.leaves(out["primal"].blocks)):
        assert_close(a, b, 1e-10)


def test_weight_decay_shrinks_the_weights():
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=30, d_in=40)
    base = bcd_jax.Config(network=bcd_jax.Network(depth=3, width=6), algorithm=bcd_jax.Akiyama(k_v=5, k_w=5), sweeps=10)
    plain = bcd_jax.fit(X, Y, base, progress=None)
    decayed = bcd_jax.fit(X, Y, base.with_overrides({"hyper.weight_decay": 0.1}), progress=None)
    assert decayed.status == bcd_jax.Status.BUDGET
    norms = [(float(jnp.linalg.norm(a)), float(jnp.linalg.norm(b))) for a, b in zip(plain.params, decayed.params)]
    assert all(decayed_norm < plain_norm for plain_norm, decayed_norm in norms), norms
    assert norms[-1][1] < 0.7 * norms[-1][0], norms
    history = decayed.history  # the penalty is reported: objective = output loss + gamma/2 layers + lambda/2 ||W||^2
    assert history.objective[-1] > history.extras.output_loss[-1]
    penalty = 0.05 * sum(float(jnp.sum(w * w)) for w in decayed.params)
    gaps = 0.5 * 0.2 * float(np.sum(history.extras.layer_losses[-1]))
    np.testing.assert_allclose(history.objective[-1], history.extras.output_loss[-1] + gaps + penalty, rtol=1e-4)


def _blobs(n, d, classes, seed=0, spread=0.4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 2.0
    labels = rng.integers(0, classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels


def test_classification_with_integer_labels_reports_accuracy():
    X, labels = _blobs(60, 8, 3)
    config = make_config(depth=3, width=10, k_v=10, k_w=10, sweeps=15, loss="softmax_cross_entropy", step_size="auto")
    result = bcd_jax.fit(X, labels, config, key=jax.random.key(0), progress=None)
    assert result.params[-1].shape == (3, 10)
    assert result.history.train_accuracy[-1] >= 0.95
    assert result.history.train_loss[-1] < 0.5 * result.history.train_loss[0]
    scores = bcd_jax.predict(result.params, X, config)
    assert scores.shape == (60, 3)
    np.testing.assert_allclose(np.mean(np.argmax(scores, 1) == labels), result.history.train_accuracy[-1], atol=1e-6)
    # One-hot rows are the same targets as integer labels.
    one_hot = bcd_jax.fit(X, np.eye(3, dtype=np.float32)[labels], config, key=jax.random.key(0), progress=None)
    np.testing.assert_array_equal(one_hot.history.train_loss, result.history.train_loss)


def test_binary_logistic_and_hinge_classify():
    X, labels = _blobs(50, 6, 2, seed=1)
    for loss, targets in (("logistic", labels), ("hinge", labels)):
        config = make_config(depth=3, width=8, k_v=10, k_w=10, sweeps=15, loss=loss, step_size="auto")
        result = bcd_jax.fit(X, targets, config, key=jax.random.key(0), progress=None)
        assert result.history.train_accuracy[-1] >= 0.95, loss
    assert bcd_jax.predict(result.params, X, config).shape == (50, 2)  # hinge: one score per class


def test_bad_classification_targets_are_named():
    X, labels = _blobs(20, 4, 3)
    config = bcd_jax.Config(network=bcd_jax.Network(depth=2, width=4, loss="softmax_cross_entropy", num_classes=3))
    with pytest.raises(ValueError, match=r"labels outside the class range \[0, 3\)"):
        bcd_jax.fit(X, labels + 1, config)
    with pytest.raises(ValueError, match="labels outside the class range"):
        bcd_jax.fit(X, labels - 1, config)
    with pytest.raises(ValueError, match="class labels must be integers"):
        bcd_jax.fit(X, labels + 0.5, config)
    with pytest.raises(ValueError, match="binary labels must be 0 or 1"):
        bcd_jax.fit(X, labels, config.with_overrides({"network.loss": "logistic", "network.num_classes": None}))
    with pytest.raises(ValueError, match="one-hot"):
        bcd_jax.fit(X, np.full((20, 3), 0.5), config)
    with pytest.raises(ValueError, match="^loss: unknown name 'cross_entropy'"):
        bcd_jax.Network(loss="cross_entropy")
    with pytest.raises(ValueError, match=r"^overrides: \[network\] loss: unknown name 'cross_entropy'"):
        bcd_jax.Config().with_overrides({"network.loss": "cross_entropy"})
    with pytest.raises(ValueError, match="^num_classes"):
        bcd_jax.Network(num_classes=1)


def test_user_loss_is_differentiated_by_autodiff(x64):
    def huber(pred, target):
        r = pred - target
        return jnp.sum(jnp.where(jnp.abs(r) < 1.0, 0.5 * r * r, jnp.abs(r) - 0.5))

    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(10, 12)), 3.0 * rng.normal(size=(10, 1))
    config = make_config(depth=3, width=5, k_v=5, k_w=5, sweeps=20, loss=huber)
    result = bcd_jax.fit(X, Y, config, progress=None)
    assert result.history.train_loss[-1] < 0.1 * result.history.train_loss[0]
    with pytest.raises(ValueError, match="^loss"):
        bcd_jax.Network(loss=lambda p, t: p - t)  # not a scalar


def test_per_layer_activations():
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=20, d_in=30)
    config = make_config(
        depth=4, width=6, k_v=5, k_w=5, sweeps=5, activation=["leaky_relu", "identity", "leaky_relu"], step_size="auto"
    )
    assert config.network.activation == ("leaky_relu", "identity", "leaky_relu")
    assert [a.name for a in config.network.layer_activations] == ["leaky_relu", "identity", "leaky_relu"]
    hash(config)  # the list became a tuple: still a static argument
    result = bcd_jax.fit(X, Y, config, progress=None)
    W = result.params
    leaky = lambda z: jnp.where(z >= 0, z, 0.5 * z)  # noqa: E731
    manual = leaky((leaky(X @ W[0].T) @ W[1].T) @ W[2].T) @ W[3].T
    np.testing.assert_allclose(bcd_jax.predict(W, X, config), manual, rtol=1e-5, atol=1e-6)
    assert result.status == bcd_jax.Status.BUDGET and result.history.train_mse[-1] < 0.1 * result.history.train_mse[0]
    with pytest.raises(ValueError, match="^activation: a per-layer list needs depth - 1 = 3"):
        bcd_jax.Network(depth=4, activation=["relu", "relu"])


def test_bias_feature_gives_w1_a_bias_column():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 5)).astype(np.float32)
    Y = (X[:, :1] + 4.0).astype(np.float32)  # an offset the bias-free layer 1 cannot produce from 0
    config = make_config(depth=3, width=8, k_v=10, k_w=30, sweeps=20, bias=True, step_size="auto")
    params = bcd_jax.init_params(jax.random.key(0), config, 5, 1)
    assert params[0].shape == (8, 6)
    result = bcd_jax.fit(X, Y, config, progress=None)
    W = result.params
    leaky = lambda z: jnp.where(z >= 0, z, 0.5 * z)  # noqa: E731
    manual = leaky(leaky(X @ W[0][:, :5].T + W[0][:, 5]) @ W[1].T) @ W[2].T
    np.testing.assert_allclose(bcd_jax.predict(W, X, config), manual, rtol=1e-5, atol=1e-5)
    assert result.history.train_mse[-1] < 1e-2 * result.history.train_mse[0]
    # Weights without the bias column: W_1 is (8, 5), so they expect d_in = 4 raw features.
    with pytest.raises(ValueError, match=r"^X: has 5 columns; the weights expect d_in = 4"):
        no_bias = config.with_overrides({"network.bias": False})
        bcd_jax.predict(bcd_jax.init_params(jax.random.key(0), no_bias, 5, 1), X, config)


@pytest.mark.parametrize("scale", [100.0, 0.01])
def test_auto_step_sizes_survive_rescaled_inputs(scale):
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=40, d_in=60)
    base = make_config(depth=4, width=8, k_v=20, k_w=20, sweeps=30)
    auto = bcd_jax.fit(
        X * scale, Y, base.with_overrides({"algorithm.step_size": "auto"}), key=jax.random.key(1), progress=None
    )
    assert auto.status == bcd_jax.Status.BUDGET
    assert auto.history.train_mse[-1] < 1e-4 * auto.history.train_mse[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bcd_jax.BCDDivergenceWarning)
        fixed = bcd_jax.fit(X * scale, Y, base, key=jax.random.key(1), progress=None)
    # Step size 1 fails there: it diverges (x100) or barely moves (x0.01).
    assert fixed.diverged_at is not None or fixed.history.train_mse[-1] > 0.5 * fixed.history.train_mse[0]


def test_auto_step_size_needs_declared_constants():
    auto = bcd_jax.Akiyama(step_size="auto")
    with pytest.raises(ValueError, match="^step_size"):
        bcd_jax.Config(network=bcd_jax.Network(activation=lambda z: z + 0.5 * jnp.tanh(z)), algorithm=auto)
    with pytest.raises(ValueError, match="^step_size"):
        bcd_jax.Akiyama(step_size="adaptive")
    smooth = bcd_jax.Activation("smooth", lambda z: z + 0.5 * jnp.tanh(z), alpha=1.0, lipschitz=1.5)
    bcd_jax.Config(network=bcd_jax.Network(activation=smooth), algorithm=auto)


def test_validation_metrics():
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=40, d_in=30)
    X_val, Y_val = bcd_jax.teacher_problem(jax.random.key(0), n=60, d_in=30)
    X_val, Y_val = X_val[40:], Y_val[40:]  # same teacher, other inputs
    config = make_config(depth=3, width=6, k_v=5, k_w=5, sweeps=5)
    result = bcd_jax.fit(X, Y, config, validation=(X_val, Y_val), progress=None)
    expected = float(jnp.mean(jnp.sum((bcd_jax.predict(result.params, X_val, config) - Y_val) ** 2, -1)))
    np.testing.assert_allclose(result.history.val_mse[-1], expected, rtol=1e-5)
    assert np.all(np.isnan(result.history.train_accuracy))  # regression
    plain = bcd_jax.fit(X, Y, config, progress=None)
    assert np.all(np.isnan(plain.history.val_mse))
    with pytest.raises(ValueError, match="validation X"):
        bcd_jax.fit(X, Y, config, validation=(X_val[:, :5], Y_val))
    with pytest.raises(ValueError, match="validation"):
        bcd_jax.fit(X, Y, config, validation=X_val)


@pytest.mark.parametrize("activation", ["smooth_leaky_relu", "tanh_shortcut"])
def test_smooth_strictly_monotone_activations_train(activation):
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=30, d_in=40)
    config = make_config(depth=3, width=8, k_v=10, k_w=10, sweeps=15, activation=activation, step_size="auto")
    result = bcd_jax.fit(X, Y, config, progress=None)
    assert result.status == bcd_jax.Status.BUDGET
    assert result.history.train_mse[-1] < 1e-2 * result.history.train_mse[0]
    act = config.network.layer_activations[0]
    assert act.alpha > 0 and act.lipschitz is not None  # Assumption 2 holds, so the theory applies


def test_integer_labels_of_many_classes_take_memory_proportional_to_n():
    """Labels become n x classes rows, never a classes x classes matrix (here that would be 40 GB)."""
    import tracemalloc

    classes = 100_000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, classes - 1])
    network = bcd_jax.Network(depth=2, width=3, loss="softmax_cross_entropy", num_classes=classes)
    config = bcd_jax.Config(
        network=network, algorithm=bcd_jax.Akiyama(k_v=1, k_w=1, spectral_diagnostics=False), sweeps=1
    )
    params = bcd_jax.init_params(jax.random.key(0), config, 3, classes)
    tracemalloc.start()
    try:
        state = bcd_jax.init_state(params, X, labels, config)
        result = bcd_jax.fit(X, labels, config, init_params=params, validation=(X, labels), progress=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak  # a few n x classes float32 copies (3.2 MB each)
    assert state.blocks.W[-1].shape == (classes, 3) and result.sweeps_completed == 1
    assert np.isfinite(result.history.val_accuracy[-1])
