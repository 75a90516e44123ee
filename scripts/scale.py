"""Scale benchmark: every family on MNIST-shaped synthetic data, seconds per sweep and memory against n.

Data: d_in = 784 features, 10 classes, a Gaussian mixture (``--data mixture``: class means of
standard deviation 0.1 per feature, a rank-16 common factor and unit noise) or the labels of a
random teacher network (``--data teacher``). Networks (``--networks``): ``1x512``, ``3x1500`` (Zeng
et al.'s shallow MNIST network) and ``10x600`` (their deep one), written hidden layers x width.
Sizes (``--n``): 1e3, 1e4, 6e4, 2e5. Families (``--families``, :data:`FAMILIES`): every registered
family in the setting of the digits study (``configs/study/digits_*.toml``; Algorithm 1 and 3 with
K_V = K_W = 20 and automatic steps, Algorithm 1 also with ``inner="exact"``, the whole-objective
family exact with K = 1 and as gd with K = 10, Zeng's two forms with the authors' numbers, ReLU
and a bias in every layer; ``annealed_three_splitting`` on sign activations with weight decay 10),
plus mini-batch Adam (batch 128, learning rate 1e-3) as the
reference: its row is seconds per EPOCH. Spectral diagnostics are OFF in every family
(``spectral_diagnostics=False``): the benchmark times the sweep and the driver's record
(objective, training metrics, movement), not the singular values.

Each cell (network, family, n) runs in its own process (so its peak memory is its own, and a cell
that the machine cannot hold fails alone): it builds the data, asks XLA for the compiled program's
memory need before anything large is allocated (``bcd_jax.driver.memory``: a cell whose need
exceeds ``--memory-limit`` or the free memory is skipped with its estimate), runs ``bcd_jax.fit``
for 1-5 sweeps (one sweep per compiled chunk; the first chunk also records the initial state, so
seconds per sweep is the fastest of the later chunks -- other processes on a shared machine only
add time -- with the median next to it in the JSON) and reports:

* seconds per sweep, compile seconds, the 1-minute load average before and after;
* peak memory: the process's peak resident set (``ru_maxrss``: Python, JAX, the data and every
  buffer) and XLA's estimate of the compiled loop (arguments + outputs + temporaries);
* GFLOP per sweep, counted on the traced program (``bcd_jax.benchmarking.flops.jaxpr_flops`` of
  the family's ``step`` and the driver's record), the achieved GFLOP/s and its fraction of this
  machine's float32 matmul rate, measured in the same process just before (a jitted 2048^2 dot);
* for every (network, family) the fitted slope of log(seconds per sweep) against log(n) over
  1e3 <= n <= 6e4 (the target is <= 1.1) and over every n measured.

A cell is skipped (with its reason) when its predicted time -- its traced FLOPs at the FLOP rate the
same (network, family) achieved at the previous n (the first n: at 30% of the matmul rate) --
exceeds ``--cell-budget`` seconds, when a smaller n did not fit in memory, or when the whole run has
used ``--total-budget`` (the extras below get 10 minutes more, the memory estimates 5); for the
largest n skipped for time, XLA's memory need is still reported (compiled from abstract shapes, not
run). Cells run for n <= 6e4 first (the first network's rows, then
the target below, then the other networks n by n), then the extras below, then the largest n.
``--merge A.json B.json ...`` rewrites the tables and the plot from several runs' JSON (the cells of
all, the extras of the first that has them). Also measured (not with --quick):

* sample sharding over host devices: the 1x512 cells of three families at ``--shard-n`` run again
  on ``--shard-devices`` CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count``) with
  ``fit(mesh=...)``;
* the GPU: when ``jax.devices()`` has a GPU the 1x512 row runs again there; otherwise the script
  says that no GPU was found and skips it;
* the target whole_objective (exact) vs Adam: at n = 6e4, 1x512, one process alternates a
  whole_objective sweep and an Adam epoch (batch 128) three times (ratio of the fastest of each,
  and of the medians: same process, same load);
* the bundled real sets (digits, breast cancer, diabetes: ``configs/study/<set>_<family>.toml``,
  test set recorded every sweep): seconds per sweep, final test metric and the time to the
  strongest backprop baseline's test metric. That target is read from ``results/study.json``
  (written by ``scripts/study.py``: for each problem the best test metric among its Adam / SGD /
  backprop rows); without that file the column is a marked placeholder.

Writes ``OUT/scale.json``, ``OUT/scale.md`` (the tables) and ``OUT/scale.png`` (log-log seconds per
sweep against n), OUT = ``results/scale``.

    python scripts/scale.py --quick                 # a few small cells, < 3 minutes on 2 cores
    python scripts/scale.py                         # everything (about 45 minutes on 2 cores)
    python scripts/scale.py --n 1000 10000 --networks 1x512 --families whole_objective_exact adam
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
D_IN = 784
CLASSES = 10
NS = (1000, 10_000, 60_000, 200_000)
NETWORKS = ("1x512", "3x1500", "10x600")
SLOPE_RANGE = (1000, 60_000)
SLOPE_TARGET = 1.1
MEMORY_TARGET_GIB = 4.0
ADAM_RATIO_TARGET = 10.0

# name -> (algorithm settings, network settings, hyper). Spectral diagnostics off everywhere.
FAMILIES: dict[str, tuple[dict, dict, dict]] = {
    "monotone": (
        {"name": "monotone", "k_v": 20, "k_w": 20, "step_size": "auto", "spectral_diagnostics": False},
        {"activation": "leaky_relu", "bias": True, "loss": "softmax_cross_entropy"},
        {"gamma": 0.2},
    ),
    "monotone_exact": (
        {"name": "monotone", "inner": "exact", "spectral_diagnostics": False},
        {"activation": "leaky_relu", "bias": True, "loss": "softmax_cross_entropy"},
        {"gamma": 0.2},
    ),
    "relu_skip": (
        {"name": "relu_skip", "k_v": 20, "k_w": 20, "step_size": "auto", "spectral_diagnostics": False},
        {"activation": "relu", "bias": True, "loss": "softmax_cross_entropy"},
        {"gamma": 0.2},
    ),
    "relu_noskip": (
        {"name": "relu_noskip", "k_v": 20, "k_w": 20, "step_size": "auto", "spectral_diagnostics": False},
        {"activation": "relu", "bias": True, "loss": "softmax_cross_entropy"},
        {"gamma": 0.2},
    ),
    "whole_objective_exact": (
        {"name": "whole_objective", "inner": "exact", "k_v": 1, "k_w": 1, "spectral_diagnostics": False},
        {"activation": "leaky_relu", "bias": True, "loss": "squared_multiclass"},
        {"gamma": 1.0, "weight_decay": 1e-3},
    ),
    "whole_objective_gd": (
        {"name": "whole_objective", "inner": "gd", "k_v": 10, "k_w": 10, "spectral_diagnostics": False},
        {"activation": "leaky_relu", "bias": True, "loss": "squared_multiclass"},
        {"gamma": 1.0, "weight_decay": 1e-3},
    ),
    "zeng_three_splitting": (
        {"name": "zeng_three_splitting"},
        {"activation": "relu", "bias": "all", "loss": "squared_multiclass"},
        {},
    ),
    "zeng_two_splitting": (
        {"name": "zeng_two_splitting"},
        {"activation": "relu", "bias": "all", "loss": "squared_multiclass"},
        {},
    ),
    # sign activations (the binary-network family; its sweep is Zeng's three-splitting plus the ramp)
    "annealed_three_splitting": (
        {"name": "annealed_three_splitting"},
        {"activation": "sign", "bias": "all", "loss": "squared_multiclass"},
        {"weight_decay": 10.0},
    ),
    # the reference: mini-batch Adam (batch 128, lr 1e-3) on the network's cross-entropy; seconds per EPOCH
    "adam": ({}, {"activation": "relu", "bias": True, "loss": "softmax_cross_entropy"}, {}),
}
QUICK_FAMILIES = ("monotone", "whole_objective_exact", "zeng_three_splitting", "adam")
REAL_SETS = ("digits", "breast_cancer", "diabetes")
REAL_FAMILIES = ("monotone", "whole_objective", "zeng_three_splitting", "zeng_two_splitting")

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def parse_network(spec: str) -> tuple[int, int]:
    """``"3x1500"`` -> (depth L = hidden layers + 1, width)."""
    hidden, width = spec.lower().split("x")
    return int(hidden) + 1, int(width)


# --------------------------------------------------------------------------------------
# One cell, in its own process
# --------------------------------------------------------------------------------------


def make_data(n: int, kind: str, seed: int = 0):
    """MNIST-shaped synthetic data: ``X (n, 784)`` float32 and integer labels ``y (n,)`` in 0..9."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "mixture":
        means = 0.1 * rng.standard_normal((CLASSES, D_IN), dtype=np.float32)
        factor = rng.standard_normal((16, D_IN), dtype=np.float32) / 4.0
        y = rng.integers(0, CLASSES, n).astype(np.int32)
        X = rng.standard_normal((n, D_IN), dtype=np.float32)
        X += means[y]
        X += rng.standard_normal((n, 16), dtype=np.float32) @ factor
        return X, y
    if kind == "teacher":
        X = rng.standard_normal((n, D_IN), dtype=np.float32)
        w1 = rng.standard_normal((D_IN, 64), dtype=np.float32) / math.sqrt(D_IN)
        w2 = rng.standard_normal((64, CLASSES), dtype=np.float32) / 8.0
        y = np.argmax(np.maximum(X @ w1, 0) @ w2, axis=1).astype(np.int32)
        return X, y
    raise ValueError(f"--data: expected mixture or teacher, got {kind!r}")


def build_config(family: str, network: str, sweeps: int):
    import bcd_jax

    depth, width = parse_network(network)
    algorithm, net, hyper = FAMILIES[family]
    if family == "adam":
        algorithm = {"name": "whole_objective", "spectral_diagnostics": False}  # only the network matters
    alg = bcd_jax.get_algorithm(dict(algorithm))
    return bcd_jax.Config(
        network=bcd_jax.Network(depth=depth, width=width, **net), algorithm=alg, hyper=hyper, sweeps=sweeps
    )


def matmul_rate(repeats: int = 3, size: int = 2048) -> float:
    """This process's float32 matmul rate (GFLOP/s, best of ``repeats`` jitted ``size``^2 products)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, a))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(dot(a, a))
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def sweep_flops(config, n: int) -> int:
    """FLOPs of one sweep as the driver runs it: the family's step and the record (traced, nothing computed)."""
    import jax
    import jax.numpy as jnp

    from bcd_jax.benchmarking.flops import jaxpr_flops, traced_sweep_flops
    from bcd_jax.driver.loop import EvalSets, abstract_problem, sweep_record

    step = traced_sweep_flops(config, n, D_IN, CLASSES)["step"]
    algorithm, network = config.algorithm, config.resolved_network
    data, cache, blocks = abstract_problem(algorithm, network, n, D_IN, CLASSES)
    hyper = jax.tree.map(lambda v: jax.ShapeDtypeStruct((), jnp.float32), config.hyper)
    extras = jax.eval_shape(lambda b, d, c, h: algorithm.step(b, d, c, h, network)[1], blocks, data, cache, hyper)
    record = jaxpr_flops(
        lambda b, d, h, e: sweep_record(algorithm, b, e, d, EvalSets(), h, network, 0.0), blocks, data, hyper, extras
    )
    return int(step + record)


def forward_flops(network, n: int) -> int:
    shapes = network.layer_shapes(D_IN, CLASSES)
    return 2 * n * sum(a * b for a, b in shapes)


def loop_memory_need(config, data, cache, blocks, dtype) -> int | None:
    """XLA's memory need of fit's compiled loop (one sweep a chunk) for these blocks, concrete or abstract
    (``compiled_loop`` caches the program: the one fit compiled is found again, not recompiled)."""
    import numpy as np

    from bcd_jax.driver.loop import EvalSets, compiled_loop
    from bcd_jax.driver.memory import program_bytes
    from bcd_jax.stopping import initial_stop_state, stop_arrays

    program = compiled_loop(
        blocks,
        cache,
        data,
        EvalSets(),
        config.hyper_arrays(dtype),
        stop_arrays(config.stop, dtype),
        initial_stop_state(np.nan, dtype),
        algorithm=config.algorithm,
        network=config.resolved_network,
        num_sweeps=1,
    )
    return program_bytes(program)


def abstract_memory_need(config, n: int) -> int | None:
    """XLA's memory need of fit's compiled loop for n samples, from abstract shapes (nothing allocated)."""
    import jax.numpy as jnp

    from bcd_jax.driver.loop import abstract_problem

    data, cache, blocks = abstract_problem(config.algorithm, config.resolved_network, n, D_IN, CLASSES)
    return loop_memory_need(config, data, cache, blocks, jnp.float32)


def run_cell(spec: dict) -> dict:
    """One (network, family, n) cell; returns its record (called in the cell's own process)."""
    import warnings

    import jax
    import numpy as np

    import bcd_jax
    from bcd_jax.driver.memory import MemoryNeedError, available_bytes

    family, network, n = spec["family"], spec["network"], spec["n"]
    out = {**spec, "platform": jax.devices()[0].platform, "devices": len(jax.devices())}
    out["load_before"] = load1()
    out["matmul_gflops"] = matmul_rate()
    config = build_config(family, network, spec["sweeps"])
    limit = spec["memory_limit_gib"] * 2**30
    free = available_bytes()
    if family != "adam" and spec.get("precheck"):
        need = abstract_memory_need(config, n)
        out["xla_bytes_precheck"] = need
        if need is not None and (need > limit or (free is not None and need > 0.9 * free)):
            out["skipped"] = (
                f"memory: XLA needs {need / 2**30:.1f} GiB for the compiled loop, over the "
                f"{'limit of ' + format(spec['memory_limit_gib'], 'g') + ' GiB' if need > limit else 'free memory'}"
                f" ({(free or 0) / 2**30:.1f} GiB free)"
            )
            return out
    X, y = make_data(n, spec["data"])
    X, y = jax.device_put(X), jax.device_put(y)
    out["flops_per_sweep"] = spec.get("flops") or cell_flops(family, network, n)
    if family == "adam":
        import optax

        from bcd_jax.baselines import fit_backprop

        epochs = spec["sweeps"]
        times = []
        for _ in range(epochs):  # one epoch per call (compiled once): the least disturbed epoch
            res = fit_backprop(X, y, config, optimizer=optax.adam, learning_rate=1e-3, epochs=1, batch_size=128)
            times.append(res.wall_time)
        out["chunk_seconds"] = times
        out["seconds_per_sweep"] = float(np.min(times))
        out["seconds_per_sweep_median"] = float(np.median(times))
        out["compile_seconds"] = res.compile_time
        out["train_accuracy"] = float(res.history.train_accuracy[-1])
    else:
        mesh = None
        if spec.get("shard"):
            mesh = jax.make_mesh((len(jax.devices()),), ("samples",))
        stamps = []

        def callback(done, _history):
            stamps.append(time.perf_counter())

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = bcd_jax.fit(X, y, config, mesh=mesh, callback=callback, progress=None)
            except MemoryNeedError as exc:
                out["skipped"] = str(exc).split(". Options")[0]
                return out
        # chunk k (one sweep each) ends at stamps[k]; the first also records the initial state
        later_chunks = list(np.diff(stamps))
        chunks = [result.wall_time - sum(later_chunks), *later_chunks]
        later = chunks[1:] if len(chunks) > 1 else chunks
        out["chunk_seconds"] = [float(c) for c in chunks]
        # the least disturbed sweep: on a shared machine other processes only ever add time
        out["seconds_per_sweep"] = float(np.min(later))
        out["seconds_per_sweep_median"] = float(np.median(later))
        out["compile_seconds"] = result.compile_time
        out["wall_seconds"] = result.wall_time
        out["sweeps_done"] = result.sweeps_completed
        out["status"] = result.status.name
        out["train_accuracy"] = float(result.history.train_accuracy[-1])
        out["objective"] = [float(v) for v in result.history.objective]
        out["warnings"] = [str(w.message)[:200] for w in caught][:3]
        if not spec.get("shard"):
            out["xla_bytes"] = _program_need(config, result, X, y)
    out["gflops"] = out["flops_per_sweep"] / out["seconds_per_sweep"] / 1e9
    out["fraction_of_matmul"] = out["gflops"] / out["matmul_gflops"]
    out["load_after"] = load1()
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["data_bytes"] = int(X.nbytes + y.nbytes)
    out["free_bytes_at_start"] = free
    return out


def _program_need(config, result, X, y) -> int | None:
    """XLA's memory need of the loop fit compiled (from the compiled-program cache: no recompile)."""
    from bcd_jax.algorithms.base import make_data as data_of
    from bcd_jax.driver.functional import checked_data

    Xc, Yc = checked_data(X, y, config)
    state = result.state
    return loop_memory_need(config, data_of(Xc, Yc, config.resolved_network), state.cache, state.blocks, Xc.dtype)


def run_target(spec: dict) -> dict:
    """whole_objective (exact) sweeps against Adam epochs (batch 128), alternating, in one process."""
    import jax
    import numpy as np
    import optax

    import bcd_jax
    from bcd_jax.baselines import fit_backprop

    n, network = spec["n"], spec["network"]
    out = {**spec, "load_before": load1(), "matmul_gflops": matmul_rate()}
    X, y = make_data(n, spec["data"])
    X, y = jax.device_put(X), jax.device_put(y)
    wo = build_config("whole_objective_exact", network, 1)
    adam = build_config("adam", network, 1)
    wo_t, adam_t = [], []
    for _ in range(spec["rounds"]):
        res = bcd_jax.fit(X, y, wo, progress=None)
        wo_t.append(res.wall_time)
        back = fit_backprop(X, y, adam, optimizer=optax.adam, learning_rate=1e-3, epochs=1, batch_size=128)
        adam_t.append(back.wall_time)
        log(f"   target round: whole_objective sweep {res.wall_time:.2f} s, Adam epoch {back.wall_time:.2f} s")
    out["whole_objective_sweep_seconds"] = wo_t
    out["adam_epoch_seconds"] = adam_t
    out["ratio"] = float(np.min(wo_t) / np.min(adam_t))  # the least disturbed of each
    out["ratio_of_medians"] = float(np.median(wo_t) / np.median(adam_t))
    out["load_after"] = load1()
    return out


def run_real(spec: dict) -> dict:
    """Each family's study configuration on a bundled real set: seconds per sweep, test metric per sweep."""
    import warnings

    import numpy as np

    import bcd_jax
    from bcd_jax.experiments import experiment_data, load_experiment

    out = {**spec, "load_before": load1(), "rows": []}
    for family in REAL_FAMILIES:
        path = ROOT / "configs" / "study" / f"{spec['set']}_{family}.toml"
        if not path.exists():
            continue
        experiment = load_experiment(path)
        config = experiment.config
        split = experiment_data(experiment)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = bcd_jax.fit(split.X_train, split.y_train, config, test=(split.X_test, split.y_test), progress=None)
        classification = config.resolved_network.loss_fn.task != "regression"
        curve = np.asarray(result.history.test_accuracy if classification else result.history.test_mse)
        out["rows"].append(
            {
                "family": family,
                "config": str(path.relative_to(ROOT)),
                "n": int(len(split.X_train)),
                "sweeps": result.sweeps_completed,
                "seconds_per_sweep": result.wall_time / max(result.sweeps_completed, 1),
                "metric": "accuracy" if classification else "mse",
                "test_curve": [float(v) for v in curve],
            }
        )
    out["load_after"] = load1()
    return out


def run_estimate(spec: dict) -> dict:
    """XLA's memory need of each cell's compiled loop (from abstract shapes: nothing allocated or run)."""
    t0 = time.perf_counter()
    out = {"cells": []}
    for cell in spec["cells"]:
        if time.perf_counter() - t0 > spec.get("deadline", math.inf):
            break
        config = build_config(cell["family"], cell["network"], 1)
        try:
            out["cells"].append({**cell, "need": abstract_memory_need(config, cell["n"])})
        except Exception as exc:  # noqa: BLE001
            out["cells"].append({**cell, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return out


def child_main(kind: str, spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        result = {"cell": run_cell, "target": run_target, "real": run_real, "estimate": run_estimate}[kind](spec)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not fatal to the benchmark
        import traceback

        result = {
            **spec,
            "error": f"{type(exc).__name__}: {str(exc)[:400]}",
            "traceback": traceback.format_exc()[-2000:],
        }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------
# The parent: cells in subprocesses, skipping, tables, plot
# --------------------------------------------------------------------------------------


def spawn(kind: str, spec: dict, *, platform_name: str = "cpu", devices: int = 1, timeout: float = 1800) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["JAX_PLATFORMS"] = platform_name
    if devices > 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s", "cell_seconds": timeout}
    elapsed = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[7:]), "cell_seconds": elapsed}
    reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit code {proc.returncode}"
    return {**spec, "error": f"{reason}: {proc.stderr.strip()[-400:]}", "cell_seconds": elapsed}


def fitted_slope(points) -> float | None:
    import numpy as np

    points = [(n, t) for n, t in points if t and t > 0]
    if len(points) < 2:
        return None
    x, yv = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, yv, 1)[0])


def slopes(cells: list[dict]) -> dict:
    out = {}
    keys = sorted(
        {(c["network"], c["family"]) for c in cells if c.get("platform", "cpu") == "cpu" and not c.get("shard")}
    )
    for network, family in keys:
        pts = [
            (c["n"], c.get("seconds_per_sweep"))
            for c in cells
            if c["network"] == network and c["family"] == family and not c.get("shard") and "seconds_per_sweep" in c
        ]
        in_range = [p for p in pts if SLOPE_RANGE[0] <= p[0] <= SLOPE_RANGE[1]]
        flops = [
            (c["n"], c.get("flops_per_sweep"))
            for c in cells
            if c["network"] == network
            and c["family"] == family
            and not c.get("shard")
            and "seconds_per_sweep" in c
            and SLOPE_RANGE[0] <= c["n"] <= SLOPE_RANGE[1]
        ]
        out[f"{network} {family}"] = {
            "flop_slope_1e3_6e4": fitted_slope(flops),
            "slope_1e3_6e4": fitted_slope(in_range),
            "points_1e3_6e4": len(in_range),
            "slope_all": fitted_slope(pts),
            "points_all": len(pts),
        }
    return out


def fmt_s(x) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1e3:.1f} ms"


def fmt_gib(b) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def cell_table(cells: list[dict], title: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| network | family | n | s / sweep | compile | peak RSS GiB | XLA need GiB | GFLOP / sweep | GFLOP/s "
        "| % of matmul | load 1-min (before/after) | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        note = c.get("skipped") or c.get("error") or ""
        if c["family"] == "adam" and "seconds_per_sweep" in c:
            note = "s per epoch (batch 128)" + (f"; {note}" if note else "")
        if c.get("shard"):
            note = f"sharded over {c.get('devices')} host devices" + (f"; {note}" if note else "")
        gf = c.get("flops_per_sweep")
        rate = "-" if "gflops" not in c else f"{c['gflops']:.1f}"
        share = "-" if "fraction_of_matmul" not in c else f"{100 * c['fraction_of_matmul']:.0f}%"
        lines.append(
            f"| {c['network']} | {c['family']} | {c['n']:.0e} | {fmt_s(c.get('seconds_per_sweep'))} | "
            f"{fmt_s(c.get('compile_seconds'))} | {fmt_gib(c.get('peak_rss_bytes'))} | "
            f"{fmt_gib(c.get('xla_bytes', c.get('xla_bytes_precheck')))} | "
            f"{'-' if gf is None else f'{gf / 1e9:.1f}'} | "
            f"{rate} | {share} | "
            f"{c.get('load_before', '-')}/{c.get('load_after', '-')} | {note.replace('|', '/')[:160]} |"
        )
    return lines


def study_targets(path: Path) -> dict:
    """``{problem: (metric, the strongest baseline's test metric, its method)}`` from scripts/study.py's
    JSON (each problem's ``target`` and ``strongest``: the baseline it chose as the strongest), or {}."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    out = {}
    for name, block in data.get("problems", {}).items():
        if block.get("target") is None or not block.get("strongest"):
            continue
        metric = "mse" if block.get("task") == "regression" else "accuracy"
        out[name] = (metric, float(block["target"]), block["strongest"])
    return out


def real_table(real: list[dict], targets: dict, study_path: Path) -> list[str]:
    lines = [
        "### Bundled real sets (each family's study configuration; test metric recorded every sweep)",
        "",
    ]
    if not targets:
        lines += [
            f"**Placeholder:** `{study_path}` not found: the column 'time to the strongest baseline' is filled "
            "from it (run `python scripts/study.py` first, then this script again).",
            "",
        ]
    lines += [
        "| set | family | n | sweeps | s / sweep | final test | strongest baseline (study.json) | time to it |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for block in real:
        if "error" in block:
            lines.append(f"| {block['set']} | error: {block['error'][:120]} | | | | | | |")
            continue
        target = targets.get(block["set"])
        for r in block["rows"]:
            curve = r["test_curve"]
            final = curve[-1]
            shown = f"{100 * final:.1f}%" if r["metric"] == "accuracy" else f"{final:.4f}"
            if target is None:
                goal, reach = "PLACEHOLDER (no results/study.json)", "PLACEHOLDER"
            else:
                metric, value, method = target
                goal = f"{100 * value:.1f}% ({method})" if metric == "accuracy" else f"{value:.4f} ({method})"
                hit = next(
                    (k for k, v in enumerate(curve) if (v >= value if metric == "accuracy" else v <= value)), None
                )
                reach = "never" if hit is None else fmt_s(hit * r["seconds_per_sweep"]) + f" ({hit} sweeps)"
            lines.append(
                f"| {block['set']} | {r['family']} | {r['n']} | {r['sweeps']} | {fmt_s(r['seconds_per_sweep'])} "
                f"| {shown} | {goal} | {reach} |"
            )
    return lines


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = sorted({c["network"] for c in cells}, key=lambda s: parse_network(s))
    fig, axes = plt.subplots(1, len(networks), figsize=(5.2 * len(networks), 4.4), squeeze=False)
    for ax, network in zip(axes[0], networks):
        families = sorted({c["family"] for c in cells if c["network"] == network})
        for family in families:
            pts = sorted(
                (c["n"], c["seconds_per_sweep"])
                for c in cells
                if c["network"] == network
                and c["family"] == family
                and "seconds_per_sweep" in c
                and not c.get("shard")
                and c.get("platform", "cpu") == "cpu"
            )
            if pts:
                style = "k--" if family == "adam" else "-o"
                ax.plot(*zip(*pts), style, label=family + (" (s/epoch)" if family == "adam" else ""), ms=4)
        ns = sorted({c["n"] for c in cells if c["network"] == network})
        if ns:
            ref = [ns[0], ns[-1]]
            ax.plot(ref, [1e-2, 1e-2 * ref[1] / ref[0]], ":", color="gray", label="slope 1")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (samples)")
        ax.set_ylabel("seconds per sweep")
        ax.set_title(f"{network}, d_in = 784, 10 classes")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def detect_gpu() -> tuple[bool, str]:
    """Whether JAX sees a GPU (asked in a subprocess, so this process never initialises a backend)."""
    env = dict(os.environ)
    env.pop("JAX_PLATFORMS", None)
    code = "import jax; print(','.join(sorted({d.platform for d in jax.devices()})))"
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        platforms = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "?"
    except (subprocess.TimeoutExpired, IndexError):
        platforms = "?"
    gpu = any(p in platforms for p in ("gpu", "cuda", "rocm"))
    return gpu, platforms


_FLOPS: dict[tuple[str, str, int], int] = {}


def cell_flops(family: str, network: str, n: int) -> int:
    """FLOPs of one sweep (or, for Adam, one epoch) of a cell, traced in this process (cached)."""
    key = (family, network, n)
    if key not in _FLOPS:
        config = build_config(family, network, 1)
        if family == "adam":
            net = config.resolved_network
            _FLOPS[key] = 3 * forward_flops(net, (n // 128) * 128) + forward_flops(net, n)
        else:
            _FLOPS[key] = sweep_flops(config, n)
    return _FLOPS[key]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a few small cells (n 1e3, 4e3; 1x512; 4 families): < 3 minutes"
    )
    parser.add_argument("--n", type=float, nargs="+", default=None, help=f"sample sizes (default {NS})")
    parser.add_argument("--networks", nargs="+", default=None, help=f"hidden layers x width (default {NETWORKS})")
    parser.add_argument("--families", nargs="+", default=None, choices=sorted(FAMILIES), help="default: all")
    parser.add_argument("--data", default="mixture", choices=("mixture", "teacher"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "scale")
    parser.add_argument("--memory-limit", type=float, default=16.0, metavar="GIB", help="skip cells needing more")
    parser.add_argument("--cell-budget", type=float, default=150.0, metavar="S", help="skip cells predicted longer")
    parser.add_argument("--total-budget", type=float, default=2400.0, metavar="S", help="stop starting cells after")
    parser.add_argument("--shard-devices", type=int, default=2)
    parser.add_argument("--shard-n", type=float, default=10_000)
    parser.add_argument("--no-extras", action="store_true", help="only the cells: no sharding, GPU, target, real sets")
    parser.add_argument("--study-json", type=Path, default=ROOT / "results" / "study.json")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON", help="rewrite OUT from these runs' JSON")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.merge:
        return merge(args)
    # this process only traces programs (FLOP counts): it never takes a GPU from the cells
    os.environ["JAX_PLATFORMS"] = "cpu"

    ns = sorted(int(x) for x in args.n) if args.n else ([1000, 4000] if args.quick else list(NS))
    networks = args.networks or (["1x512"] if args.quick else list(NETWORKS))
    families = args.families or (list(QUICK_FAMILIES) if args.quick else list(FAMILIES))
    for spec in networks:
        parse_network(spec)
    extras = not args.no_extras and not args.quick
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "command": "python scripts/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_start": list(os.getloadavg()),
        },
        "settings": {
            "n": ns,
            "networks": networks,
            "families": {f: FAMILIES[f] for f in families},
            "data": args.data,
            "d_in": D_IN,
            "classes": CLASSES,
            "spectral_diagnostics": False,
            "memory_limit_gib": args.memory_limit,
            "cell_budget_s": args.cell_budget,
            "total_budget_s": args.total_budget,
        },
        "cells": [],
    }
    cells = results["cells"]
    parent_rate = matmul_rate() * 1e9
    results["machine"]["matmul_gflops_start"] = parent_rate / 1e9
    history: dict[tuple[str, str], list[dict]] = {}  # (network, family) -> cells run, n ascending
    blocked: dict[tuple[str, str], str] = {}  # (network, family) -> why larger n are skipped

    def over_budget(extra: float = 0.0) -> bool:
        return time.perf_counter() - started > args.total_budget + extra

    def run_row(network: str, family: str, sizes) -> None:
        for n in sizes:
            key = (network, family)
            spec = {
                "family": family,
                "network": network,
                "n": n,
                "data": args.data,
                "memory_limit_gib": args.memory_limit,
                "precheck": n >= 50_000,
            }
            reason = blocked.get(key)
            if reason is None:
                if history.get(key):  # the last cell's achieved FLOP rate, the traced FLOPs of this one
                    last = history[key][-1]
                    rate = last["flops_per_sweep"] / last["seconds_per_sweep"]
                    basis = f"the FLOPs of this cell at the rate of n = {last['n']}"
                else:
                    rate = 0.3 * parent_rate
                    basis = f"the FLOPs of this cell at 30% of the matmul rate, {parent_rate / 1e9:.0f} GFLOP/s"
                predicted = cell_flops(family, network, n) / rate
                spec["predicted_seconds_per_sweep"] = predicted
                sweeps = 5 if predicted < 2 else 3 if predicted < 10 else 2 if predicted < 40 else 1
                # the first chunk also records the initial state; compiling and the data cost ~20 s more
                if predicted * sweeps + 20 > args.cell_budget:
                    reason = (
                        f"time: predicted {predicted:.0f} s per sweep ({basis}), over the cell budget of "
                        f"{args.cell_budget:.0f} s"
                    )
            if reason is None and over_budget():
                reason = f"time: the run's budget of {args.total_budget:.0f} s was used up"
            if reason is not None:
                log(f"skip {network} {family} n={n}: {reason}")
                cells.append({**spec, "skipped": reason})
                continue
            spec["sweeps"] = sweeps
            spec["flops"] = cell_flops(family, network, n)
            log(f"cell {network} {family} n={n} ({sweeps} sweeps), load {load1()}")
            cell = spawn("cell", spec)
            cells.append(cell)
            save_partial(results, args.out)
            if "seconds_per_sweep" in cell:
                history.setdefault(key, []).append(cell)
                log(
                    f"   {fmt_s(cell['seconds_per_sweep'])}/sweep, peak {fmt_gib(cell.get('peak_rss_bytes'))} GiB, "
                    f"{cell.get('gflops', 0):.1f} GFLOP/s, cell {cell['cell_seconds']:.0f} s"
                )
            else:
                why = cell.get("skipped") or cell.get("error", "")
                log(f"   not run: {why[:300]}")
                blocked[key] = f"memory: n = {n} did not fit" if "skipped" in cell else f"n = {n} failed"

    # 1. every network and family up to n = 6e4 (the slopes), the 1x512 row first
    small = [n for n in ns if n <= SLOPE_RANGE[1]]
    large = [n for n in ns if n > SLOPE_RANGE[1]]
    first, others = networks[:1], networks[1:]
    for family in families:
        run_row(first[0], family, small)
    if extras and first == ["1x512"]:
        # 2. the whole_objective (exact) vs Adam target, same process, alternating
        log("target: whole_objective (exact) sweep vs Adam epoch, n = 60000, 1x512, alternating")
        results["target"] = spawn("target", {"n": 60_000, "network": "1x512", "data": args.data, "rounds": 3})
    for n in small:  # the other networks n by n, so that the budget cuts the most expensive cells
        for network in others:
            for family in families:
                run_row(network, family, [n])
    if extras:
        # 4. sample sharding over host devices
        results["sharded"] = []
        if args.shard_devices > 1:
            for family in ("whole_objective_exact", "zeng_three_splitting", "monotone"):
                if family not in families or over_budget(extra=600):  # the extras: 10 minutes more
                    continue
                spec = {
                    "family": family,
                    "network": "1x512",
                    "n": int(args.shard_n),
                    "data": args.data,
                    "memory_limit_gib": args.memory_limit,
                    "sweeps": 3,
                    "shard": True,
                }
                log(f"sharded cell 1x512 {family} n={int(args.shard_n)} on {args.shard_devices} host devices")
                results["sharded"].append(spawn("cell", spec, devices=args.shard_devices))
        # 5. the GPU
        gpu, platforms = detect_gpu()
        results["gpu"] = {"found": gpu, "platforms": platforms, "cells": []}
        if not gpu:
            log(f"no GPU found (JAX platforms: {platforms}): the GPU run is skipped")
        else:
            for family in families:
                for n in ns:
                    spec = {
                        "family": family,
                        "network": "1x512",
                        "n": n,
                        "data": args.data,
                        "memory_limit_gib": 1e9,
                        "sweeps": 3,
                    }
                    log(f"GPU cell 1x512 {family} n={n}")
                    results["gpu"]["cells"].append(spawn("cell", spec, platform_name="cuda"))
        # 6. the bundled real sets
        results["real"] = []
        for name in REAL_SETS:
            if over_budget(extra=600):
                break
            log(f"real set {name}")
            results["real"].append(spawn("real", {"set": name}))
    # 7. the largest n (after the extras, which the budget must not squeeze out)
    for network in networks:
        for family in families:
            run_row(network, family, large)
    cells.sort(key=lambda c: (networks.index(c["network"]), families.index(c["family"]), c["n"]))
    results["slopes"] = slopes(cells)

    if extras:
        # 8. XLA's memory need of the largest cells that were skipped for time (nothing is run)
        todo = [
            {"family": c["family"], "network": c["network"], "n": c["n"]}
            for c in cells
            if c.get("skipped", "").startswith("time") and c["n"] == max(ns) and c["family"] != "adam"
        ]
        allowance = args.total_budget + 300 - (time.perf_counter() - started)  # compiles only: 5 minutes more
        if todo and allowance > 30:
            log(f"memory need of {len(todo)} skipped cells at n = {max(ns)} (compiled, not run)")
            needs = spawn("estimate", {"cells": todo, "deadline": allowance - 20})
            for c in cells:
                for e in needs.get("cells", []):
                    if (c["family"], c["network"], c["n"]) == (e["family"], e["network"], e["n"]) and "need" in e:
                        c["xla_bytes_precheck"] = e["need"]
                        c["skipped"] += f"; XLA would need {e['need'] / 2**30:.1f} GiB"

    results["total_seconds"] = time.perf_counter() - started
    results["machine"]["load_end"] = list(os.getloadavg())
    write_outputs(results, args)
    return 0


def merge(args) -> int:
    """One report from several runs: every run's cells (the later run's cell wins where both ran it), the
    extras (target, sharding, GPU, real sets) of the first run that has each."""
    runs = [json.loads(path.read_text()) for path in args.merge]
    merged = dict(runs[0])
    merged["command"] = " + ".join(r["command"] for r in runs)
    merged["merged_from"] = [str(p) for p in args.merge]
    cells: dict[tuple, dict] = {}
    for run in runs:
        for c in run["cells"]:
            key = (c["network"], c["family"], c["n"])
            if key not in cells or "seconds_per_sweep" in c or "seconds_per_sweep" not in cells[key]:
                cells[key] = c
    order = {net: i for i, net in enumerate(dict.fromkeys(c["network"] for r in runs for c in r["cells"]))}
    fam = {f: i for i, f in enumerate(FAMILIES)}
    merged["cells"] = sorted(cells.values(), key=lambda c: (order[c["network"]], fam.get(c["family"], 99), c["n"]))
    for key in ("target", "sharded", "gpu", "real"):
        found = next((r[key] for r in runs if r.get(key)), None)
        if found is not None:
            merged[key] = found
    merged["slopes"] = slopes(merged["cells"])
    merged["total_seconds"] = sum(r.get("total_seconds", 0) for r in runs)
    merged["machine"] = {**runs[0]["machine"], "load_end": runs[-1]["machine"]["load_end"]}
    args.out.mkdir(parents=True, exist_ok=True)
    write_outputs(merged, args)
    return 0


def targets_summary(results: dict) -> list[str]:
    lines = ["### Targets", ""]
    slopes_ = results.get("slopes", {})
    bad = {k: v["slope_1e3_6e4"] for k, v in slopes_.items() if v["slope_1e3_6e4"] is not None}
    worst = max(bad.items(), key=lambda kv: kv[1]) if bad else None
    if worst:
        over = {k: v for k, v in bad.items() if v > SLOPE_TARGET}
        lines.append(
            f"* time linear in n (log-log slope over 1e3..6e4 <= {SLOPE_TARGET}): "
            + (
                f"MET by all {len(bad)} (network, family) rows with >= 2 points (largest: {worst[0]} {worst[1]:.2f})"
                if not over
                else f"NOT MET by {len(over)} of the {len(bad)} rows with >= 2 points: "
                + "; ".join(f"{k} {v:.2f} ({upper_slope(results['cells'], k)})" for k, v in sorted(over.items()))
            )
        )
    mem = [
        c
        for c in results["cells"]
        if c["network"] == "1x512" and c["n"] == 60_000 and "peak_rss_bytes" in c and c["family"] != "adam"
    ]
    if mem:
        peak = max(mem, key=lambda c: c["peak_rss_bytes"])
        ok = peak["peak_rss_bytes"] < MEMORY_TARGET_GIB * 2**30
        lines.append(
            f"* peak memory at n = 6e4, 1x512 under {MEMORY_TARGET_GIB:g} GiB: {'MET' if ok else 'NOT MET'} "
            f"(largest peak RSS: {peak['family']} {fmt_gib(peak['peak_rss_bytes'])} GiB, whole process)"
        )
    target = results.get("target")
    if target and "ratio" in target:
        ok = target["ratio"] <= ADAM_RATIO_TARGET
        lines.append(
            f"* whole_objective (exact) sweep <= {ADAM_RATIO_TARGET:g} x an Adam epoch (batch 128) at n = 6e4, 1x512: "
            f"{'MET' if ok else 'NOT MET'}: ratio {target['ratio']:.2f} (sweeps "
            f"{', '.join(f'{t:.2f}' for t in target['whole_objective_sweep_seconds'])} s; epochs "
            f"{', '.join(f'{t:.2f}' for t in target['adam_epoch_seconds'])} s; alternating in one process, "
            f"load {target['load_before']}/{target['load_after']})"
        )
    elif target:
        lines.append(f"* whole_objective vs Adam: not measured ({target.get('error', '?')[:200]})")
    return lines


def upper_slope(cells: list[dict], row: str) -> str:
    """The time and FLOP slopes of ``row`` ("network family") between its two largest n <= 6e4: where
    the slope over 1e3..6e4 is above target, this says whether the top of the range is linear."""
    network, family = row.split(" ", 1)
    points = sorted(
        (c["n"], c["seconds_per_sweep"], c.get("flops_per_sweep"))
        for c in cells
        if c["network"] == network and c["family"] == family and "seconds_per_sweep" in c and c["n"] <= 60_000
    )
    if len(points) < 3:
        return "no third point"
    (n0, t0, f0), (n1, t1, f1) = points[-2], points[-1]
    text = f"{n0:.0e}..{n1:.0e}: time slope {math.log(t1 / t0) / math.log(n1 / n0):.2f}"
    if f0 and f1:
        text += f", FLOP slope {math.log(f1 / f0) / math.log(n1 / n0):.2f}"
    return text


def save_partial(results: dict, out: Path) -> None:
    """The results so far, rewritten after every cell: a run that stops early keeps what it measured
    (``--merge OUT/scale.partial.json`` renders it)."""
    from bcd_jax.io import atomic_write_text, dumps_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scale.partial.json", dumps_json(results, indent=1) + "\n")


def write_outputs(results: dict, args) -> None:
    from bcd_jax.io import atomic_write_text, dumps_json

    out = args.out
    cells = results["cells"]
    lines = [
        f"`{results['command'].strip()}` — {results['machine']['platform']}, {results['machine']['cpus']} CPUs, "
        f"load average at start {[round(x, 2) for x in results['machine']['load_start']]}, at end "
        f"{[round(x, 2) for x in results['machine']['load_end']]}; {results['total_seconds']:.0f} s. "
        "Spectral diagnostics off in every family. Data: "
        f"{results['settings']['data']}, d_in = {D_IN}, {CLASSES} classes.",
        "",
    ]
    lines += cell_table(cells, "Seconds per sweep, memory, FLOP rate")
    lines += ["", "### Fitted slope of log(seconds per sweep) against log(n)", ""]
    lines += [
        "| network | family | time slope 1e3..6e4 (points) | FLOP slope 1e3..6e4 | time slope, all n (points) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, s in results["slopes"].items():
        network, family = key.split(" ", 1)

        def show(v, k):
            return "-" if v is None else f"{v:.2f} ({k})"

        lines.append(
            f"| {network} | {family} | {show(s['slope_1e3_6e4'], s['points_1e3_6e4'])} | "
            f"{'-' if s.get('flop_slope_1e3_6e4') is None else format(s['flop_slope_1e3_6e4'], '.2f')} | "
            f"{show(s['slope_all'], s['points_all'])} |"
        )
    if results.get("sharded"):
        lines += [""] + cell_table(results["sharded"], "Sample sharding over host devices (fit(mesh=...))")
    if "gpu" in results:
        lines += ["", "### GPU", ""]
        if results["gpu"]["found"]:
            lines += cell_table(results["gpu"]["cells"], "On the GPU")
        else:
            lines.append(f"No GPU found (JAX platforms: {results['gpu']['platforms']}): the GPU run was skipped.")
    if "real" in results:
        lines += [""] + real_table(results["real"], study_targets(args.study_json), args.study_json)
    lines += [""] + targets_summary(results)
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "scale.md", text)
    atomic_write_text(out / "scale.json", dumps_json(results, indent=1) + "\n")
    if any("seconds_per_sweep" in c for c in cells):
        plot(cells, out / "scale.png")
    print(text)
    print(f"wrote {out}/scale.json, scale.md, scale.png")


if __name__ == "__main__":
    sys.exit(main())
