"""Small shared helpers for the tests (configs by role, data, tolerances, algorithm -> activation, the
common suite's problem, subprocesses with several host devices)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import bcd_jax

# The registered variants of Akiyama's family: the NumPy reference (tests/reference.py) and the
# paper-specific tests cover exactly these, so a new family in the registry does not break them.
AKIYAMA = sorted(name for name in bcd_jax.ALGORITHMS if isinstance(bcd_jax.get_algorithm(name), bcd_jax.Akiyama))

_NETWORK_FIELDS = frozenset(f.name for f in dataclasses.fields(bcd_jax.Network))
_RUN_FIELDS = frozenset(("sweeps", "seed"))


def spec_of(algorithm):
    """The paper switches (skip, project_nonneg, ...) of an Akiyama variant (name or object)."""
    return bcd_jax.get_algorithm(algorithm).spec


def activation_for(algorithm) -> str:
    """Algorithm 1 needs a strictly monotone activation; the ReLU variants use ReLU."""
    return "relu" if spec_of(algorithm).project_nonneg else "leaky_relu"


def config(algorithm="monotone", **fields) -> bcd_jax.Config:
    """A ``Config`` from flat field names, each routed to its role.

    ``depth``, ``width``, ``activation``, ... go to ``network``; the fields of the algorithm's
    ``Hyper`` (``gamma``, ``eta_v``, ...) to ``hyper``; ``sweeps`` and ``seed`` to the run; any
    other name is a structural option of the algorithm (``k_v``, ``inner``, ``svb``, ...).
    """
    base = bcd_jax.get_algorithm(algorithm)
    network, options, hyper, run = {}, {}, {}, {}
    for name, value in fields.items():
        if name in _NETWORK_FIELDS:
            network[name] = value
        elif name in base.Hyper._fields:
            hyper[name] = value
        elif name in _RUN_FIELDS:
            run[name] = value
        else:
            options[name] = value
    if options:
        algorithm = bcd_jax.get_algorithm({**base.describe(), **options})
    return bcd_jax.Config(network=bcd_jax.Network(**network), algorithm=algorithm, hyper=hyper, **run)


def make_data(n, d_in, d_out=1, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_in))
    Y = rng.normal(size=(n, d_out))
    return X.astype(dtype), Y.astype(dtype)


def assert_close(actual, expected, rtol, name=""):
    """Entrywise relative check with an absolute floor scaled to the array's magnitude."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected))), 1e-300) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=name)


def assert_state_matches(state, W_ref, V_ref, rtol):
    """``state`` (a BCDState of ``LayerBlocks``) against reference lists in paper indexing (W[1..L], V[1..L-1])."""
    blocks = state.blocks
    L = len(W_ref) - 1
    assert len(blocks.W) == L and len(blocks.V) == L - 1
    for j in range(1, L + 1):
        assert_close(blocks.W[j - 1], W_ref[j], rtol, f"W_{j}")
    for j in range(1, L):
        assert_close(blocks.V[j - 1], V_ref[j], rtol, f"V_{j}")


def tree_all_finite(tree) -> bool:
    return all(
        bool(np.all(np.isfinite(np.asarray(a))))
        for a in jax.tree.leaves(tree)
        if np.issubdtype(np.asarray(a).dtype, np.floating)
    )


# One small problem shared by many tests, so that their compiled programs are reused.
SMALL_N, SMALL_D_IN, SMALL_D_OUT = 7, 10, 2


def small_config(algorithm="monotone", **overrides) -> bcd_jax.Config:
    """depth 4, width 5, K_V = 3, K_W = 2, 3 sweeps, four different step sizes (flat names, see :func:`config`)."""
    fields = dict(
        activation=activation_for(algorithm),
        negative_slope=0.3,
        depth=4,
        width=5,
        k_v=3,
        k_w=2,
        sweeps=3,
        gamma=0.5,
        eta_v=0.4,
        eta_w=0.3,
        eta_w1=0.2,
    )
    fields.update(overrides)
    return config(algorithm, **fields)


def python_env(**changes: str) -> dict[str, str]:
    """The environment of a Python subprocess: this one's, with a PYTHONPATH that imports this
    bcd_jax (not another checkout's or an installed one) and tests/ (helpers, toy_family)."""
    here = Path(__file__).parent
    path = [str(here), str(Path(bcd_jax.__file__).parent.parent), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p), **changes)


def _host_devices_env(devices: int) -> dict[str, str]:
    """The environment of a subprocess with ``devices`` host CPU devices (conftest's XLA flags kept)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return python_env(XLA_FLAGS=flags, JAX_PLATFORMS="cpu")


def run_on_host_devices(script: str, devices: int, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``python -c script`` with ``devices`` host CPU devices (keeping conftest's XLA flags), in tests/."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env=_host_devices_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).parent,
    )


def assert_layer_blocks_match(state, W_ref, V_ref, rtol):
    """``state`` (a BCDState of ``LayerBlocks``) against reference lists in paper indexing (W[1..L], V[1..L-1]).

    The 0.3 spelling of :func:`assert_state_matches` (blocks ``W`` and ``V``).
    """
    blocks = state.blocks
    L = len(W_ref) - 1
    assert len(blocks.W) == L and len(blocks.V) == L - 1
    for j in range(1, L + 1):
        assert_close(blocks.W[j - 1], W_ref[j], rtol, f"W_{j}")
    for j in range(1, L):
        assert_close(blocks.V[j - 1], V_ref[j], rtol, f"V_{j}")


# The command line in a subprocess: ``python -m bcd_jax`` of THIS checkout (not an installed copy).
REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess that runs this checkout: the repository first on PYTHONPATH
    (conftest's XLA flags kept), and no GPU memory preallocated beside the test process."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return dict(os.environ, PYTHONPATH=path, XLA_PYTHON_CLIENT_PREALLOCATE="false", **extra)


def cli_command(*args) -> list[str]:
    """``python -m bcd_jax ARGS`` (run it with ``env=cli_env()``)."""
    return [sys.executable, "-m", "bcd_jax", *(str(a) for a in args)]


def start_on_host_devices(script: str, devices: int, args=()) -> subprocess.Popen:
    """Starts ``python -c script *args`` as :func:`run_on_host_devices` does, without waiting for it
    (the caller collects it with ``communicate``), so that it runs next to other tests."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=_host_devices_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )


def leaves_equal(a, b) -> bool:
    """Two pytrees of the same structure hold bit-identical leaves (NaN equal to NaN)."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def dtype_rtol(dtype) -> float:
    """A relative tolerance for two computations of the same thing that round differently: 1000 ulps."""
    return 1e3 * float(np.finfo(np.dtype(dtype)).eps)


def assert_trees_close(actual, expected, rtol, name=""):
    """Same structure; float leaves close as :func:`assert_close` (NaN where NaN), others equal."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected), (name, actual, expected)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]
    for path, x, y in zip(paths, jax.tree.leaves(actual), jax.tree.leaves(expected)):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(y.dtype, np.floating):
            nan = np.isnan(y)
            np.testing.assert_array_equal(np.isnan(x), nan, err_msg=f"{name}{path}: NaN pattern")
            assert_close(np.where(nan, 0, x), np.where(nan, 0, y), rtol, f"{name}{path}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{name}{path}")


# -- the common suite's problem (tests/test_families.py and its 8-device subprocess) ----------------
#
# Every registered family trains ONE default problem; a family that cannot run it names the few
# changes it needs here (its network, algorithm options or numbers). A family absent from the table
# (a new one) gets the default, so it is covered by the whole suite without new test code.
FAMILY_N, FAMILY_N_VAL, FAMILY_D_IN, FAMILY_SWEEPS = 24, 8, 6, 4
FAMILY_NETWORK = {"depth": 3, "width": 8, "activation": "leaky_relu", "bias": True}
FAMILY_OVERRIDES = {
    # Step sizes 1 diverge in the first sweep here (n > d_in, outside Theorem 4.1's regime).
    "monotone": {"hyper": {"eta_v": 0.5, "eta_w": 0.5, "eta_w1": 0.5}},
    # Algorithm 3 and its ablation are written for ReLU.
    "relu_skip": {"network": {"activation": "relu"}},
    "relu_noskip": {"network": {"activation": "relu"}},
    # The authors' alpha = 5 lets F grow 1e4-fold within four sweeps here (prox-linear steps are not
    # descent steps); rounding differences would then decide every comparison.
    "zeng_two_splitting": {"hyper": {"alpha": 50.0}},
    # The family for staircase activations runs on a sign network (with ReLU its ramp touches nothing),
    # its ramp 1 in sweep 1, then 0 (0.5 < ramp_min): the ramped pieces first, then the true sign.
    "annealed_three_splitting": {
        "network": {"activation": "sign", "bias": "all"},
        "hyper": {"ramp_decay": 0.5, "ramp_min": 0.6},
    },
}


def family_config(name: str, sweeps: int = FAMILY_SWEEPS, **options) -> bcd_jax.Config:
    """The family ``name`` on the common problem: the default network, its default structure and
    numbers, changed only where :data:`FAMILY_OVERRIDES` says (and by the structural ``options``)."""
    table = FAMILY_OVERRIDES.get(name, {})
    network = bcd_jax.Network(**{**FAMILY_NETWORK, **table.get("network", {})})
    algorithm = bcd_jax.get_algorithm({"name": name, **table.get("algorithm", {}), **options})
    return bcd_jax.Config(network=network, algorithm=algorithm, hyper=table.get("hyper"), sweeps=sweeps)


def family_data(dtype=np.float32):
    """``(X, Y, X_val, Y_val)`` of the common problem: a teacher network's targets, n = 24 (divisible by 8)."""
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=FAMILY_N + FAMILY_N_VAL, d_in=FAMILY_D_IN)
    X, Y = np.asarray(X, dtype), np.asarray(Y, dtype)
    return X[:FAMILY_N], Y[:FAMILY_N], X[FAMILY_N:], Y[FAMILY_N:]
