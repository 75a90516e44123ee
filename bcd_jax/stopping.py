"""When a run stops, as data: the stopping rules, and the status every run ends with.

A run ends on its sweep budget, on a rule the user set (:class:`Stop`), on divergence or on an
interrupt, and says which in a :class:`Status` — an integer carried through the compiled loop
(as optimistix's ``RESULTS``), stored in :class:`bcd_jax.FitResult`, the checkpoint, the
command line's ``metrics.json`` and its exit code. The rules are traced numbers (changing a
tolerance never recompiles) and each is off at its default:

* ``objective_rtol``: the objective's relative change ``|F_k - F_{k-1}| <= rtol |F_{k-1}|``;
* ``movement_rtol``: the blocks' relative step ``||x_k - x_{k-1}|| <= rtol ||x_{k-1}||`` over
  every block array;
* ``target_loss``: the network's training loss ``<= target_loss``;
* ``target_val``: the validation metric reaches ``target_val`` (accuracy ``>=`` for a
  classification loss, loss ``<=`` for regression; needs a validation set);
* ``patience``: the validation metric has not improved for ``patience`` sweeps.

A sweep that a rule stops after is kept; the sweeps after it are neither run nor counted.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bcd_jax.validation import check_float, check_int

__all__ = ["Status", "Stop", "StopState", "initial_stop_state", "stop_update", "stop_arrays"]


class Status(enum.IntEnum):
    """How a run ended (``RUNNING`` only inside the loop). Codes are stable: they are stored."""

    RUNNING = 0
    BUDGET = 1
    OBJECTIVE_TOLERANCE = 2
    MOVEMENT_TOLERANCE = 3
    TARGET_LOSS = 4
    TARGET_VALIDATION = 5
    PATIENCE = 6
    DIVERGED = 7
    INTERRUPTED = 8

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def successful(self) -> bool:
        """The run ended as asked (budget or a stopping rule), not by divergence or an interrupt."""
        return self not in (Status.DIVERGED, Status.INTERRUPTED, Status.RUNNING)


_MESSAGES = {
    Status.RUNNING: "running",
    Status.BUDGET: "ran the sweep budget",
    Status.OBJECTIVE_TOLERANCE: "the objective's relative change fell below stop.objective_rtol",
    Status.MOVEMENT_TOLERANCE: "the blocks' relative movement fell below stop.movement_rtol",
    Status.TARGET_LOSS: "the training loss reached stop.target_loss",
    Status.TARGET_VALIDATION: "the validation metric reached stop.target_val",
    Status.PATIENCE: "the validation metric did not improve for stop.patience sweeps",
    Status.DIVERGED: "diverged: a sweep produced non-finite values",
    Status.INTERRUPTED: "interrupted",
}


@dataclasses.dataclass(frozen=True)
class Stop:
    """Stopping rules (see the module docstring); every rule is off at its default.

    Attributes:
      objective_rtol: stop when ``|F_k - F_{k-1}| <= objective_rtol * |F_{k-1}|`` (0: off).
      movement_rtol: stop when ``||x_k - x_{k-1}|| <= movement_rtol * ||x_{k-1}||`` (0: off).
      target_loss: stop when the training loss is ``<= target_loss`` (None: off).
      target_val: stop when the validation accuracy is ``>= target_val`` (classification) or the
        validation loss ``<= target_val`` (regression) (None: off).
      patience: stop when the validation metric has not improved for this many sweeps (0: off).
    """

    objective_rtol: float = 0.0
    movement_rtol: float = 0.0
    target_loss: float | None = None
    target_val: float | None = None
    patience: int = 0

    def __post_init__(self):
        for name in ("objective_rtol", "movement_rtol"):
            object.__setattr__(self, name, check_float(f"stop.{name}", getattr(self, name), low=0))
        for name in ("target_loss", "target_val"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_float(f"stop.{name}", getattr(self, name)))
        object.__setattr__(self, "patience", check_int("stop.patience", self.patience, low=0))

    @property
    def needs_validation(self) -> bool:
        return self.target_val is not None or self.patience > 0

    @property
    def active(self) -> bool:
        return self != Stop()

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class StopArrays(NamedTuple):
    """:class:`Stop` as traced scalars (NaN: a target that is off)."""

    objective_rtol: jax.Array
    movement_rtol: jax.Array
    target_loss: jax.Array
    target_val: jax.Array
    patience: jax.Array


def stop_arrays(stop: Stop, dtype) -> StopArrays:
    nan = np.nan
    return StopArrays(
        np.asarray(stop.objective_rtol, dtype),
        np.asarray(stop.movement_rtol, dtype),
        np.asarray(nan if stop.target_loss is None else stop.target_loss, dtype),
        np.asarray(nan if stop.target_val is None else stop.target_val, dtype),
        np.asarray(stop.patience, np.int32),
    )


class StopState(NamedTuple):
    """What the rules remember between sweeps (carried through the loop and kept in checkpoints).

    Attributes:
      status: a :class:`Status` code (``RUNNING`` until the run ends).
      objective: the last kept sweep's objective.
      best_score: the best validation score so far (accuracy, or minus the loss).
      since_best: sweeps since ``best_score`` improved.
    """

    status: jax.Array
    objective: jax.Array
    best_score: jax.Array
    since_best: jax.Array


def initial_stop_state(objective, dtype) -> StopState:
    return StopState(
        np.asarray(Status.RUNNING, np.int32),
        np.asarray(objective, dtype),
        np.asarray(-np.inf, dtype),
        np.asarray(0, np.int32),
    )


def validation_score(info, classification: bool):
    """The validation metric as a score to maximise: accuracy, or minus the loss."""
    return info.val_accuracy if classification else -info.val_loss


def stop_update(state: StopState, info, size_sq, stop: StopArrays, *, classification: bool) -> StopState:
    """The state after a kept (finite) sweep whose record is ``info``; ``size_sq`` is ``||x_{k-1}||^2``.

    Traceable. The first rule that holds sets the status, in the order of :class:`Status`.
    """
    objective = info.objective
    change = jnp.abs(objective - state.objective)
    by_objective = (stop.objective_rtol > 0) & (change <= stop.objective_rtol * jnp.abs(state.objective))
    by_movement = (stop.movement_rtol > 0) & (info.movement <= stop.movement_rtol**2 * size_sq)
    by_loss = info.train_loss <= stop.target_loss  # False for NaN (off)
    score = validation_score(info, classification)
    target = stop.target_val if classification else -stop.target_val
    by_target = score >= target
    improved = score > state.best_score
    since = jnp.where(improved, 0, state.since_best + 1).astype(jnp.int32)
    by_patience = (stop.patience > 0) & (since >= stop.patience)
    status = state.status
    for condition, code in (
        (by_patience, Status.PATIENCE),
        (by_target, Status.TARGET_VALIDATION),
        (by_loss, Status.TARGET_LOSS),
        (by_movement, Status.MOVEMENT_TOLERANCE),
        (by_objective, Status.OBJECTIVE_TOLERANCE),
    ):  # the last assignment wins: the smallest code among the rules that hold
        status = jnp.where(condition, jnp.int32(code), status)
    return StopState(
        status.astype(jnp.int32), objective, jnp.where(improved, score, state.best_score), since.astype(jnp.int32)
    )
