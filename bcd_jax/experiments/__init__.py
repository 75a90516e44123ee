"""Experiments around a run: files that describe them, their data, grids, reports and figures.

=================== ====================================================================
module              concern
=================== ====================================================================
``spec``            ``Experiment`` (config + data + comparisons), ``DataSpec``, experiment files
``data``            an experiment's data as arrays (teacher, bundled, the user's file)
``runs``            running an experiment; its final numbers (``metrics.json``), rates
``grid``            grid files: members, groups, one program per group, CSV, plot
``plots``           the figure of a run
=================== ====================================================================

This is the layer above the library (:mod:`bcd_jax.driver`) and below the command line.
"""

from bcd_jax.experiments.data import check_task, experiment_data, teacher_arrays
from bcd_jax.experiments.grid import (
    GRID_FILES,
    GridResult,
    GridSpec,
    Member,
    load_grid,
    run_grid_file,
    traced_keys,
    traced_values,
)
from bcd_jax.experiments.plots import plot_experiment
from bcd_jax.experiments.runs import fit_kwargs, rate_summary, run_experiment, run_metrics, summarize
from bcd_jax.experiments.spec import TEACHER, DataSpec, Experiment, experiment_from_dict, load_experiment

__all__ = [
    "GRID_FILES",
    "TEACHER",
    "DataSpec",
    "Experiment",
    "GridResult",
    "GridSpec",
    "Member",
    "check_task",
    "experiment_data",
    "experiment_from_dict",
    "fit_kwargs",
    "load_experiment",
    "load_grid",
    "plot_experiment",
    "rate_summary",
    "run_experiment",
    "run_grid_file",
    "run_metrics",
    "summarize",
    "teacher_arrays",
    "traced_keys",
    "traced_values",
]
