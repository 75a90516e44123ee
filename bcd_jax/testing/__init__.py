"""Plain references the tests check the families against, importable by the tests and the benchmarks.

Each module is a deliberately simple float64 NumPy implementation of one family's sweep, one
sample at a time, written from the update formulas and sharing nothing with the JAX code it
checks: ``reference_akiyama`` (Algorithms 1 and 3), ``reference_whole_objective``,
``reference_zeng`` (two- and three-splitting). The library never imports this package.
"""
