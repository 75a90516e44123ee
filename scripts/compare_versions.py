"""Figure 1 fit times of two bcd_jax source trees, measured alternately on the same machine.

Each tree runs in its own process (``PYTHONPATH=<tree>``), the trees alternate ``--rounds`` times,
and each process times ``bcd_jax.fit`` at the paper's Figure 1 size (n = 500, d_in = 600, four
hidden LeakyReLU(0.5) layers of width 30, K_V = K_W = 100, all steps 1, gamma = 0.2, seed 1):

* ``gd_50``: Algorithm 1 as the paper runs it, 50 sweeps;
* ``exact_2``: ``inner="exact"``, 2 sweeps (a short fit, where the per-call overhead shows).

Per case: ``fit_wall`` (the compiled run, compilation excluded: the best of 4 calls after a first
one), ``call`` (the whole ``fit`` call, the best of the same 4) and ``first_call`` (with tracing and
compilation). The code uses only names that bcd_jax 0.2 and 0.3 share (``Config``, ``Network``,
``Akiyama``, ``fit``), so a git worktree of an older commit works as a tree::

    git worktree add /tmp/bcd_old 95cc4a2          # bcd_jax 0.2
    python scripts/compare_versions.py /tmp/bcd_old .

The machine is shared and noisy: compare the two trees' numbers within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, time
import jax, numpy as np
import bcd_jax

rng = np.random.default_rng(0)
n, d_in, width = 500, 600, 30
X = rng.normal(size=(n, d_in)).astype(np.float32)
teacher_in = rng.normal(size=(d_in, width)) / np.sqrt(d_in)
teacher_out = rng.normal(size=(width, 1)) / np.sqrt(width)
h = X @ teacher_in
Y = (np.where(h > 0, h, 0.5 * h) @ teacher_out).astype(np.float32)
network = bcd_jax.Network(depth=5, width=width, activation="leaky_relu", negative_slope=0.5)
hyper = {"gamma": 0.2, "eta_v": 1.0, "eta_w": 1.0, "eta_w1": 1.0}
out = {"version": getattr(bcd_jax, "__version__", "?"), "file": bcd_jax.__file__}
for case, inner, sweeps in (("gd_50", "gd", 50), ("exact_2", "exact", 2)):
    algorithm = bcd_jax.Akiyama("monotone", k_v=100, k_w=100, inner=inner)
    config = bcd_jax.Config(network=network, algorithm=algorithm, hyper=hyper, sweeps=sweeps, seed=1)
    walls, calls = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        result = bcd_jax.fit(X, Y, config, key=jax.random.key(1), progress=None)
        calls.append(time.perf_counter() - t0)
        walls.append(result.wall_time)
    out[case] = {"fit_wall": min(walls[1:]), "call": min(calls[1:]), "first_call": calls[0]}
print(json.dumps(out))
"""


def measure(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: the timing process failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, type=Path, help="two source trees (each holding bcd_jax/)")
    parser.add_argument("--rounds", type=int, default=2, help="times the two trees alternate")
    args = parser.parse_args(argv)
    for tree in args.trees:
        if not (tree / "bcd_jax" / "__init__.py").is_file():
            parser.error(f"trees: {str(tree)!r} has no bcd_jax/__init__.py; expected a bcd_jax source tree")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-minute load average at the start: {load:.2f}")
    best: dict[str, dict[str, dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for tree in args.trees:
            numbers = measure(tree.resolve())
            print(f"round {round_ + 1} {tree}: " + json.dumps(numbers))
            for case in ("gd_50", "exact_2"):
                kept = best.setdefault(str(tree), {}).setdefault(case, {})
                for key, value in numbers[case].items():
                    kept[key] = min(kept.get(key, value), value)
    old, new = (str(tree) for tree in args.trees)
    print("\n| case | time | " + old + " | " + new + " | second / first |\n| --- | --- | --- | --- | --- |")
    for case in ("gd_50", "exact_2"):
        for key in ("fit_wall", "call", "first_call"):
            a, b = best[old][case][key], best[new][case][key]
            print(f"| {case} | {key} | {a:.4f} s | {b:.4f} s | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
