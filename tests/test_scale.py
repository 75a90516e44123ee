"""Every family is linear in n: the compiled sweep's memory and FLOPs grow at most linearly in the samples.

Fast checks on tiny problems (nothing is run: programs are traced and compiled from abstract shapes).
What ``scripts/scale.py`` measures at MNIST size, these pin down as the asymptotics: the temporaries
of the driver's compiled loop (a sweep and its record) at n, 2n and 4n have constant increments, as
do the traced FLOPs of a sweep, for every registered family and the exact modes; the data-only caches
do not grow with n beyond the data itself.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcd_jax
from bcd_jax.benchmarking.flops import traced_sweep_flops
from bcd_jax.driver import memory
from bcd_jax.driver.loop import EvalSets, abstract_problem, compiled_loop
from bcd_jax.stopping import initial_stop_state, stop_arrays

D_IN, D_OUT = 12, 3
NS = (96, 192, 384)  # n >= 8 d_in: past the Gram-form regime (n < 2 d_in), where the asymptotics hold


def _family_config(name: str, **options) -> bcd_jax.Config:
    algorithm = bcd_jax.get_algorithm({"name": name, **options})
    relu = name.startswith("relu_") or name.startswith("zeng")
    bias = "all" if name.startswith("zeng") else True
    network = bcd_jax.Network(depth=3, width=8, activation="relu" if relu else "leaky_relu", bias=bias)
    if hasattr(algorithm, "k_v"):
        algorithm = bcd_jax.get_algorithm({**algorithm.describe(), "k_v": 2, "k_w": 2})
    if hasattr(algorithm, "spectral_diagnostics"):
        algorithm = bcd_jax.get_algorithm({**algorithm.describe(), "spectral_diagnostics": False})
    return bcd_jax.Config(network=network, algorithm=algorithm)


CONFIGS = {name: (name, {}) for name in bcd_jax.ALGORITHMS if name != "toy_gd"}
CONFIGS.update({f"{name}-exact": (name, {"inner": "exact"}) for name in ("monotone", "relu_skip", "whole_objective")})


def _abstract_problem(config: bcd_jax.Config, n: int):
    return abstract_problem(config.algorithm, config.resolved_network, n, D_IN, D_OUT)


def _loop_memory(config: bcd_jax.Config, n: int):
    """XLA's memory analysis of fit's compiled loop (one sweep and its record) for n samples."""
    data, cache, blocks = _abstract_problem(config, n)
    program = compiled_loop(
        blocks,
        cache,
        data,
        EvalSets(),
        config.hyper_arrays(jnp.float32),
        stop_arrays(config.stop, jnp.float32),
        initial_stop_state(np.nan, jnp.float32),
        algorithm=config.algorithm,
        network=config.resolved_network,
        num_sweeps=1,
    )
    return program.memory_analysis()


def _assert_linear(values, name, slack=0.05):
    """Increments over n -> 2n -> 4n: the second is at most twice the first (plus a little)."""
    a, b, c = values
    assert b - a >= 0 and c - b <= 2 * (b - a) * (1 + slack) + 4096, (name, values)


@pytest.mark.parametrize("label", sorted(CONFIGS))
def test_compiled_sweep_memory_is_linear_in_n(label):
    name, options = CONFIGS[label]
    config = _family_config(name, **options)
    stats = [_loop_memory(config, n) for n in NS]
    _assert_linear([s.temp_size_in_bytes for s in stats], f"{label} temporaries")
    _assert_linear([s.argument_size_in_bytes for s in stats], f"{label} arguments")
    # per sample, the temporaries stay within a few copies of the per-sample blocks (no per-sample
    # workspace of size width^2 or d_in x width)
    data, _, blocks = _abstract_problem(config, NS[0])
    per_sample_blocks = sum(np.prod(b.shape[1:]) * 4 for b in jax.tree.leaves(blocks) if b.ndim and b.shape[0] == NS[0])
    per_sample_temp = (stats[2].temp_size_in_bytes - stats[1].temp_size_in_bytes) / (NS[2] - NS[1])
    assert per_sample_temp <= 12 * (per_sample_blocks + 4 * (D_IN + 1)), (label, per_sample_temp, per_sample_blocks)


@pytest.mark.parametrize("label", sorted(CONFIGS))
def test_sweep_flops_are_linear_in_n(label):
    name, options = CONFIGS[label]
    config = _family_config(name, **options)
    counts = [traced_sweep_flops(config, n, D_IN, D_OUT)["step"] for n in NS]
    _assert_linear(counts, f"{label} FLOPs per sweep", slack=0.01)


@pytest.mark.parametrize("name", ["monotone", "relu_skip"])
def test_exact_first_layer_keeps_no_copy_of_the_data(name):
    # The exact W_1 block keeps the Cholesky factor of X's smaller Gram (min(n, d)^2), not pinv(X) (d x n).
    config = _family_config(name, inner="exact")
    sizes = []
    for n in (4 * D_IN, 16 * D_IN):
        _, cache, _ = _abstract_problem(config, n)
        sizes.append(sum(np.prod(a.shape) for a in jax.tree.leaves(cache)))
    assert sizes[0] == sizes[1] == (D_IN + 1) ** 2


def test_exact_first_layer_applies_the_pseudo_inverse():
    from bcd_jax.algorithms.primitives import apply_pseudo_inverse, least_squares_factor, pseudo_inverse

    rng = np.random.default_rng(0)
    for n, d in ((6, 10), (40, 10)):
        X = jnp.asarray(rng.normal(size=(n, d)))
        R = jnp.asarray(rng.normal(size=(n, 3)))
        with jax.enable_x64(True):
            X, R = X.astype(jnp.float64), R.astype(jnp.float64)
            got = apply_pseudo_inverse(X, least_squares_factor(X), R)
            np.testing.assert_allclose(got, pseudo_inverse(X) @ R, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got, np.linalg.pinv(np.asarray(X)) @ np.asarray(R), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("d_in", [10, 64, 784])
@pytest.mark.parametrize("k_w", [1, 20, 100])
def test_gram_form_only_where_its_n_by_n_gram_is_smaller_than_the_data(d_in, k_w):
    # The K_W loop's Gram form keeps X X^T (n x n): chosen only for n < 2 d_in, so it never holds more
    # than 4 d_in^2 entries, and its 2 n^2 r per step stays under the primal 4 n d_in r.
    algorithm = bcd_jax.Akiyama(k_w=k_w)
    chosen = [n for n in range(1, 4 * d_in) if algorithm.uses_gram_form(n, d_in)]
    assert not chosen or max(chosen) < 2 * d_in


def test_memory_need_is_asked_once_per_program():
    calls = []

    class Stats:
        argument_size_in_bytes, output_size_in_bytes, temp_size_in_bytes, alias_size_in_bytes = 10, 20, 30, 5

    class Program:
        def memory_analysis(self):
            calls.append(1)
            return Stats()

    program = Program()
    assert memory.program_bytes(program) == 55
    assert memory.program_bytes(program) == 55
    assert len(calls) == 1
    assert memory.program_bytes(Program()) == 55 and len(calls) == 2


def _scale_script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "scale.py"
    spec = importlib.util.spec_from_file_location("scale_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_script_slopes_and_study_targets(tmp_path):
    scale = _scale_script()
    assert scale.parse_network("3x1500") == (4, 1500) and scale.parse_network("10x600") == (11, 600)
    cells = [
        {"network": "1x512", "family": "f", "n": n, "seconds_per_sweep": 0.5 + 1e-4 * n} for n in (1e3, 1e4, 6e4, 2e5)
    ]
    slopes = scale.slopes(cells)["1x512 f"]
    assert slopes["points_1e3_6e4"] == 3 and 0.5 < slopes["slope_1e3_6e4"] < 1.0 and slopes["slope_all"] <= 1.0
    assert scale.study_targets(tmp_path / "absent.json") == {}
    study = {  # scripts/study.py's JSON: each problem's strongest backprop baseline and its test metric
        "problems": {
            "digits": {"task": "classification", "target": 0.979, "strongest": "SGD+momentum", "rows": []},
            "diabetes": {"task": "regression", "target": 0.508, "strongest": "Adam (squared)", "rows": []},
            "unfinished": {"task": "classification", "target": None, "strongest": None, "rows": []},
        }
    }
    (tmp_path / "study.json").write_text(json.dumps(study))
    targets = scale.study_targets(tmp_path / "study.json")
    assert targets == {"digits": ("accuracy", 0.979, "SGD+momentum"), "diabetes": ("mse", 0.508, "Adam (squared)")}


def test_scale_script_data_is_mnist_shaped():
    scale = _scale_script()
    for kind in ("mixture", "teacher"):
        X, y = scale.make_data(50, kind)
        assert X.shape == (50, 784) and X.dtype == np.float32 and y.shape == (50,) and 0 <= y.min() <= y.max() < 10
