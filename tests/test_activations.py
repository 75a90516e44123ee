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


# -- piecewise-linear activations: pieces, slope, exact prox (0.3) ---------------------------------

NEGATIVE_SLOPE = 0.3
STAIRCASES = ("step", "sign", "quantized")  # the built-ins whose every piece is flat
# A parametrised spelling next to the registry's names (quantized's default arguments are in the registry).
EXTRA_PIECEWISE = ("quantized(levels=3, low=0, high=2)",)


def _piecewise_names():
    """Every registered activation (and a parametrised one) that declares pieces, at collection time,
    so that a newly registered piecewise-linear activation is tested without new code."""
    names = [n for n in sorted(bcd_jax.ACTIVATIONS) if bcd_jax.get_activation(n, NEGATIVE_SLOPE).pieces is not None]
    return names + list(EXTRA_PIECEWISE)


def _breaks(pieces):
    return np.asarray([p.low for p in pieces[1:]], np.float64)


def _jumps(pieces):
    """The breaks where sigma jumps (the two pieces' lines differ there)."""
    return [
        right.low
        for left, right in zip(pieces, pieces[1:])
        if left.slope * right.low + left.intercept != right.slope * right.low + right.intercept
    ]


TINY = np.finfo(np.float64).tiny  # XLA on CPU flushes subnormal floats (below tiny) to zero


def _below(b):
    """The last float below ``b`` that XLA keeps: ``nextafter(b, -inf)``, or ``-tiny`` where that is
    subnormal (flushed to zero, it would put the point ON the break)."""
    below = np.nextafter(b, -np.inf)
    return -TINY if abs(below) < TINY else below


def _above(b):
    above = np.nextafter(b, np.inf)
    return TINY if abs(above) < TINY else above


def _pieces_at(pieces, u):
    """NumPy, from the pieces alone: ``(sigma(u), slope)`` with each piece closed on the left."""
    u = np.asarray(u, np.float64)
    index = np.searchsorted(_breaks(pieces), u, side="right")
    slopes = np.asarray([p.slope for p in pieces])[index]
    return slopes * u + np.asarray([p.intercept for p in pieces])[index], slopes


def _grid_with_breaks(pieces):
    breaks = _breaks(pieces)
    near = [f(b) for b in breaks for f in (_below, _above, lambda b: b - 1e-9)]
    return np.unique(np.concatenate([np.linspace(-5.0, 5.0, 2001), breaks, near, [-1e6, -1.0e-300, 1e-300, 1e6]]))


@pytest.mark.parametrize("name", _piecewise_names())
def test_fn_and_slope_agree_with_the_pieces(x64, name):
    act = bcd_jax.get_activation(name, NEGATIVE_SLOPE)
    assert act.piecewise_linear and act.pieces[0].low == -np.inf and act.pieces[-1].high == np.inf
    u = _grid_with_breaks(act.pieces)
    want_value, want_slope = _pieces_at(act.pieces, u)
    # (a) fn is the pieces' function, right-continuous at every break (atol: a subnormal VALUE,
    # e.g. 0.3 * -tiny, is flushed to zero by XLA).
    np.testing.assert_allclose(np.asarray(act(jnp.asarray(u))), want_value, rtol=1e-15, atol=TINY)
    # (b) slope(z) is the slope of the piece z is on (the right one at a break).
    slope = np.asarray(act.slope(jnp.asarray(u)))
    assert slope.dtype == np.float64
    np.testing.assert_array_equal(slope, want_slope)
    # Away from the breaks it is sigma' (autodiff of fn).
    away = np.min(np.abs(u[:, None] - _breaks(act.pieces)[None, :]), axis=1, initial=np.inf) > 1e-6
    _, deriv = act.value_and_derivative(jnp.asarray(u[away]))
    np.testing.assert_allclose(np.asarray(deriv), want_slope[away], rtol=1e-15, atol=0)


def _prox_cases(pieces, rng):
    """(a, z, weight): random ones, z on every break, a tie at every jump, large and tiny weights."""
    breaks, jumps = _breaks(pieces), _jumps(pieces)
    m = 60
    a = [rng.normal(size=m) * 2]
    z = [rng.normal(size=m) * 2]
    w = [np.exp(rng.uniform(np.log(1e-6), np.log(1e6), size=m))]
    if len(breaks):  # z on a break, with random a and weights from tiny to large
        k = 24
        a.append(rng.normal(size=k) * 2)
        z.append(rng.choice(breaks, k))
        w.append(np.repeat([1e-6, 1e-3, 1.0, 1e3, 1e6, 0.37], k // 6))
    for left, right in zip(pieces, pieces[1:]):  # z on a jump, a half-way between its two values: a tie
        b = right.low
        if b not in jumps:
            continue
        lo, hi = left.slope * b + left.intercept, right.slope * b + right.intercept
        for weight in (1e-6, 1e-2, 1.0, 1e4):
            a.append([0.5 * (lo + hi), 0.5 * (lo + hi), lo, hi])
            z.append([b, b + 0.25, b, _below(b)])
            w.append([weight] * 4)
    for k in range(len(pieces) - 1):  # ties between two separate minimisers, one on each side of a break
        for zk, weight in ((pieces[k + 1].low - 0.2, 1.0), (pieces[k + 1].low + 0.2, 0.5), (pieces[k + 1].low, 2.0)):
            tie = _tie(pieces, k, zk, weight)
            if tie is not None:
                a.append([tie])
                z.append([zk])
                w.append([weight])
    for p in pieces:  # a exactly at a level (a flat piece's value), tiny and large weights
        if p.slope == 0:
            a.append([p.intercept] * 2)
            z.append(rng.normal(size=2))
            w.append([1e-6, 1e6])
    return tuple(np.concatenate([np.asarray(x, np.float64) for x in v]) for v in (a, z, w))


def _piece_cost(pieces, k, a, z, weight):
    """The least ``(sigma(u) - a)^2 + weight (u - z)^2`` over piece k (for building ties only)."""
    p = pieces[k]
    high = _below(p.high) if p.high in _jumps(pieces) else p.high
    u = np.clip((p.slope * (a - p.intercept) + weight * z) / (p.slope**2 + weight), p.low, high)
    return (p.slope * u + p.intercept - a) ** 2 + weight * (u - z) ** 2


def _tie(pieces, k, z, weight):
    """A target ``a`` where pieces k and k+1 are equally good (bisection), or None."""
    grid = np.linspace(-6.0, 6.0, 241)
    gap = np.asarray([_piece_cost(pieces, k, t, z, weight) - _piece_cost(pieces, k + 1, t, z, weight) for t in grid])
    change = np.flatnonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) < 0)
    if change.size == 0:
        return None
    lo, hi = grid[change[0]], grid[change[0] + 1]
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        same = np.sign(_piece_cost(pieces, k, mid, z, weight) - _piece_cost(pieces, k + 1, mid, z, weight))
        lo, hi = (mid, hi) if same == np.sign(gap[change[0]]) else (lo, mid)
    return 0.5 * (lo + hi)


def _check_prox(act, seed=0):
    """``act.prox`` against a brute-force minimisation of ``(sigma(u) - a)^2 + weight (u - z)^2`` over a
    fine grid plus every piece endpoint and the last float below every jump, compared on the
    objective value (ties allowed) and on the minimiser where it is unique."""
    pieces = act.pieces
    breaks, jumps = _breaks(pieces), _jumps(pieces)
    a, z, w = _prox_cases(pieces, np.random.default_rng(seed))
    closed = np.asarray(act.prox(jnp.asarray(a), jnp.asarray(z), jnp.asarray(w)))
    assert closed.shape == a.shape and closed.dtype == np.float64
    curvature = max(p.slope**2 for p in pieces)
    extra = np.concatenate([breaks, [_below(b) for b in jumps], [np.nextafter(b, -np.inf) for b in jumps]])
    for k in range(len(a)):
        # Each piece's unconstrained minimiser lies between z and (a - c) / s: the grid covers them all.
        ends = [z[k], *breaks, *((a[k] - p.intercept) / p.slope for p in pieces if p.slope)]
        lo, hi = min(ends) - 1.0, max(ends) + 1.0
        n = 100_000
        h = (hi - lo) / n
        u = np.concatenate([np.linspace(lo, hi, n + 1), extra])
        cost = (_pieces_at(pieces, u)[0] - a[k]) ** 2 + w[k] * (u - z[k]) ** 2
        best = cost.min()
        got = (_pieces_at(pieces, closed[k])[0] - a[k]) ** 2 + w[k] * (closed[k] - z[k]) ** 2
        case = f"{act.name}: a={a[k]!r}, z={z[k]!r}, weight={w[k]!r}, prox={closed[k]!r}"
        # No candidate beats the closed form; the grid comes within its resolution of it.
        rounding = 1e-12 * (1.0 + best)
        resolution = (curvature + w[k]) * h * h / 4 + rounding
        assert got <= best + rounding, (case, got, best)
        assert got >= best - resolution, (case, got, best)
        # Where the near-minimal candidates form one cluster the minimiser is unique: the prox is in it.
        near = np.sort(u[cost <= best + 2 * resolution])
        if near.size == 1 or np.max(np.diff(near)) <= 3 * h:
            assert near[0] - h <= closed[k] <= near[-1] + h, (case, near[0], near[-1])


@pytest.mark.parametrize("name", _piecewise_names())
def test_prox_is_the_brute_force_minimiser(x64, name):
    _check_prox(bcd_jax.get_activation(name, NEGATIVE_SLOPE))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name,a", [("step", 0.0), ("sign", -1.0)])
def test_prox_below_a_jump_at_zero_stays_on_the_left_piece(x64, name, a, dtype):
    """Regression: the last float below a jump at 0 is subnormal, which XLA flushes to -0.0 (on the
    jump, the right piece's value); the prox must return a point where sigma is the left value."""
    act = bcd_jax.get_activation(name)
    u = act.prox(jnp.asarray([a], dtype), jnp.asarray([1.0], dtype), 1e-3)
    assert u.dtype == dtype and float(u[0]) < 0
    assert float(act(u)[0]) == a  # cost 1e-3 (u ~ 0-), not 1 + 1e-3 (sigma(u) = the other level)


def test_quantized_parses_from_its_name_and_round_trips():
    from bcd_jax.activations import activation_name
    from bcd_jax.config import config_from_dict

    name = "quantized(levels=4, low=-1, high=1)"
    act = bcd_jax.get_activation(name)
    assert act.name == name and activation_name(name) == name
    again = bcd_jax.get_activation(activation_name(act.name))
    assert again.name == name and again.pieces == act.pieces
    np.testing.assert_allclose([p.intercept for p in act.pieces], [-1.0, -1 / 3, 1 / 3, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(_breaks(act.pieces), [-2 / 3, 0.0, 2 / 3], rtol=0, atol=1e-15)
    assert all(p.slope == 0 for p in act.pieces) and act.alpha == 0.0 and act.lipschitz is None
    # Other spellings of the same arguments parse to the same activation (its canonical name).
    for spelling in ("quantized(levels=4)", " quantized( levels = 4 , low = -1.0 , high = 1 ) ", "quantized()"):
        other = bcd_jax.get_activation(spelling)
        assert other.name == name and other.pieces == act.pieces, spelling
        assert activation_name(spelling) == spelling
    # A config records it by name and reads it back.
    config = bcd_jax.Config(network=bcd_jax.Network(depth=3, activation=name), algorithm="zeng_three_splitting")
    table = config.to_dict()
    assert table["network"]["activation"] == name
    back = config_from_dict(table)
    assert back == config and back.network.layer_activations[0].pieces == act.pieces
    for bad in ("quantized(levels=1)", "quantized(levels=2.5)", "quantized(bogus=1)", "quantized(low=1, high=-1)"):
        with pytest.raises(ValueError, match="^activation"):
            bcd_jax.get_activation(bad)


@pytest.mark.parametrize("name", sorted(bcd_jax.ACTIVATIONS))
def test_piecewise_constant_exactly_for_the_staircases(name):
    act = bcd_jax.get_activation(name, NEGATIVE_SLOPE)
    if bcd_jax.ACTIVATIONS.module_of(name) == "bcd_jax.activations":  # the built-ins
        assert act.piecewise_constant is (name in STAIRCASES), name
    assert act.piecewise_constant is (act.pieces is not None and all(p.slope == 0 for p in act.pieces))
    assert act.piecewise_linear is (act.pieces is not None)


@pytest.fixture
def hard_tanh():
    """A NEW piecewise-linear activation, registered for one test only."""
    from bcd_jax.activations import from_pieces

    pieces = [(-np.inf, -1.0, 0.0, -1.0), (-1.0, 1.0, 1.0, 0.0), (1.0, np.inf, 0.0, 1.0)]
    act = bcd_jax.register_activation(from_pieces("hard_tanh_test", pieces, alpha=0.0, lipschitz=1.0))
    try:
        yield act
    finally:
        bcd_jax.ACTIVATIONS.unregister(act.name)
    assert act.name not in bcd_jax.ACTIVATIONS


def _small_problem(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(10, 4)), rng.normal(size=(10, 2))


# The issue: "a registered activation with these properties gets the fast paths automatically
# (tested with a new registered activation)".


def test_a_registered_piecewise_linear_activation_gets_zengs_u_update(x64, hard_tanh):
    assert hard_tanh.piecewise_linear and not hard_tanh.piecewise_constant
    _check_prox(hard_tanh)
    X, Y = _small_problem()
    network = bcd_jax.Network(depth=2, width=4, activation="hard_tanh_test", bias="all")  # U_1 is a prox of sigma
    # Zeng's three-splitting U update (an exact prox; refused for an activation without pieces): one sweep.
    zeng = bcd_jax.Config(network=network, algorithm="zeng_three_splitting", sweeps=1)
    result = bcd_jax.fit(X, Y, zeng, key=jax.random.key(0), progress=None)
    assert result.status == bcd_jax.Status.BUDGET and result.sweeps_completed == 1
    objective = result.history.objective
    assert np.all(np.isfinite(objective)) and objective[1] <= objective[0] * (1 + 1e-12)


def test_a_registered_piecewise_linear_activation_gets_whole_objectives_exact_mode(x64, hard_tanh):
    X, Y = _small_problem()
    network = bcd_jax.Network(depth=2, width=4, activation="hard_tanh_test", bias=True)  # W_1: Newton on sigma's pieces
    # whole_objective's exact mode (Newton steps on the pieces; refused without pieces): F never increases.
    whole = bcd_jax.Config(
        network=network,
        algorithm=bcd_jax.WholeObjective(inner="exact", k_v=2, k_w=2, spectral_diagnostics=False),
        sweeps=3,
    )
    result = bcd_jax.fit(X, Y, whole, key=jax.random.key(0), progress=None)
    assert result.status == bcd_jax.Status.BUDGET and result.sweeps_completed == 3
    objective = result.history.objective
    assert np.all(np.isfinite(objective))
    assert np.all(np.diff(objective) <= 1e-10 * np.abs(objective[:-1])), objective
