"""Bad input fails early with a ValueError that names the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from helpers import SMALL_D_IN, SMALL_D_OUT, SMALL_N, make_data, small_config


@pytest.fixture
def problem():
    cfg = small_config(sweeps=1)
    X, Y = make_data(SMALL_N, SMALL_D_IN, SMALL_D_OUT, seed=0, dtype=np.float32)
    params = bcd_jax.init_params(jax.random.key(0), cfg, SMALL_D_IN, SMALL_D_OUT)
    return cfg, X, Y, params


# --- data ------------------------------------------------------------------------------


def _data_entry_points(cfg, params):
    """Every public function that takes (X, Y), as callables of (X, Y)."""
    X0, Y0 = make_data(SMALL_N, SMALL_D_IN, SMALL_D_OUT, seed=0, dtype=np.float32)
    state = bcd_jax.init_state(params, X0, Y0, cfg)
    return {
        "fit": lambda X, Y: bcd_jax.fit(X, Y, cfg, quiet=True),
        "init_state": lambda X, Y: bcd_jax.init_state(params, X, Y, cfg),
        "sweep": lambda X, Y: bcd_jax.sweep(state, X, Y, cfg),
        "run": lambda X, Y: bcd_jax.run(state, X, Y, cfg),
        "diagnostics": lambda X, Y: bcd_jax.diagnostics(state, X, Y, cfg),
    }


BAD_DATA = {
    "sample counts differ": (lambda X, Y: (X, Y[:-1]), r"X, Y.*sample counts"),
    "X of rank 1": (lambda X, Y: (X[:, 0], Y), r"^X:.*2-D"),
    "X of rank 3": (lambda X, Y: (X[:, :, None], Y), r"^X:.*2-D"),
    "Y of rank 3": (lambda X, Y: (X, Y[:, :, None]), r"^Y:"),
    "NaN in X": (lambda X, Y: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), Y), r"^X:.*finite"),
    "inf in X": (lambda X, Y: (np.where(np.arange(X.size).reshape(X.shape) == 3, -np.inf, X), Y), r"^X:.*finite"),
    "NaN in Y": (lambda X, Y: (X, np.full_like(Y, np.nan)), r"^Y:.*finite"),
    "inf in Y": (lambda X, Y: (X, np.where(Y > 0, np.inf, Y)), r"^Y:.*finite"),
    "complex X": (lambda X, Y: (X.astype(np.complex64), Y), r"^X:"),
    "empty": (lambda X, Y: (X[:0], Y[:0]), r"X, Y"),
}


ENTRY_POINTS = ["fit", "init_state", "sweep", "run", "diagnostics"]
# An empty data set only reaches fit: for the others the state's shapes already pin n.
DATA_CASES = [(case, entry) for case in sorted(BAD_DATA) for entry in ENTRY_POINTS if case != "empty" or entry == "fit"]


@pytest.mark.parametrize("case,entry", DATA_CASES)
def test_bad_data_is_rejected_by_every_entry_point(problem, case, entry):
    cfg, X, Y, params = problem
    make_bad, pattern = BAD_DATA[case]
    bad_X, bad_Y = make_bad(X, Y)
    with pytest.raises(ValueError, match=pattern):
        _data_entry_points(cfg, params)[entry](bad_X, bad_Y)


def test_vector_targets_are_one_output_column(problem):
    cfg, X, Y, _ = problem
    cfg1 = cfg.replace(sweeps=1)
    params = bcd_jax.init_params(jax.random.key(0), cfg1, SMALL_D_IN, 1)
    state = bcd_jax.init_state(params, X, Y[:, 0], cfg1)
    same = bcd_jax.init_state(params, X, Y[:, :1], cfg1)
    np.testing.assert_array_equal(np.asarray(state.hidden[-1]), np.asarray(same.hidden[-1]))
    assert bcd_jax.predict(params, X, cfg1).shape == (SMALL_N, 1)


# --- configuration -----------------------------------------------------------------------

BAD_CONFIG = [
    ("width", 0),
    ("width", -3),
    ("depth", 1),
    ("depth", 0),
    ("sweeps", 0),
    ("k_v", -1),
    ("k_w", -2),
    ("width", 2.5),
    ("depth", True),
    ("gamma", 0.0),
    ("gamma", -0.2),
    ("eta_v", -1.0),
    ("eta_v", 0),
    ("eta_w", 0.0),
    ("eta_w", float("nan")),
    ("eta_w1", -1e-3),
    ("eta_w1", float("inf")),
    ("gamma", "0.2"),
    ("negative_slope", -0.1),
    ("negative_slope", 1.5),
    ("activation", "tanhh"),
    ("activation", 3),
    ("algorithm", "monotonic"),
    ("algorithm", "relu"),
    ("svb", (1.0, 0.5)),
    ("svb", (-1.0, 1.0)),
    ("svb", (0.0, 0.0)),
    ("svb", (1.0,)),
    ("svb", (0.5, float("inf"))),
    ("svb", "wide"),
    ("seed", 1.5),
]


@pytest.mark.parametrize("name,value", BAD_CONFIG, ids=[f"{n}={v!r}" for n, v in BAD_CONFIG])
def test_bad_config_value_names_the_field(name, value):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        bcd_jax.Config(**{name: value})
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        small_config().replace(**{name: value})


def test_good_edge_values_are_accepted():
    cfg = bcd_jax.Config(depth=2, width=1, k_v=0, k_w=0, sweeps=1, negative_slope=0.0, svb=[0.0, 0.5])
    assert cfg.svb == (0.0, 0.5) and hash(cfg) == hash(cfg.replace())


def test_unknown_algorithm_name_in_get_algorithm():
    with pytest.raises(ValueError, match="algorithm.*monotone"):
        bcd_jax.get_algorithm("alg1")


def test_fit_rejects_a_non_config(problem):
    _, X, Y, _ = problem
    with pytest.raises(ValueError, match="^config"):
        bcd_jax.fit(X, Y, {"depth": 3})


@pytest.mark.parametrize("num_sweeps", [0, -1, 2.0, True])
def test_run_rejects_bad_num_sweeps(problem, num_sweeps):
    cfg, X, Y, params = problem
    state = bcd_jax.init_state(params, X, Y, cfg)
    with pytest.raises(ValueError, match="num_sweeps"):
        bcd_jax.run(state, X, Y, cfg, num_sweeps=num_sweeps)


# --- parameters and state --------------------------------------------------------------


def test_output_weight_rows_must_match_the_targets(problem):
    """W_L has d_out = 2 rows; targets with 3 columns (or 1) are a shape error naming W_L."""
    cfg, X, Y, params = problem
    for columns in (1, 3):
        Yc = np.ones((SMALL_N, columns), np.float32)
        with pytest.raises(ValueError, match=r"d_out.*2 rows.*%d column|params.*W_4.*\(%d, 5\)" % (columns, columns)):
            bcd_jax.fit(X, Yc, cfg, init_params=params, quiet=True)
        with pytest.raises(ValueError, match=r"d_out|params.*W_4"):
            bcd_jax.init_state(params, X, Yc, cfg)


def test_init_params_rejects_bad_sizes():
    cfg = small_config()
    for name, args in (("d_in", (0, 1)), ("d_out", (4, 0)), ("d_in", (4.0, 1)), ("d_out", (4, -2))):
        with pytest.raises(ValueError, match=f"^{name}"):
            bcd_jax.init_params(jax.random.key(0), cfg, *args)


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda p: p[:-1], r"params.*depth"),
        (lambda p: p + (p[-1],), r"params.*depth"),
        (lambda p: (p[0][:, :-1],) + p[1:], r"params.*W_1"),
        (lambda p: p[:1] + (jnp.ones((5, 4)),) + p[2:], r"params.*W_2"),
        (lambda p: p[:2] + (jnp.ones((4, 5)),) + p[3:], r"params.*W_3"),
        (lambda p: list(p)[:2] + [jnp.ones((5, 5)).T[:, :4]] + list(p)[3:], r"params.*W_3"),
    ],
)
def test_wrong_shape_params(problem, mutate, pattern):
    cfg, X, Y, params = problem
    bad = mutate(tuple(params))
    with pytest.raises(ValueError, match=pattern):
        bcd_jax.fit(X, Y, cfg, init_params=bad, quiet=True)
    with pytest.raises(ValueError, match=pattern):
        bcd_jax.init_state(bad, X, Y, cfg)
    with pytest.raises(ValueError, match=pattern):
        bcd_jax.predict(bad, X, cfg)


def test_params_that_are_not_a_sequence_of_matrices(problem):
    """A mapping or scalar as params: the error must name the argument, not leak a float() failure."""
    cfg, X, Y, _ = problem
    for bad in ({"W_1": 1.0}, "weights", 3.0, None):
        with pytest.raises(ValueError, match="params"):
            bcd_jax.predict(bad, X, cfg)
        with pytest.raises(ValueError, match="params"):
            bcd_jax.init_state(bad, X, Y, cfg)
        if bad is not None:  # init_params=None means "draw them"
            with pytest.raises(ValueError, match="params"):
                bcd_jax.fit(X, Y, cfg, init_params=bad, quiet=True)


def test_predict_rejects_wrong_inputs(problem):
    cfg, X, _, params = problem
    with pytest.raises(ValueError, match=r"params.*W_1"):
        bcd_jax.predict(params, X[:, :-1], cfg)
    with pytest.raises(ValueError, match="^X"):
        bcd_jax.predict(params, X[0], cfg)


def test_state_of_another_problem_is_rejected(problem):
    cfg, X, Y, params = problem
    state = bcd_jax.init_state(params, X, Y, cfg)
    with pytest.raises(ValueError, match=r"^state.*V_1"):
        bcd_jax.sweep(state, X[:-1], Y[:-1], cfg)
    with pytest.raises(ValueError, match=r"^state.*hidden"):
        bcd_jax.sweep(state._replace(hidden=state.hidden[:-1]), X, Y, cfg)
    with pytest.raises(ValueError, match=r"^state"):
        bcd_jax.sweep(tuple(state), X, Y, cfg)
    with pytest.raises(ValueError, match=r"params"):
        bcd_jax.sweep(state, X, Y, cfg.replace(width=4))


# --- TOML configs --------------------------------------------------------------------------


def test_load_config_rejects_an_unknown_key_by_name(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('algorithm = "monotone"\nwidht = 30\nk_v = 5\n')
    with pytest.raises(ValueError, match="widht"):
        bcd_jax.load_config(path)


def test_load_config_rejects_bad_values_and_files(tmp_path):
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text("eta_v = -1.0\n")
    with pytest.raises(ValueError, match="eta_v"):
        bcd_jax.load_config(bad_value)
    broken = tmp_path / "broken.toml"
    broken.write_text("depth = = 3\n")
    with pytest.raises(ValueError, match="path"):
        bcd_jax.load_config(broken)
    with pytest.raises(ValueError, match="path"):
        bcd_jax.load_config(tmp_path / "missing.toml")


def test_load_config_reads_a_valid_file(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(
        'algorithm = "relu_skip"\nactivation = "relu"\ndepth = 3\nwidth = 6\ngamma = 0.25\n'
        "eta_v = 0.5\nk_v = 7\nk_w = 9\nsweeps = 4\nsvb = [0.0, 0.25]\nseed = 3\n"
        "\n[data]\nn = 20\nd_in = 30\n\n[experiment]\ncompare = [\"relu_noskip\"]\n"
    )
    cfg = bcd_jax.load_config(path)
    expected = bcd_jax.Config(algorithm="relu_skip", activation="relu", depth=3, width=6, gamma=0.25, eta_v=0.5,
                              k_v=7, k_w=9, sweeps=4, svb=(0.0, 0.25), seed=3)
    assert cfg == expected
    assert isinstance(cfg.svb, tuple)
    hash(cfg)  # usable as a static argument
