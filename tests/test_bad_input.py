"""Bad input fails early with a ValueError that names the argument."""

from __future__ import annotations

import re
import warnings
from typing import NamedTuple

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
        "fit": lambda X, Y: bcd_jax.fit(X, Y, cfg, progress=None),
        "init_state": lambda X, Y: bcd_jax.init_state(params, X, Y, cfg),
        "sweep": lambda X, Y: bcd_jax.sweep(state, X, Y, cfg),
        "run": lambda X, Y: bcd_jax.run(state, X, Y, cfg),
        "record": lambda X, Y: bcd_jax.record(state, X, Y, cfg),
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
    # Half precision has no LAPACK kernels: a clear error naming the argument, not a LAPACK failure.
    "float16 X": (lambda X, Y: (X.astype(np.float16), Y), r"^X: dtype float16 is not supported; expected float32"),
    "bfloat16 X": (lambda X, Y: (jnp.asarray(X, jnp.bfloat16), Y), r"^X: dtype bfloat16 is not supported"),
    "float16 Y": (lambda X, Y: (X, Y.astype(np.float16)), r"^Y: dtype float16 is not supported"),
    "empty": (lambda X, Y: (X[:0], Y[:0]), r"X, Y"),
}


ENTRY_POINTS = ["fit", "init_state", "sweep", "run", "record"]
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
    np.testing.assert_array_equal(np.asarray(state.blocks.V[-1]), np.asarray(same.blocks.V[-1]))
    assert bcd_jax.predict(params, X, cfg1).shape == (SMALL_N, 1)


# --- configuration -----------------------------------------------------------------------

# (dotted key, bad value, the name the message starts with)
BAD_CONFIG = [
    ("network.width", 0, "width"),
    ("network.width", -3, "width"),
    ("network.depth", 1, "depth"),
    ("network.depth", 0, "depth"),
    ("sweeps", 0, "sweeps"),
    ("algorithm.k_v", -1, "k_v"),
    ("algorithm.k_w", -2, "k_w"),
    ("network.width", 2.5, "width"),
    ("network.depth", True, "depth"),
    ("hyper.gamma", 0.0, "hyper.gamma"),
    ("hyper.gamma", -0.2, "hyper.gamma"),
    ("hyper.eta_v", -1.0, "hyper.eta_v"),
    ("hyper.eta_v", 0, "hyper.eta_v"),
    ("hyper.eta_w", 0.0, "hyper.eta_w"),
    ("hyper.eta_w", float("nan"), "hyper.eta_w"),
    ("hyper.eta_w1", -1e-3, "hyper.eta_w1"),
    ("hyper.eta_w1", float("inf"), "hyper.eta_w1"),
    ("hyper.gamma", "0.2", "hyper.gamma"),
    ("hyper.weight_decay", -0.1, "hyper.weight_decay"),
    ("network.negative_slope", -0.1, "negative_slope"),
    ("network.negative_slope", 1.5, "negative_slope"),
    ("network.activation", "tanhh", "activation"),
    ("network.activation", 3, "activation"),
    ("network.bias", "yes", "bias"),
    ("network.skip", 1, "skip"),
    ("algorithm.name", "monotonic", "algorithm"),
    ("algorithm.name", "relu", "algorithm"),
    ("algorithm.svb", (1.0, 0.5), "svb"),
    ("algorithm.svb", (-1.0, 1.0), "svb"),
    ("algorithm.svb", (0.0, 0.0), "svb"),
    ("algorithm.svb", (1.0,), "svb"),
    ("algorithm.svb", (0.5, float("inf")), "svb"),
    ("algorithm.svb", "wide", "svb"),
    ("algorithm.spectral_diagnostics", "no", "spectral_diagnostics"),
    ("seed", 1.5, "seed"),
    ("seed", -1, "seed"),
]


def _by_role(key, value):
    """The same bad value given to the constructor of its role (Network, Akiyama, hyper, the run)."""
    role, _, field = key.partition(".")
    if role == "network":
        return lambda: bcd_jax.Network(**{field: value})
    if role == "algorithm":
        if field == "name":
            return lambda: bcd_jax.Config(algorithm=value)
        return lambda: bcd_jax.Akiyama(**{field: value})
    if role == "hyper":
        return lambda: bcd_jax.Config(hyper={field: value})
    return lambda: bcd_jax.Config(**{key: value})


@pytest.mark.parametrize("key,value,name", BAD_CONFIG, ids=[f"{k}={v!r}" for k, v, _ in BAD_CONFIG])
def test_bad_config_value_names_the_field(key, value, name):
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}\b"):
        _by_role(key, value)()
    # A dotted-key change names its source and table before the field ("overrides: [network] width: ...").
    with pytest.raises(ValueError, match=rf"^(overrides: \[\w+\] )?{re.escape(name)}\b"):
        small_config().with_overrides({key: value})


@pytest.mark.parametrize(
    "key,pattern",
    [
        ("widht", r"^widht: unknown key"),
        ("network.widht", r"^network\.widht: unknown field of \[network\]; expected one of \['depth', 'width'"),
        ("hyper.gama", r"^hyper\.gama: unknown field of \[hyper\]; expected one of \['gamma'"),
        ("algorithm.kv", r"^algorithm\.kv: unknown field of \[algorithm\]; expected one of \['name', 'k_v'"),
        ("run.sweps", r"^run\.sweps: unknown field of \[run\]; expected one of \['sweeps', 'seed'\]"),
        ("runs.sweeps", r"^runs\.sweeps: unknown key; expected 'sweeps', 'seed', 'network.<field>'"),
    ],
)
def test_unknown_override_key_is_named(key, pattern):
    with pytest.raises(ValueError, match=pattern):
        small_config().with_overrides({key: 1})
    assert small_config().with_overrides({"run.sweeps": 2}).sweeps == 2  # the long form of "sweeps"


def test_hyper_of_another_kind_or_type_is_refused():
    class Other(NamedTuple):
        gamma: float = 0.2

    with pytest.raises(ValueError, match=r"^hyper: expected AkiyamaHyper"):
        bcd_jax.Config(hyper=Other())
    with pytest.raises(ValueError, match=r"^hyper: expected AkiyamaHyper"):
        bcd_jax.Config(hyper=[0.2])
    with pytest.raises(ValueError, match=r"^hyper.gamma"):
        bcd_jax.Config(hyper=bcd_jax.AkiyamaHyper(gamma=-1.0))
    with pytest.raises(ValueError, match=r"^network: expected a bcd_jax.Network"):
        bcd_jax.Config(network=3)


def test_good_edge_values_are_accepted():
    cfg = bcd_jax.Config(
        network=bcd_jax.Network(depth=2, width=1, negative_slope=0.0),
        algorithm=bcd_jax.Akiyama(k_v=0, k_w=0, svb=[0.0, 0.5]),
        sweeps=1,
    )
    assert cfg.algorithm.svb == (0.0, 0.5) and hash(cfg) == hash(cfg.replace())
    # A registry name, a description table and an Algorithm object are the same algorithm.
    assert bcd_jax.Config(algorithm="relu_skip").algorithm == bcd_jax.Akiyama("relu_skip")
    assert bcd_jax.Config(algorithm={"name": "relu_skip", "k_v": 3}).algorithm == bcd_jax.Akiyama("relu_skip", k_v=3)
    assert bcd_jax.Config(network={"width": 3}).network == bcd_jax.Network(width=3)


def test_numpy_scalars_are_accepted():
    """NumPy scalars (e.g. from a grid made with np.linspace) are plain Python numbers once checked."""
    config = bcd_jax.Config(
        network=bcd_jax.Network(width=np.int64(30), depth=np.int32(3)),
        algorithm=bcd_jax.Akiyama(k_v=np.int64(5)),
        hyper={"gamma": np.float32(0.2)},
        sweeps=np.int64(3),
    )
    assert config.network.width == 30 and type(config.network.width) is int
    assert config.network.depth == 3 and config.algorithm.k_v == 5 and type(config.sweeps) is int
    assert config.hyper.gamma == pytest.approx(0.2) and type(config.hyper.gamma) is float
    assert hash(config) == hash(config.replace())
    overridden = config.with_overrides(
        {
            "network.depth": np.int32(3),
            "algorithm.k_v": np.int64(4),
            "hyper.eta_v": np.float64(0.5),
            "sweeps": np.int64(2),
        }
    )
    assert (overridden.network.depth, overridden.algorithm.k_v, overridden.sweeps) == (3, 4, 2)
    assert type(overridden.hyper.eta_v) is float
    assert overridden.to_dict()["run"] == {"sweeps": 2, "seed": 0}


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
        with pytest.raises(ValueError, match=rf"d_out.*2 rows.*{columns} column|params.*W_4.*\({columns}, 5\)"):
            bcd_jax.fit(X, Yc, cfg, init_params=params, progress=None)
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
        # predict has no data to compare W_1 with: it reads d_in off W_1 and blames X.
        (lambda p: (p[0][:, :-1],) + p[1:], r"params.*W_1|^X: has 10 columns; the weights expect d_in = 9"),
        (lambda p: p[:1] + (jnp.ones((5, 4)),) + p[2:], r"params.*W_2"),
        (lambda p: p[:2] + (jnp.ones((4, 5)),) + p[3:], r"params.*W_3"),
        (lambda p: list(p)[:2] + [jnp.ones((5, 5)).T[:, :4]] + list(p)[3:], r"params.*W_3"),
    ],
)
def test_wrong_shape_params(problem, mutate, pattern):
    cfg, X, Y, params = problem
    bad = mutate(tuple(params))
    with pytest.raises(ValueError, match=pattern):
        bcd_jax.fit(X, Y, cfg, init_params=bad, progress=None)
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
                bcd_jax.fit(X, Y, cfg, init_params=bad, progress=None)


def test_predict_rejects_wrong_inputs(problem):
    cfg, X, _, params = problem
    # The weights fix d_in; inputs with another number of features are the input's fault.
    with pytest.raises(ValueError, match=rf"^X: has {SMALL_D_IN - 1} columns; the weights expect d_in = {SMALL_D_IN}"):
        bcd_jax.predict(params, X[:, :-1], cfg)
    with pytest.raises(ValueError, match="^X"):
        bcd_jax.predict(params, X[0], cfg)
    with pytest.raises(ValueError, match=r"^X: dtype float16 is not supported"):
        bcd_jax.predict(params, X.astype(np.float16), cfg)


def test_state_of_another_problem_is_rejected(problem):
    cfg, X, Y, params = problem
    state = bcd_jax.init_state(params, X, Y, cfg)
    with pytest.raises(ValueError, match=r"^state.*V_1"):
        bcd_jax.sweep(state, X[:-1], Y[:-1], cfg)
    fewer = state._replace(blocks=state.blocks._replace(V=state.blocks.V[:-1]))
    with pytest.raises(ValueError, match=r"^state: expected the blocks .*V_3"):
        bcd_jax.sweep(fewer, X, Y, cfg)
    with pytest.raises(ValueError, match=r"^state"):
        bcd_jax.sweep(tuple(state), X, Y, cfg)
    with pytest.raises(ValueError, match=r"^state"):  # the blocks of another family's layout
        bcd_jax.sweep(state._replace(blocks=tuple(state.blocks.W)), X, Y, cfg)
    with pytest.raises(ValueError, match=r"^state: W_1 has shape \(5, 10\); expected \(4, 10\)"):
        bcd_jax.sweep(state, X, Y, cfg.with_overrides({"network.width": 4}))


# --- TOML configs --------------------------------------------------------------------------


def test_load_config_rejects_an_unknown_key_by_name(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[algorithm]\nname = "monotone"\nk_v = 5\n\n[network]\nwidht = 30\n')
    with pytest.raises(ValueError, match=r"\[network\].*widht"):
        bcd_jax.load_config(path)
    path.write_text("[run]\nsweeps = 3\nsweps = 4\n")
    with pytest.raises(ValueError, match=r"sweps.*\[run\]"):
        bcd_jax.load_config(path)
    # A flat file of bcd_jax 0.1: each key is named with the table it belongs in now.
    path.write_text("widht = 30\nk_v = 5\n")
    with pytest.raises(ValueError, match=r"widht.*'k_v' belongs in \[algorithm\]"):
        bcd_jax.load_config(path)


def test_load_config_rejects_bad_values_and_files(tmp_path):
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text("[hyper]\neta_v = -1.0\n")
    with pytest.raises(ValueError, match=r"\[hyper\] hyper\.eta_v"):
        bcd_jax.load_config(bad_value)
    bad_value.write_text("[network]\ndepth = 1\n")
    with pytest.raises(ValueError, match=r"\[network\] depth"):
        bcd_jax.load_config(bad_value)
    bad_value.write_text("network = 3\n")
    with pytest.raises(ValueError, match=r"\[network\] must be a table"):
        bcd_jax.load_config(bad_value)
    # Reliability round 2: the run's table is [run], and a typo in [algorithm] names the option and the known ones.
    bad_value.write_text("[run]\nsweeps = 0\n")
    with pytest.raises(ValueError, match=r"bad_value.toml: \[run\] sweeps: expected an int >= 1, got 0$"):
        bcd_jax.load_config(bad_value)
    bad_value.write_text('[algorithm]\nname = "monotone"\nk_vv = 3\n')
    known = r"\['first_layer_form', 'inner', 'k_v', 'k_w', 'spectral_diagnostics', 'step_size', 'svb'\]"
    with pytest.raises(
        ValueError, match=rf"\[algorithm\] algorithm: unknown option\(s\) \['k_vv'\] for 'monotone'; .*{known}"
    ):
        bcd_jax.load_config(bad_value)
    broken = tmp_path / "broken.toml"
    broken.write_text("[network]\ndepth = = 3\n")
    with pytest.raises(ValueError, match="^path"):
        bcd_jax.load_config(broken)
    with pytest.raises(ValueError, match="^path"):
        bcd_jax.load_config(tmp_path / "missing.toml")


def test_load_config_reads_a_valid_file(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(
        '[network]\nactivation = "relu"\ndepth = 3\nwidth = 6\n'
        '\n[algorithm]\nname = "relu_skip"\nk_v = 7\nk_w = 9\nsvb = [0.0, 0.25]\n'
        "\n[hyper]\ngamma = 0.25\neta_v = 0.5\n"
        "\n[run]\nsweeps = 4\nseed = 3\n"
        '\n[data]\nn = 20\nd_in = 30\n\n[experiment]\ncompare = ["relu_noskip"]\n'
    )
    cfg = bcd_jax.load_config(path)
    expected = bcd_jax.Config(
        network=bcd_jax.Network(activation="relu", depth=3, width=6),
        algorithm=bcd_jax.Akiyama("relu_skip", k_v=7, k_w=9, svb=(0.0, 0.25)),
        hyper={"gamma": 0.25, "eta_v": 0.5},
        sweeps=4,
        seed=3,
    )
    assert cfg == expected
    assert isinstance(cfg.algorithm.svb, tuple)
    hash(cfg)  # usable as a static argument
    # The description round-trips.
    from bcd_jax.config import config_from_dict

    assert config_from_dict(cfg.to_dict()) == cfg


# --- labels and dtypes (Reliability round 2) ---------------------------------------------------------------


class _NoCompute:
    calls = 0

    def __call__(self, done, info):
        self.calls += 1


@pytest.mark.parametrize(
    "loss, labels, pattern",
    [
        # integer labels with a regression loss would regress on the class index
        ("squared", np.arange(SMALL_N) % 3, r"^Y: integer labels with the regression loss 'squared' would regress"),
        # classes read off the labels must be 0..C-1: 1..3 is refused with the way to map them
        (
            "softmax_cross_entropy",
            np.arange(SMALL_N) % 3 + 1,
            r"^Y: the labels run 0\.\.3 but no sample has class \[0\].*labels='remap'",
        ),
        (
            "softmax_cross_entropy",
            np.array(list("abcabca")),
            r"^Y: string labels \(\['a', 'b', 'c'\]\.\.\.\); expected integer class labels 0\.\.C-1.*labels='remap'",
        ),
        ("squared", np.array(list("abcabca")), r"^Y: expected numbers, got strings.*labels='remap'"),
    ],
    ids=["integers with squared", "labels 1..3", "strings", "strings with squared"],
)
def test_labels_that_do_not_fit_the_loss_are_refused_naming_y(problem, loss, labels, pattern):
    _, X, _, _ = problem
    cfg = small_config(sweeps=1).with_overrides({"network.loss": loss})
    callback = _NoCompute()
    with pytest.raises(ValueError, match=pattern):
        bcd_jax.fit(X, labels, cfg, callback=callback, progress=None)
    assert callback.calls == 0
    if loss == "squared" and labels.dtype.kind == "i":  # float targets regress on these values, as asked
        assert bcd_jax.fit(X, labels.astype(np.float32), cfg, progress=None).sweeps_completed == 1
    if labels.dtype.kind == "i" and labels.min() == 1:  # with the classes declared, an absent class is fine
        declared = cfg.with_overrides({"network.num_classes": 4})
        assert bcd_jax.fit(X, labels, declared, progress=None).history.train_loss.shape == (2,)


def test_float64_data_without_x64_warn_once(problem, monkeypatch):
    from bcd_jax import validation

    assert not jax.config.jax_enable_x64
    cfg, X, _, params = problem
    monkeypatch.setattr(validation, "_SAID", set())  # as in a fresh process
    X64 = np.asarray(X, np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = bcd_jax.predict(params, X64, cfg)
        bcd_jax.predict(params, X64, cfg)
        bcd_jax.predict(params, X64 + 1.0, cfg)
    said = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(said) == 1, [str(w.message) for w in said]
    message = str(said[0].message)
    assert message.startswith("X: float64 data are computed in float32 because JAX's 64-bit mode is off")
    assert "jax.config.update('jax_enable_x64', True)" in message and "jax.enable_x64()" in message
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, bcd_jax.predict(params, X, cfg))
