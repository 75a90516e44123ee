"""Helpers of the benchmarks (``scripts/bench.py``, ``scripts/scale.py``), not of training.

``timing``: wall-clock measurement on a shared, noisy machine (contention checks, best-of);
``flops``: FLOPs of a traced program; ``akiyama_flops``: the closed-form FLOP counts of
Akiyama's sweep, checked against the traced program in the tests. The library never imports
this package.
"""
