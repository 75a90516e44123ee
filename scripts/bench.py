"""Benchmark of bcd_jax on this machine: speed per sweep, FLOP rate, reference codes, time to target.

One run measures, on the same machine:

  a. seconds per sweep (median over repeats, after a warm-up call; each repeat times one
     ``bcd_jax.run`` call of several sweeps with ``jax.block_until_ready`` and divides) and
     the compile time, in float32, at the paper's Figure 1 size and at a larger size;
  b. the achieved GFLOP/s (``bcd_jax.algorithms.akiyama_flops.sweep_flops`` incl. diagnostics / time) next to
     this machine's float32 matmul rate (a jitted 2048 x 2048 ``jnp.dot``, median);
     plus a profile of one Figure-1 sweep (the same run with parts of the sweep switched off);
  c. reference points: Algorithm 1's sweep written as the paper's pseudocode reads (a Python
     loop over the samples, NumPy) and a vectorised NumPy version, same update rules, and
     the speedup of bcd_jax over both;
  d. time to target (compiled runs, compilation excluded): bcd_jax against optax Adam and
     SGD backpropagation on the same network, data and initial weights, each method run on
     a small grid of step sizes and credited, per target, with its fastest run; on the
     Figure 1 teacher problem and on the digits of bcd_jax.datasets (regression onto one-hot
     targets). Time to target = (sweeps or steps to reach it) x (median seconds per sweep
     or step of that method's runs here). Writes the digits curves to a PNG.

The per-sample reference of c. is ``bcd_jax.testing.reference_akiyama`` (the tests' NumPy
float64 reference); the backprop runs of d. are ``bcd_jax.baselines.fit_backprop``; the timing
helpers are ``bcd_jax.benchmarking.timing``. e. times 16 members of a grid in one compiled
program (``bcd_jax.run_grid``) against 16 ``bcd_jax.fit`` calls one by one.

The per-sweep times are those of the compiled loop the driver runs (``bcd_jax.run``): a sweep
plus the driver's record of it (objective, training metrics, movement, the stopping rules) and,
by default, the spectral diagnostics.

Usage:
  python scripts/bench.py [--quick] [--out results/bench.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bcd_jax
from bcd_jax.algorithms import make_data
from bcd_jax.baselines import fit_backprop
from bcd_jax.benchmarking import timing
from bcd_jax.benchmarking.akiyama_flops import diagnostics_flops, prepare_flops, sweep_flops, sweep_flops_breakdown
from bcd_jax.benchmarking.flops import traced_sweep_flops
from bcd_jax.datasets import load_digits
from bcd_jax.driver.loop import EvalSets, compiled_loop, run_loop
from bcd_jax.io import atomic_write, atomic_write_text, dumps_json
from bcd_jax.stopping import initial_stop_state, stop_arrays
from bcd_jax.testing import reference_akiyama as reference

ROOT = Path(__file__).resolve().parent.parent

FIG1 = dict(n=500, d_in=600, depth=5, width=30)
LARGE = dict(n=8192, d_in=784, depth=7, width=256)
QUICK_LARGE = dict(n=1024, d_in=256, depth=4, width=64)
ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
SGD_LRS = (0.01, 0.03, 0.1, 0.3)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything --quick changes."""

    quick: bool
    repeats: int  # timing repeats (medians over these)
    fig1_sweeps_per_call: int
    profile: bool  # time the Figure-1 sweep with parts switched off
    large: dict
    large_repeats: int
    large_sweeps_per_call: int
    loop_samples_fig1: int | None  # None: time the whole sweep; else extrapolate from this many samples
    loop_samples_large: int
    vec_samples_large: int | None
    fig1_sweeps: int  # BCD budget for time to target
    fig1_steps: int  # optax budget
    fig1_bcd_grid: tuple
    digits_sweeps: int
    digits_steps: int
    digits_bcd_grid: tuple
    target_repeats: int  # timed repeats of each credited run, truncated at its count
    adam_lrs: tuple = ADAM_LRS
    sgd_lrs: tuple = SGD_LRS
    extra_exact_runs: bool = True  # also time bcd_jax with inner="exact" to the targets


FULL = Settings(
    quick=False,
    repeats=7,
    fig1_sweeps_per_call=20,
    profile=True,
    large=LARGE,
    large_repeats=3,
    large_sweeps_per_call=1,
    loop_samples_fig1=None,
    loop_samples_large=64,
    vec_samples_large=None,
    fig1_sweeps=60,
    fig1_steps=3000,
    fig1_bcd_grid=({}, {"hyper.gamma": 0.4}),
    digits_sweeps=150,
    digits_steps=5000,
    digits_bcd_grid=({}, {"hyper.eta_v": 0.1}, {"hyper.eta_v": 0.02}),
    target_repeats=5,
)
QUICK = Settings(
    quick=True,
    repeats=3,
    fig1_sweeps_per_call=5,
    profile=False,
    large=QUICK_LARGE,
    large_repeats=2,
    large_sweeps_per_call=1,
    loop_samples_fig1=10,
    loop_samples_large=4,
    vec_samples_large=128,
    fig1_sweeps=15,
    fig1_steps=150,
    fig1_bcd_grid=({},),
    digits_sweeps=10,
    digits_steps=150,
    digits_bcd_grid=({"hyper.eta_v": 0.02},),
    target_repeats=1,
    adam_lrs=(1e-2,),
    sgd_lrs=(0.3,),
    extra_exact_runs=False,
)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return float(statistics.median(xs))


# Every timed call is a measurement of this meter: it waits for idle CPUs first (--wait-idle sets
# the limit) and accounts the CPU time other processes take meanwhile.
CONTENTION = timing.Contention()


def measuring():
    return CONTENTION.measure()


def timed(fn, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (each blocked until its result is ready)."""
    return timing.time_calls(fn, repeats, contention=CONTENTION)


def machine_info() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "optax": optax.__version__,
        "bcd_jax": getattr(bcd_jax, "__version__", "?"),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "loadavg_start": timing.load_average(),
    }


class Section:
    """One stage of the benchmark: waits for idle CPUs first (with --wait-idle), then records
    its wall time and the share of the CPUs that OTHER processes used during its measurements."""

    def __init__(self, name: str, record: dict, wait_idle: float):
        self.name, self.record, self.wait_idle = name, record, wait_idle

    def __enter__(self):
        if self.wait_idle > 0:

            def note(busy):
                log(f"   waiting for an idle machine (busy {busy:.0%}) before {self.name}")

            waited, busy = timing.wait_for_idle(self.wait_idle, on_wait=note)
        else:
            waited, busy = 0.0, timing.busy_fraction(0.5)
        self.entry = {"busy_before": busy, "waited_s": waited}
        self.t0 = time.perf_counter()
        CONTENTION.reset()
        return self

    def __exit__(self, *exc):
        self.record[self.name] = {
            **self.entry,
            "wall_s": time.perf_counter() - self.t0,
            "measured_s": CONTENTION.wall_s,
            "others_cpu_fraction": CONTENTION.others_fraction,
        }
        return False


def bcd_fit(X, Y, config, params):
    """``bcd_jax.fit`` from given weights, silent, with its divergence warnings recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bcd_jax.fit(X, Y, config, init_params=params, progress=None)
    return result, [str(w.message) for w in caught]


def fig1_config(depth: int, width: int) -> bcd_jax.Config:
    """The library defaults (= the paper's Figure 1 settings) at this depth and width."""
    return bcd_jax.Config(network=bcd_jax.Network(depth=depth, width=width))


def figure1_problem(data_seed: int, init_seed: int):
    config = fig1_config(FIG1["depth"], FIG1["width"])
    X, Y = bcd_jax.teacher_problem(jax.random.key(data_seed), n=FIG1["n"], d_in=FIG1["d_in"])
    params = bcd_jax.init_params(jax.random.key(init_seed), config, FIG1["d_in"], 1)
    return config, X, Y, params


def digits_problem():
    """All 1797 digits (bcd_jax.datasets' train and test parts, standardised with the training
    part's statistics) with one-hot targets, fitted by regression."""
    data = load_digits()
    X = np.concatenate([data.X_train, data.X_test])
    Y = np.eye(data.num_classes, dtype=np.float32)[np.concatenate([data.y_train, data.y_test])]
    return jnp.asarray(X), jnp.asarray(Y)


# --------------------------------------------------------------------------------------
# a, b: seconds per sweep, compile time, FLOP rate
# --------------------------------------------------------------------------------------


def matmul_peak(size: int, repeats: int) -> dict:
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    times = timed(lambda: dot(a, b), repeats)
    flops = 2 * size**3
    return {
        "size": size,
        "seconds_median": median(times),
        "gflops_median": flops / median(times) / 1e9,
        "gflops_best": flops / min(times) / 1e9,
    }


def compile_seconds(config, state, X, Y, num_sweeps: int) -> float | None:
    """Seconds to trace and compile the multi-sweep loop of ``bcd_jax.run`` ahead of time.

    A fresh ``jax.jit`` of the public ``bcd_jax.driver.loop.run_loop``, so no cached program is reused.
    """
    network = config.resolved_network
    try:
        fn = jax.jit(run_loop, static_argnames=("algorithm", "network", "num_sweeps"))
        data = make_data(X, Y, network)
        t0 = time.perf_counter()
        fn.lower(
            state.blocks,
            state.cache,
            data,
            EvalSets(),
            config.hyper_arrays(X.dtype),
            stop_arrays(config.stop, X.dtype),
            initial_stop_state(np.nan, X.dtype),
            algorithm=config.algorithm,
            network=network,
            num_sweeps=num_sweeps,
        ).compile()
        return time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - fall back to first call - steady call
        log(f"   (ahead-of-time compile failed: {type(exc).__name__}; using first call - steady call)")
        return None


def time_sweeps(config, X, Y, params, sweeps_per_call: int, repeats: int, measure_compile: bool = False) -> dict:
    """Median seconds per sweep of ``bcd_jax.run``, after a warm-up call.

    Compile time: an ahead-of-time compile of the same program when ``measure_compile``,
    else (or if that fails) the first call minus the median steady call.
    """
    state = bcd_jax.init_state(params, X, Y, config)
    jax.block_until_ready(state)
    aot = compile_seconds(config, state, X, Y, sweeps_per_call) if measure_compile else None
    t0 = time.perf_counter()
    jax.block_until_ready(bcd_jax.run(state, X, Y, config, sweeps_per_call))
    first = time.perf_counter() - t0
    calls = timed(lambda: bcd_jax.run(state, X, Y, config, sweeps_per_call), repeats)
    per_sweep = [t / sweeps_per_call for t in calls]
    n, d_in = X.shape
    d_out = Y.shape[1]
    flops = sweep_flops(config, n, d_in, d_out, include_diagnostics=True)
    return {
        "sweeps_per_call": sweeps_per_call,
        "repeats": repeats,
        "seconds_per_sweep": median(per_sweep),
        "seconds_per_sweep_min": min(per_sweep),
        "seconds_per_sweep_max": max(per_sweep),
        "compile_seconds": aot if aot is not None else max(first - median(calls), 0.0),
        "compile_method": "ahead-of-time lower().compile()" if aot is not None else "first call - median call",
        "first_call_seconds": first,
        "gflop_per_sweep": flops / 1e9,
        "gflops": flops / median(per_sweep) / 1e9,
        "flops_breakdown": sweep_flops_breakdown(config, n, d_in, d_out),
        "diagnostics_flops": diagnostics_flops(config, n, d_in, d_out),
    }


def flops_crosscheck(config, n: int, d_in: int, d_out: int) -> dict:
    """The closed-form count against a count of the traced program of one sweep.

    ``bcd_jax.flops.traced_sweep_flops`` counts the algorithm's ``step`` (a sweep and its
    diagnostics), compared with ``sweep_flops(include_diagnostics=True)``, and its ``prepare``
    (the data-only work), compared with ``prepare_flops``. Tracing only: nothing is computed.
    """
    closed = sweep_flops(config, n, d_in, d_out, include_diagnostics=True)
    closed_prepare = prepare_flops(config, n, d_in)
    try:
        traced = traced_sweep_flops(config, n, d_in, d_out)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return {"closed_form": closed, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "closed_form": closed,
        "traced": traced["step"],
        "traced_over_closed": traced["step"] / closed,
        "prepare_closed_form": closed_prepare,
        "prepare_traced": traced["prepare"],
    }


def bench_speed_fig1(settings: Settings) -> dict:
    out = {}
    config, X, Y, params = figure1_problem(0, 1)
    log("a. Figure 1 size: seconds per sweep")
    out["fig1"] = {
        "sizes": FIG1,
        "config": config.to_dict(),
        **time_sweeps(config, X, Y, params, settings.fig1_sweeps_per_call, settings.repeats, True),
    }

    variants = (
        {}
        if not settings.profile
        else {
            "default": {},
            "first_layer_form=primal": {"algorithm.first_layer_form": "primal"},
            "k_v=0 (no V loops)": {"algorithm.k_v": 0},
            "k_w=0 (no W_1 loop)": {"algorithm.k_w": 0},
            "k_v=k_w=0 (single steps + diagnostics)": {"algorithm.k_v": 0, "algorithm.k_w": 0},
            "inner=exact": {"algorithm.inner": "exact"},
        }
    )
    if variants:
        log("   profile of one Figure-1 sweep (parts switched off)")
    profile = {}
    for name, change in variants.items():
        cfg = config.with_overrides(change)
        res = time_sweeps(cfg, X, Y, params, settings.fig1_sweeps_per_call, settings.repeats)
        profile[name] = {k: res[k] for k in ("seconds_per_sweep", "seconds_per_sweep_min", "gflop_per_sweep", "gflops")}
    out["fig1_profile"] = profile
    out["flops_crosscheck"] = {
        "fig1": flops_crosscheck(config, FIG1["n"], FIG1["d_in"], 1),
        "fig1_primal": flops_crosscheck(
            config.with_overrides({"algorithm.first_layer_form": "primal"}), FIG1["n"], FIG1["d_in"], 1
        ),
        "large": flops_crosscheck(
            fig1_config(settings.large["depth"], settings.large["width"]),
            settings.large["n"],
            settings.large["d_in"],
            1,
        ),
    }
    return out


def large_problem(size: dict):
    """Config, data and initial weights of the larger benchmark problem (the same in every stage)."""
    cfg = fig1_config(size["depth"], size["width"])
    X, Y = bcd_jax.teacher_problem(jax.random.key(2), n=size["n"], d_in=size["d_in"])
    return cfg, X, Y, bcd_jax.init_params(jax.random.key(3), cfg, size["d_in"], 1)


def bench_speed_large(settings: Settings) -> dict:
    out = {}
    size = settings.large
    log(f"a. larger size {size}: seconds per sweep")
    cfg, X, Y, params = large_problem(size)
    out["large"] = {
        "sizes": size,
        "config": cfg.to_dict(),
        **time_sweeps(cfg, X, Y, params, settings.large_sweeps_per_call, settings.large_repeats, True),
        "memory": compiled_memory(cfg, X, Y, params),
    }
    return out


def bench_sweep_throughput(settings: Settings) -> dict:
    """16 members of a grid in one compiled program (``bcd_jax.run_grid``) against 16 ``fit`` calls one by one.

    Both sides run the Figure 1 configuration for 5 sweeps from seeds 0..15 with the same
    numbers; each is compiled and run once before timing, and the best of the repeats is kept.
    On CPU ``run_grid`` runs the members one after another inside its one program (its default
    ``batch_size=1``: Akiyama's singular value bounding calls LAPACK, which a batch of members on
    CPU would call concurrently); the one-by-one side pays a host call, its checks and its record
    transfers per member.
    """
    log("e. grid throughput: 16 members in one program vs one by one")
    members, sweeps = 16, 5
    n, d_in = (64, 96) if settings.quick else (FIG1["n"], FIG1["d_in"])
    config = fig1_config(FIG1["depth"], 8 if settings.quick else FIG1["width"]).with_overrides({"sweeps": sweeps})
    X, Y = bcd_jax.teacher_problem(jax.random.key(0), n=n, d_in=d_in)
    seeds = np.arange(members)
    hyper = type(config.hyper)(*(np.full(members, float(v), np.float32) for v in config.hyper))

    def one_program():
        return bcd_jax.run_grid(X, Y, config, hyper, seeds).wall_time

    def one_by_one():
        t0 = time.perf_counter()
        for seed in seeds:
            jax.block_until_ready(bcd_jax.fit(X, Y, config, key=jax.random.key(int(seed)), progress=None).params)
        return time.perf_counter() - t0

    one_program(), one_by_one()  # compile both programs
    repeats = 2 if settings.quick else 3
    with measuring():
        batched = min(one_program() for _ in range(repeats))
    with measuring():
        sequential = min(one_by_one() for _ in range(repeats))
    return {
        "members": members,
        "sweeps": sweeps,
        "sizes": {"n": n, "d_in": d_in, "depth": config.network.depth, "width": config.network.width},
        "one_program_seconds": batched,
        "one_by_one_seconds": sequential,
        "speedup": sequential / batched,
    }


def compiled_memory(cfg, X, Y, params) -> dict:
    """XLA's buffer plan for fit's compiled run (blocks donated), next to the O(n r L) state size."""
    network = cfg.resolved_network
    state = bcd_jax.init_state(params, X, Y, cfg)
    compiled = compiled_loop(
        state.blocks,
        state.cache,
        make_data(X, Y, network),
        EvalSets(),
        cfg.hyper_arrays(X.dtype),
        stop_arrays(cfg.stop, X.dtype),
        initial_stop_state(np.nan, X.dtype),
        algorithm=cfg.algorithm,
        network=network,
        num_sweeps=1,
    )
    mem = compiled.memory_analysis()
    item = X.dtype.itemsize
    n, _ = X.shape
    info = {
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),
        "state_bytes": int(sum(np.asarray(a).nbytes for a in jax.tree.leaves(state))),
        "data_bytes": int((X.size + Y.size) * item),
        "hidden_bytes_n_r_L": int(n * network.width * (network.depth - 1) * item),
    }
    info["peak_bytes"] = info["argument_bytes"] + info["output_bytes"] - info["alias_bytes"] + info["temp_bytes"]
    return info


# --------------------------------------------------------------------------------------
# c: NumPy references (Algorithm 1, the library's update rules)
# --------------------------------------------------------------------------------------


def numpy_sweep_loop(W, V, X, Y, config):
    """One sweep of ``bcd_jax.testing.reference_akiyama``: the pseudocode as it reads, one sample at a time (float64).

    Python loops over the samples and the inner iterations, activations written out by hand;
    the tests' reference of the same update rules (per-sample 1/2 ||.||^2, mean weight
    gradients, primal K_W loop). Takes and returns bcd_jax's ``(W_1..W_L)``, ``(V_1..V_{L-1})``.
    """
    network, algorithm, h = config.resolved_network, config.algorithm, config.hyper
    act = reference.reference_activation(network.layer_activations[0].name, network.negative_slope)
    V_paper = [np.asarray(X, np.float64)] + [np.asarray(v, np.float64) for v in V]
    W_paper, V_paper = reference.sweep(
        reference.as_paper(W),
        V_paper,
        np.asarray(Y, np.float64),
        act=act,
        spec=algorithm.spec,
        gamma=h.gamma,
        eta_v=h.eta_v,
        eta_w=h.eta_w,
        eta_w1=h.eta_w1,
        k_v=algorithm.k_v,
        k_w=algorithm.k_w,
    )
    return W_paper[1:], V_paper[1:]


def _leaky(a):
    a32, one = np.float32(a), np.float32(1.0)

    def value_and_slope(z):
        pos = z >= 0
        return np.where(pos, z, a32 * z), np.where(pos, one, a32)

    return value_and_slope


def numpy_sweep_vectorised(W, V, X, Y, config):
    """The same Algorithm-1 sweep (LeakyReLU, primal K_W loop) with every per-sample loop a batched NumPy product."""
    act = _leaky(config.network.negative_slope)
    f32 = np.float32
    h, k_v, k_w = config.hyper, config.algorithm.k_v, config.algorithm.k_w
    gamma, eta_v, eta_w, eta_w1 = f32(h.gamma), f32(h.eta_v), f32(h.eta_w), f32(h.eta_w1)
    W = list(W)
    V = list(V)
    n, L = X.shape[0], len(W)
    W[-1] = W[-1] - eta_w * ((V[-1] @ W[-1].T - Y).T @ V[-1]) / f32(n)
    V[-1] = V[-1] - eta_v * ((V[-1] @ W[-1].T - Y) @ W[-1])
    for j in range(L - 1, 1, -1):
        w, v_prev, v_next = W[j - 1], ([X] + V)[j - 1], V[j - 1]
        s, ds = act(v_prev @ w.T)
        W[j - 1] = w = w - gamma * eta_w * ((ds * (s - v_next)).T @ v_prev) / f32(n)
        u = v_prev
        for _ in range(k_v):
            s, ds = act(u @ w.T)
            u = u - (gamma * eta_v) * ((ds * (s - v_next)) @ w)
        V[j - 2] = u
    for _ in range(k_w):
        s, ds = act(X @ W[0].T)
        W[0] = W[0] - gamma * eta_w1 * ((ds * (s - V[0])).T @ X) / f32(n)
    return W, V


def _state_numpy(config, X, Y, params):
    state = bcd_jax.init_state(params, X, Y, config)
    blocks = state.blocks
    return (
        [np.asarray(w) for w in blocks.W],
        [np.array(v) for v in blocks.V],
        np.asarray(X),
        np.asarray(Y),
        state,
    )


def _max_rel_diff(a_list, b_list) -> float:
    return max(
        float(np.max(np.abs(a - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-30))
        for a, b in zip(a_list, b_list)
    )


def time_numpy_reference(fn, config, X, Y, params, samples: int | None, repeats: int) -> dict:
    """Seconds of one sweep of ``fn``; with ``samples``, timed on the first ``samples`` rows x n/samples."""
    W, V, Xn, Yn, _ = _state_numpy(config, X, Y, params)
    n, d_in = Xn.shape
    m = n if samples is None or samples >= n else samples
    Vm = [v[:m] for v in V]
    if m < n:  # keep the K_W loop stable on the subset (its Gram is larger per sample); same operations
        config = config.with_overrides({"hyper.eta_w1": config.hyper.eta_w1 * m / max(n, d_in)})
    times = []
    for _ in range(repeats):
        Vc = [v.copy() for v in Vm]
        with measuring():
            t0 = time.perf_counter()
            fn(W, Vc, Xn[:m], Yn[:m], config)
            times.append((time.perf_counter() - t0) * n / m)
    return {"seconds_per_sweep": median(times), "samples_timed": m, "extrapolated": m < n, "repeats": repeats}


def bench_references_fig1(settings: Settings) -> dict:
    out = {}
    config, X, Y, params = figure1_problem(0, 1)
    log("c. NumPy references, Figure 1 size (agreement check, then timing)")
    W, V, Xn, Yn, state = _state_numpy(config, X, Y, params)
    jax_state, _ = bcd_jax.sweep(state, X, Y, config)
    jax_blocks = list(jax_state.blocks.W) + list(jax_state.blocks.V)
    Wv, Vv = numpy_sweep_vectorised(W, [v.copy() for v in V], Xn, Yn, config)
    agreement = {"vectorised_vs_bcd_jax_max_rel_diff": _max_rel_diff(Wv + Vv, jax_blocks)}
    loop = time_numpy_reference(numpy_sweep_loop, config, X, Y, params, settings.loop_samples_fig1, 1)
    if not loop["extrapolated"]:
        Wl, Vl = numpy_sweep_loop(W, [v.copy() for v in V], Xn, Yn, config)
        agreement["loop_vs_bcd_jax_max_rel_diff"] = _max_rel_diff(Wl + Vl, jax_blocks)
    vec = time_numpy_reference(numpy_sweep_vectorised, config, X, Y, params, None, settings.repeats)
    out["fig1"] = {"numpy_loop": loop, "numpy_vectorised": vec, "agreement": agreement}
    return out


def bench_references_large(settings: Settings) -> dict:
    out = {}
    size = settings.large
    log(f"c. NumPy references, larger size {size}")
    cfg, X, Y, params = large_problem(size)
    loop = time_numpy_reference(numpy_sweep_loop, cfg, X, Y, params, settings.loop_samples_large, 1)
    vec = time_numpy_reference(numpy_sweep_vectorised, cfg, X, Y, params, settings.vec_samples_large, 1)
    out["large"] = {"numpy_loop": loop, "numpy_vectorised": vec}
    return out


def speedups(speed: dict, references: dict, peak: dict) -> None:
    """Adds the matmul-peak fractions and the speedups over the NumPy references (in place)."""
    for key in ("fig1", "large"):
        speed[key]["fraction_of_matmul_peak"] = speed[key]["gflops"] / peak["gflops_median"]
        jax_s = speed[key]["seconds_per_sweep"]
        ref = references[key]
        ref["bcd_jax_seconds_per_sweep"] = jax_s
        ref["speedup_vs_loop"] = ref["numpy_loop"]["seconds_per_sweep"] / jax_s
        ref["speedup_vs_vectorised"] = ref["numpy_vectorised"]["seconds_per_sweep"] / jax_s
    # The NumPy codes run the primal K_W loop; bcd_jax's default picks the Gram form at the Figure-1 size.
    primal = speed.get("fig1_profile", {}).get("first_layer_form=primal")
    if primal:
        ref = references["fig1"]
        ref["bcd_jax_primal_seconds_per_sweep"] = primal["seconds_per_sweep"]
        primal_s = primal["seconds_per_sweep"]
        ref["speedup_vs_vectorised_same_form"] = ref["numpy_vectorised"]["seconds_per_sweep"] / primal_s
        ref["speedup_vs_loop_same_form"] = ref["numpy_loop"]["seconds_per_sweep"] / primal_s


# --------------------------------------------------------------------------------------
# d: time to target
# --------------------------------------------------------------------------------------


def steps_to(history: np.ndarray, target: float) -> int | None:
    """First index k (k sweeps/steps done) with ``history[k] <= target``; None if never."""
    hit = np.nonzero(np.isfinite(history) & (history <= target))[0]
    return int(hit[0]) if hit.size else None


def _run_summary(label, history, wall, steps, compile_time, rerun, extra=None):
    finite = history[np.isfinite(history)]
    return {
        "label": label,
        "steps": steps,
        "seconds_per_step": wall / steps,
        "compile_seconds": compile_time,
        "initial_mse": float(history[0]),
        "final_mse": float(finite[-1]) if finite.size else float("nan"),
        "min_mse": float(finite.min()) if finite.size else float("nan"),
        "diverged": bool(finite.size < history.size),
        **(extra or {}),
        "_history": history,
        "_rerun": rerun,  # rerun(k, repeats) -> wall seconds of k sweeps/steps, compilation excluded
    }


def _bcd_rerun(X, Y, cfg, params):
    def rerun(k: int, repeats: int) -> list[float]:
        state = bcd_jax.init_state(params, X, Y, cfg)
        jax.block_until_ready(bcd_jax.run(state, X, Y, cfg, k))  # compiles
        return timed(lambda: bcd_jax.run(state, X, Y, cfg, k), repeats)

    return rerun


def backprop(X, Y, cfg, params, make, lr, steps: int):
    """``bcd_jax.baselines.fit_backprop`` on the squared error (bcd_jax's ``train_mse``), full batch.

    The optimiser factory ``make`` (``optax.adam``, ``optax.sgd``) gets the learning rate as a
    traced number, so a learning-rate grid compiles once.
    """
    return fit_backprop(X, Y, cfg, optimizer=make, learning_rate=lr, steps=steps, init_params=params, loss="squared")


def _optax_rerun(X, Y, cfg, params, make, lr):
    def rerun(k: int, repeats: int) -> list[float]:
        times = []
        for _ in range(repeats):
            with measuring():
                times.append(backprop(X, Y, cfg, params, make, lr, k).wall_time)
        return times

    return rerun


def run_bcd_grid(X, Y, base, params, grid, sweeps, label_prefix="bcd_jax") -> list[dict]:
    runs = []
    for change in grid:
        cfg = base.with_overrides({"sweeps": sweeps, **change})
        with measuring():
            res, warns = bcd_fit(X, Y, cfg, params)
        done = max(res.sweeps_completed, 1)
        hist = np.asarray(res.history.train_mse, np.float64)
        label = label_prefix + " " + (", ".join(f"{k}={v}" for k, v in change.items()) or "default")
        runs.append(
            _run_summary(
                label,
                hist,
                res.wall_time,
                done,
                res.compile_time,
                _bcd_rerun(X, Y, cfg, params),
                {"config_change": change, "diverged_at": res.diverged_at, "warnings": warns[:3]},
            )
        )
        log(f"   {label}: {runs[-1]['seconds_per_step'] * 1e3:.1f} ms/sweep, final MSE {runs[-1]['final_mse']:.3g}")
    return runs


def run_optax_grid(X, Y, config, params, name, make, lrs, steps) -> list[dict]:
    runs = []
    for lr in lrs:
        with measuring():
            res = backprop(X, Y, config, params, make, lr, steps)
        hist = np.asarray(res.history.train_mse, np.float64)  # mean ||f(x) - y||^2, as bcd_jax's train_mse
        runs.append(
            _run_summary(
                f"{name} lr={lr}",
                hist,
                res.wall_time,
                steps,
                res.compile_time,
                _optax_rerun(X, Y, config, params, make, lr),
                {"lr": lr},
            )
        )
        last = runs[-1]
        log(f"   {name} lr={lr}: {last['seconds_per_step'] * 1e3:.3f} ms/step, final MSE {last['final_mse']:.3g}")
    return runs


def credit(runs: list[dict], targets: dict[str, float], repeats: int) -> dict:
    """Per target, the method's run that needs the fewest sweeps/steps, timed directly.

    The credited run is re-run truncated at that count (compiled once, then ``repeats``
    timed calls; median), so per-call work such as ``bcd_jax.run``'s data preparation is
    included. ``estimate_seconds`` = count x the method's median seconds per step.
    """
    per_step = median([r["seconds_per_step"] for r in runs])
    out = {"seconds_per_step_median": per_step, "targets": {}}
    cache: dict[tuple[str, int], list[float]] = {}
    for name, value in targets.items():
        best = None
        for r in runs:
            k = steps_to(r["_history"], value)
            if k is not None and (best is None or k < best[0]):
                best = (k, r)
        if best is None:
            out["targets"][name] = {"reached": False, "best_mse": min(r["min_mse"] for r in runs)}
            continue
        k, r = best
        if (r["label"], k) not in cache:
            cache[(r["label"], k)] = r["_rerun"](k, repeats) if k > 0 else [0.0]
        times = cache[(r["label"], k)]
        out["targets"][name] = {
            "reached": True,
            "steps": k,
            "seconds": median(times),
            "seconds_all": times,
            "estimate_seconds": k * per_step,
            "run": r["label"],
        }
    return out


def compare(
    problem: str,
    X,
    Y,
    base,
    params,
    settings: Settings,
    bcd_grid,
    bcd_sweeps,
    optax_steps,
    extra_bcd: dict | None,
    targets_rel: tuple,
    targets_abs: tuple,
) -> dict:
    log(f"d. time to target: {problem}")
    methods = {"bcd_jax": run_bcd_grid(X, Y, base, params, bcd_grid, bcd_sweeps)}
    for name, change in (extra_bcd if settings.extra_exact_runs else {}).items():
        methods[name] = run_bcd_grid(X, Y, base, params, (change,), bcd_sweeps)
    methods["adam"] = run_optax_grid(X, Y, base, params, "adam", optax.adam, settings.adam_lrs, optax_steps)
    methods["sgd"] = run_optax_grid(X, Y, base, params, "sgd", optax.sgd, settings.sgd_lrs, optax_steps)
    initial = float(methods["bcd_jax"][0]["initial_mse"])
    targets = {f"<= {k:g} x initial": k * initial for k in targets_rel}
    targets.update({f"<= {v:g} absolute": v for v in targets_abs})
    log("   timing the credited runs truncated at their counts")
    credited = {name: credit(runs, targets, settings.target_repeats) for name, runs in methods.items()}
    return {
        "problem": problem,
        "initial_mse": initial,
        "targets": targets,
        "budget": {"bcd_sweeps": bcd_sweeps, "optax_steps": optax_steps},
        "credited": credited,
        "runs": {
            name: [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
            for name, runs in methods.items()
        },
        "_methods": methods,
    }


def plot_digits(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def best(runs):
        return min(runs, key=lambda r: r["final_mse"] if np.isfinite(r["final_mse"]) else np.inf)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"bcd_jax": ("C0", "-"), "bcd_jax inner=exact": ("C0", ":"), "adam": ("C1", "-"), "sgd": ("C2", "--")}
    for name, runs in result["_methods"].items():
        if name not in styles:
            continue
        r = best(runs)
        per_step = result["credited"][name]["seconds_per_step_median"]
        h = r["_history"]
        t = np.arange(h.size) * per_step
        color, ls = styles[name]
        ax.plot(t[1:], h[1:], color=color, ls=ls, label=f"{r['label']}  ({per_step * 1e3:.2f} ms/step)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time, compilation excluded [s]")
    ax.set_ylabel("training MSE  mean_i ||f(x_i) - y_i||^2")
    ax.set_title(
        "digits (n=1797, d_in=64, one-hot d_out=10), L=5, r=30\n"
        "same network, data and initial weights; best run of each method",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt_s(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} us"


def report(results: dict) -> str:
    lines = []
    m = results["machine"]
    lines.append("== machine ==")
    lines.append(
        f"{m['platform']} | {m['cpu_model']} | {m['cpu_count']} CPUs | jax {m['jax']} on {m['device']} | "
        f"numpy {m['numpy']} | optax {m['optax']} | load avg start {m['loadavg_start']} "
        f"end {m.get('loadavg_end')}"
    )
    sec = results.get("sections", {})
    if sec:
        shares = ", ".join(
            f"{k} {v['others_cpu_fraction']:.0%}" if v["others_cpu_fraction"] is not None else f"{k} ?"
            for k, v in sec.items()
        )
        lines.append(
            f"CPU share taken by OTHER processes while each stage measured (timings are inflated when high): {shares}"
        )
    peak = results["matmul_peak"]
    lines.append(
        f"float32 matmul {peak['size']}^2 (jitted jnp.dot): {peak['gflops_median']:.1f} GFLOP/s median, "
        f"{peak['gflops_best']:.1f} best"
    )

    s = results["speed"]
    lines.append("")
    lines.append("== a/b. bcd_jax float32 seconds per sweep (bcd_jax.run, median over repeats) ==")
    lines.append(
        f"{'size':<40} {'s/sweep (min..max)':<28} {'compile':>9} {'GFLOP/sweep':>12} {'GFLOP/s':>8} {'% matmul':>9}"
    )
    for key in ("fig1", "large"):
        r = s[key]
        z = r["sizes"]
        name = f"{key}: n={z['n']} d_in={z['d_in']} r={z['width']} L={z['depth']}"
        span = (
            f"{fmt_s(r['seconds_per_sweep'])} "
            f"({fmt_s(r['seconds_per_sweep_min'])}..{fmt_s(r['seconds_per_sweep_max'])})"
        )
        lines.append(
            f"{name:<40} {span:<28} {fmt_s(r['compile_seconds']):>9} {r['gflop_per_sweep']:>12.2f} "
            f"{r['gflops']:>8.1f} {100 * r['fraction_of_matmul_peak']:>8.0f}%"
        )
    mem = s["large"].get("memory")
    if mem:
        mib = 2.0**20
        lines.append(
            f"large: XLA buffers of the compiled run {mem['peak_bytes'] / mib:.0f} MiB (arguments "
            f"{mem['argument_bytes'] / mib:.0f}, temporaries {mem['temp_bytes'] / mib:.0f}, outputs "
            f"{mem['output_bytes'] / mib:.0f}, donated {mem['alias_bytes'] / mib:.0f}); "
            f"data {mem['data_bytes'] / mib:.0f} MiB, "
            f"V's n*r*(L-1) {mem['hidden_bytes_n_r_L'] / mib:.0f} MiB"
        )
    if s["fig1_profile"]:
        lines.append("profile of one Figure-1 sweep (same run, parts switched off):")
    for name, r in s["fig1_profile"].items():
        lines.append(
            f"  {name:<42} {fmt_s(r['seconds_per_sweep']):>9}/sweep (min {fmt_s(r['seconds_per_sweep_min'])})"
            f" {r['gflop_per_sweep']:>7.3f} GFLOP {r['gflops']:>7.1f} GFLOP/s"
        )

    xc = s.get("flops_crosscheck", {})
    if xc:
        ratios = ", ".join(
            f"{k} {v['traced_over_closed']:.4f}x" if "traced" in v else f"{k} n/a ({v['error'][:60]})"
            for k, v in xc.items()
        )
        lines.append(f"sweep_flops vs a count of the traced program of one sweep: {ratios}")
    c = results["references"]
    lines.append("")
    lines.append(
        "== c. reference implementations of the same sweep (reference_akiyama per-sample loop in float64; "
        "vectorised NumPy and bcd_jax in float32) =="
    )
    lines.append(
        f"{'size':<8} {'numpy per-sample loop':<32} {'numpy vectorised':<20} {'bcd_jax':<10} {'x vs loop':>9} "
        f"{'x vs vec':>9}"
    )
    for key in ("fig1", "large"):
        r = c[key]
        lp = r["numpy_loop"]
        note = f" (from {lp['samples_timed']} samples)" if lp["extrapolated"] else ""
        vp = r["numpy_vectorised"]
        vnote = f" (from {vp['samples_timed']})" if vp["extrapolated"] else ""
        lines.append(
            f"{key:<8} {fmt_s(lp['seconds_per_sweep']) + note:<32} "
            f"{fmt_s(vp['seconds_per_sweep']) + vnote:<20} {fmt_s(r['bcd_jax_seconds_per_sweep']):<10} "
            f"{r['speedup_vs_loop']:>9.0f} {r['speedup_vs_vectorised']:>9.1f}"
        )
    if "speedup_vs_vectorised_same_form" in c["fig1"]:
        f = c["fig1"]
        lines.append(
            f"fig1 with the same primal K_W loop as the NumPy codes (first_layer_form='primal'): bcd_jax "
            f"{fmt_s(f['bcd_jax_primal_seconds_per_sweep'])}/sweep, "
            f"{f['speedup_vs_loop_same_form']:.0f}x vs loop, "
            f"{f['speedup_vs_vectorised_same_form']:.1f}x vs vectorised"
        )
    lines.append(f"agreement with bcd_jax.sweep (max relative difference): {c['fig1']['agreement']}")

    for key in ("fig1_target", "digits_target"):
        t = results[key]
        lines.append("")
        lines.append(f"== d. time to target: {t['problem']} (initial MSE {t['initial_mse']:.4g}; compile excluded) ==")
        lines.append(
            f"{'target':<22} {'method':<20} {'time':>10} {'/ bcd_jax':>10} {'steps':>6} {'est. time':>10} "
            f"{'s/step':>9}  credited run"
        )
        for tname in t["targets"]:
            bcd = t["credited"]["bcd_jax"]["targets"][tname]
            for method, cr in t["credited"].items():
                e = cr["targets"][tname]
                per = fmt_s(cr["seconds_per_step_median"])
                if e["reached"]:
                    ratio = f"{e['seconds'] / bcd['seconds']:.3g}x" if bcd["reached"] and bcd["seconds"] > 0 else "-"
                    lines.append(
                        f"{tname:<22} {method:<20} {fmt_s(e['seconds']):>10} {ratio:>10} {e['steps']:>6} "
                        f"{fmt_s(e['estimate_seconds']):>10} {per:>9}  {e['run']}"
                    )
                else:
                    lines.append(
                        f"{tname:<22} {method:<20} {'not reached':>10} {'':>10} {'':>6} {'':>10} {per:>9}  "
                        f"best MSE {e['best_mse']:.3g}"
                    )
        lines.append(
            "runs: "
            + "; ".join(
                f"{r['label']}: min {r['min_mse']:.3g}" + (" DIVERGED" if r["diverged"] else "")
                for runs in t["runs"].values()
                for r in runs
            )
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bench.json", help="JSON output path (parents are created)")
    parser.add_argument("--plot", default=None, help="digits PNG path (default: bench_digits.png next to --out)")
    parser.add_argument("--quick", action="store_true", help="small sizes and budgets: a smoke test in under a minute")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each stage wait up to SECONDS (before each timed repeat up to 20 s) for the "
        "CPUs to be idle: other jobs on the machine inflate timings",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    CONTENTION.wait_idle = min(args.wait_idle, 20.0)
    out = Path(args.out)
    plot_path = Path(args.plot) if args.plot else out.with_name("bench_digits.png")
    t_start = time.perf_counter()

    results = {"settings": dataclasses.asdict(settings), "machine": machine_info(), "sections": {}}

    def section(name):
        return Section(name, results["sections"], args.wait_idle)

    with section("matmul"):
        log("b. float32 matmul rate")
        results["matmul_peak"] = matmul_peak(2048, 10 if not settings.quick else 3)
    with section("speed_fig1"):
        results["speed"] = bench_speed_fig1(settings)
    with section("speed_large"):
        results["speed"].update(bench_speed_large(settings))
    with section("references_fig1"):
        results["references"] = bench_references_fig1(settings)
    with section("references_large"):
        results["references"].update(bench_references_large(settings))
    speedups(results["speed"], results["references"], results["matmul_peak"])

    with section("target_fig1"):
        config, X, Y, params = figure1_problem(0, 1)
        results["fig1_target"] = compare(
            "Figure 1 teacher (n=500, d_in=600, L=5, r=30, LeakyReLU 0.5)",
            X,
            Y,
            config,
            params,
            settings,
            settings.fig1_bcd_grid,
            settings.fig1_sweeps,
            settings.fig1_steps,
            {"bcd_jax inner=exact": {"algorithm.inner": "exact"}},
            targets_rel=(1e-4,),
            targets_abs=(6e-5,),
        )
    with section("target_digits"):
        Xd, Yd = digits_problem()
        dcfg = fig1_config(FIG1["depth"], FIG1["width"])
        dparams = bcd_jax.init_params(jax.random.key(1), dcfg, Xd.shape[1], Yd.shape[1])
        results["digits_target"] = compare(
            "digits (n=1797, d_in=64, one-hot d_out=10, L=5, r=30)",
            Xd,
            Yd,
            dcfg,
            dparams,
            settings,
            settings.digits_bcd_grid,
            settings.digits_sweeps,
            settings.digits_steps,
            {"bcd_jax inner=exact": {"algorithm.inner": "exact", "hyper.eta_v": 0.02}},
            targets_rel=(0.2, 1e-2, 1e-4),
            targets_abs=(6e-5,),
        )
    plot_digits(results["digits_target"], plot_path)
    with section("sweep_throughput"):
        results["sweep_throughput"] = bench_sweep_throughput(settings)
    results["machine"]["loadavg_end"] = timing.load_average()
    results["total_seconds"] = time.perf_counter() - t_start
    results["digits_plot"] = str(plot_path)

    text = report(results)
    tp = results["sweep_throughput"]
    text += (
        f"\n\n== e. sweep throughput ({tp['members']} members x {tp['sweeps']} sweeps, n={tp['sizes']['n']}) ==\n"
        f"one compiled program {fmt_s(tp['one_program_seconds'])}, one by one {fmt_s(tp['one_by_one_seconds'])}: "
        f"{tp['speedup']:.2f}x"
    )
    print(text)
    print(f"\nwrote {out} and {plot_path} in {results['total_seconds']:.0f} s")
    for key in ("fig1_target", "digits_target"):
        results[key].pop("_methods")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, dumps_json(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
