"""The activation registry: values, derivatives, declared constants, user callables."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax

# Points away from the kink at 0 that every piecewise-linear built-in has.
Z = np.concatenate([np.linspace(-3.0, -0.05, 23), np.linspace(0.05, 3.0, 23)])


@pytest.mark.parametrize("name", sorted(bcd_jax.ACTIVATIONS))
@pytest.mark.parametrize("slope", [0.5, 0.1])
def test_value_and_derivative_matches_finite_difference(x64, name, slope):
    act = bcd_jax.get_activation(name, slope)
    assert isinstance(act, bcd_jax.Activation)
    z = jnp.asarray(Z)
    value, deriv = act.value_and_derivative(z)
    assert value.dtype == jnp.float64 and deriv.dtype == jnp.float64 and value.shape == z.shape
    np.testing.assert_array_equal(np.asarray(value), np.asarray(act(z)))
    h = 1e-6
    fd = (np.asarray(act(z + h)) - np.asarray(act(z - h))) / (2 * h)
    np.testing.assert_allclose(np.asarray(deriv), fd, rtol=1e-7, atol=1e-8)
    # Assumption 2's declared constants hold on the sample: alpha <= sigma' and |sigma'| <= ell.
    if act.alpha is not None:
        assert np.all(np.asarray(deriv) >= act.alpha - 1e-12)
    if act.lipschitz is not None:
        assert np.all(np.abs(np.asarray(deriv)) <= act.lipschitz + 1e-12)
        assert np.all(np.abs(np.diff(np.asarray(value))) <= act.lipschitz * np.diff(Z) + 1e-12)
    # A declared inverse really inverts sigma.
    inverse = getattr(act, "inverse", None)
    if inverse is not None:
        np.testing.assert_allclose(np.asarray(inverse(act(z))), Z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(bcd_jax.ACTIVATIONS))
def test_activation_is_elementwise_and_keeps_float32(name):
    act = bcd_jax.get_activation(name)
    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    value, deriv = act.value_and_derivative(z)
    assert value.dtype == jnp.float32 and deriv.dtype == jnp.float32 and value.shape == (3, 4)
    flat_value, flat_deriv = act.value_and_derivative(z.reshape(-1))
    np.testing.assert_array_equal(np.asarray(value).reshape(-1), np.asarray(flat_value))
    np.testing.assert_array_equal(np.asarray(deriv).reshape(-1), np.asarray(flat_deriv))


def test_builtin_formulas(x64):
    z = jnp.asarray([-2.0, -0.5, 0.0, 0.5, 2.0])
    leaky, d_leaky = bcd_jax.get_activation("leaky_relu", 0.3).value_and_derivative(z)
    np.testing.assert_allclose(np.asarray(leaky), [-0.6, -0.15, 0.0, 0.5, 2.0], rtol=1e-15)
    np.testing.assert_allclose(np.asarray(d_leaky), [0.3, 0.3, 1.0, 1.0, 1.0])  # slope 1 at the kink
    relu, d_relu = bcd_jax.get_activation("relu").value_and_derivative(z)
    np.testing.assert_allclose(np.asarray(relu), [0.0, 0.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(np.asarray(d_relu)[[0, 1, 3, 4]], [0.0, 0.0, 1.0, 1.0])
    assert bcd_jax.get_activation("leaky_relu", 0.3).alpha == 0.3
    assert bcd_jax.get_activation("relu").alpha == 0.0


def test_user_callable_derivative_is_autodiff(x64):
    def fn(z):
        return z + 0.5 * jnp.tanh(z)

    act = bcd_jax.get_activation(fn)
    assert act.name == "fn" and act.alpha is None and act.lipschitz is None
    z = jnp.linspace(-3.0, 3.0, 13)
    value, deriv = act.value_and_derivative(z)
    np.testing.assert_allclose(np.asarray(value), np.asarray(fn(z)), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(deriv), np.asarray(jax.vmap(jax.grad(fn))(z)), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(deriv), 1 + 0.5 / np.cosh(np.asarray(z)) ** 2, rtol=1e-14)


def test_user_callable_fits_end_to_end():
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=10, d_in=16, teacher_width=3, activation=jnp.tanh)
    cfg = bcd_jax.Config(
        network=bcd_jax.Network(activation=lambda z: z + 0.5 * jnp.tanh(z), depth=3, width=4),
        algorithm=bcd_jax.Akiyama(k_v=10, k_w=10),
        hyper={"gamma": 0.2, "eta_v": 0.2, "eta_w": 0.1, "eta_w1": 0.3},
        sweeps=8,
    )
    result = bcd_jax.fit(X, Y, cfg, progress=None)
    mse = np.asarray(result.history.train_mse)
    assert result.diverged_at is None and np.all(np.isfinite(mse))
    assert mse[-1] < 0.1 * mse[0]
    pred = bcd_jax.predict(result.params, X, cfg)
    np.testing.assert_allclose(float(np.mean(np.sum((np.asarray(pred) - np.asarray(Y)) ** 2, -1))), mse[-1], rtol=1e-4)


@pytest.mark.parametrize("bad", ["tanhh", "", "RELU"])
def test_unknown_activation_name(bad):
    with pytest.raises(ValueError, match="^activation"):
        bcd_jax.get_activation(bad)
    with pytest.raises(ValueError, match="^activation"):
        bcd_jax.Network(activation=bad)
    with pytest.raises(ValueError, match=r"^overrides: \[network\] activation"):  # 0.3: errors name their source
        bcd_jax.Config().with_overrides({"network.activation": bad})
    with pytest.raises(ValueError, match="^activation"):  # one bad entry of a per-layer list
        bcd_jax.Network(depth=3, activation=["relu", bad])


def test_non_elementwise_or_broken_callable_is_rejected():
    with pytest.raises(ValueError, match="^activation.*elementwise"):
        bcd_jax.Network(activation=lambda z: jnp.sum(z))
    with pytest.raises(ValueError, match="^activation"):
        bcd_jax.Network(activation=lambda z: z @ jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="activation"):
        bcd_jax.get_activation(3.0)
