"""Convergence-rate tools for any BCD family, from a run's objective history.

Xu, Bao and Xing ("Convergence Rates of Training Deep Neural Networks via Alternating
Minimization Methods", Optimization Letters 2024) give the rates of alternating-minimisation
training from two ingredients, both checkable on a finished run:

* a **non-monotone K-step sufficient decrease**: over every window of K sweeps the objective
  drops by at least a constant times the squared distance the iterate travelled,
  ``F(x_k) - F(x_{k+K}) >= a * sum_{i=k+1}^{k+K} ||x_i - x_{i-1}||^2`` with ``a > 0``
  (K = 1 is the usual monotone condition; a larger K lets F rise inside a window);
* the **Kurdyka-Lojasiewicz exponent** theta at the limit point: theta = 1/2 gives a local
  (R-)linear rate, theta in (1/2, 1) a sublinear one, ``F - F* = O(k^(-1/(2 theta - 1)))``
  (iterates ``O(k^(-(1 - theta)/(2 theta - 1)))``).

:func:`sufficient_decrease` measures the first (the squared step lengths are
``FitResult.history.movement``, recorded by the driver over every block array: W, V and any other);
:func:`convergence_rate` fits the gap ``F_k - F*`` with a geometric and a power law and reads
theta off the better fit; :func:`rate_report` does both for one run. Everything is host-side
NumPy in float64; nothing is traced.

What is estimated, not proved: theta comes from the decay of the objective gap over the window
you give, so it is as good as the window (skip transients with ``start``; stop before the
rounding floor) and as the estimate of ``F*`` (``reference``: 0 where the global minimum is 0,
as on the paper's over-parameterised teacher problems; else e.g. the last value, which makes
the end of the sequence look faster than it is -- use ``stop`` to leave the end out).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from bcd_jax.validation import check_int

__all__ = [
    "DecreaseCheck",
    "RateFit",
    "RateReport",
    "convergence_rate",
    "rate_report",
    "sufficient_decrease",
]


@dataclasses.dataclass(frozen=True, eq=False)
class RateFit:
    """Least-squares fits of a gap sequence: geometric ``rho^k`` and power law ``k^-p``.

    Attributes:
      rho: the per-sweep contraction factor, exp(slope) of log(gap_k) ~ a + k log(rho).
      log_rho: the slope, log(rho).
      r2: R^2 of the geometric fit (in log space).
      power_p, power_c: p and C of log(gap_k) ~ log C - p log k.
      power_r2: R^2 of the power-law fit.
      preferred: ``"geometric"`` or ``"power"``, the fit with the smaller squared residual
        (both have two parameters and use the same points).
      linear: the decay looks linear (geometric): preferred is geometric, rho < 1 and r2 >= r2_min.
      kl_theta: the KL exponent this suggests: 1/2 when linear; ``(1 + p) / (2 p)`` when the
        power law is preferred with p > 1 (from ``F - F* = O(k^(-1/(2 theta - 1)))``); else None.
      indices: the sequence indices k used.
      floor: gaps at or below it were ignored.
      reference: the F* subtracted.
    """

    rho: float
    log_rho: float
    r2: float
    power_p: float
    power_c: float
    power_r2: float
    preferred: str
    linear: bool
    kl_theta: float | None
    indices: np.ndarray
    floor: float
    reference: float = 0.0


def convergence_rate(
    losses,
    *,
    start: int = 1,
    stop: int | None = None,
    floor: float | None = None,
    r2_min: float = 0.99,
    reference: float | str = 0.0,
) -> RateFit:
    """Per-sweep contraction factor of ``losses - reference``, and geometric vs power-law decay.

    Fits, by least squares over the points k in ``[max(start, 1), stop)`` whose gap is finite
    and above ``floor``::

        log(gap_k) ~ a + k log(rho)          (geometric: linear rate, KL exponent theta = 1/2)
        log(gap_k) ~ log(C) - p log(k)       (power law: sublinear, theta = (1 + p) / (2 p))

    Index k = 0 (``history`` entry 0, the initial state) is never used: the power law is
    undefined there. The default floor, ``(100 eps)^2 * max(gap)`` with eps of the sequence's
    dtype, drops values at the rounding floor of a squared-norm loss (float32: about 1.4e-10
    times the largest value).

    Args:
      losses (array-like): 1-D sequence, entry k after k sweeps (e.g. ``history.objective``).
      start: first index used (skips initial transients; at least 1).
      stop: end of the window (exclusive; default: the whole sequence).
      floor: gaps <= floor are ignored (default above).
      r2_min: the geometric fit's R^2 needed to call the decay linear.
      reference: the F* subtracted: a number, or ``"final"`` (the last finite value; pair it
        with a ``stop`` before the end).

    Returns:
      A :class:`RateFit`.

    Raises:
      ValueError: fewer than 3 usable points, or a bad argument (named).
    """
    raw = np.asarray(losses)
    if raw.ndim != 1:
        raise ValueError(f"losses: expected a 1-D sequence, got shape {raw.shape}")
    eps = np.finfo(raw.dtype).eps if np.issubdtype(raw.dtype, np.floating) else np.finfo(np.float64).eps
    values = raw.astype(np.float64)
    finite = np.isfinite(values)
    reference = _reference(reference, values, finite)
    gaps = values - reference
    if floor is None:
        peak = float(np.max(np.abs(values[finite]))) if finite.any() else 0.0
        floor = (100 * eps) ** 2 * peak if reference == 0.0 else 100 * eps * peak
    k = np.arange(len(values))
    stop = len(values) if stop is None else check_int("stop", stop, low=1)
    start = check_int("start", start, low=0)
    keep = finite & (gaps > floor) & (k >= max(start, 1)) & (k < stop)
    k, y = k[keep], np.log(gaps[keep])
    if len(k) < 3:
        raise ValueError(
            f"losses: need at least 3 finite values above the floor {floor:.3g} (after subtracting reference "
            f"{reference:.6g}) in [max(start, 1), stop) = [{max(start, 1)}, {stop}); got {len(k)}"
        )
    (log_rho, a), rss_geo, r2 = _line_fit(k.astype(np.float64), y)
    (minus_p, log_c), rss_pow, power_r2 = _line_fit(np.log(k), y)
    preferred = "geometric" if rss_geo <= rss_pow else "power"
    linear = preferred == "geometric" and log_rho < 0 and r2 >= r2_min
    p = -minus_p
    kl_theta = 0.5 if linear else ((1 + p) / (2 * p) if preferred == "power" and p > 1 else None)
    return RateFit(
        rho=math.exp(log_rho), log_rho=log_rho, r2=r2, power_p=p, power_c=math.exp(log_c), power_r2=power_r2,
        preferred=preferred, linear=bool(linear), kl_theta=kl_theta, indices=k, floor=float(floor),
        reference=float(reference),
    )  # fmt: skip


class DecreaseCheck(NamedTuple):
    """The K-step sufficient-decrease condition on one run (see :func:`sufficient_decrease`).

    Attributes:
      window: K, the smallest window length (``<= max_window``) for which the condition held,
        else ``max_window``.
      holds: whether ``F_k - F_{k+K} >= a * (movement over the window)`` held with ``a > 0`` for
        every judged window.
      constant: a, the smallest ratio ``(F_k - F_{k+K}) / sum ||x_i - x_{i-1}||^2`` over the
        judged windows (negative where F rose; NaN when no window could be judged).
      monotone: F never rose by more than the rounding tolerance from one sweep to the next.
      largest_rise: the largest one-sweep rise ``F_{k+1} - F_k`` relative to ``|F_k|`` (0 if none).
      judged: how many windows were judged; windows whose change is within the rounding
        tolerance ``tol`` are not (the run has converged to the dtype's precision there).
      tol: that tolerance.
    """

    window: int
    holds: bool
    constant: float
    monotone: bool
    largest_rise: float
    judged: int
    tol: float


def sufficient_decrease(
    objective, movement, *, max_window: int = 5, start: int = 0, stop: int | None = None, tol: float | None = None
) -> DecreaseCheck:
    """Checks Xu-Bao-Xing's non-monotone K-step sufficient decrease on a run, for K = 1 .. max_window.

    For each K and each window ``[k, k + K]`` inside ``[start, stop)`` it forms
    ``(F_k - F_{k+K}) / sum_{i=k+1}^{k+K} movement_i``; the condition holds for K when every
    judged ratio is positive, and the constant ``a`` is their minimum. The smallest such K is
    reported (a monotone method passes with K = 1).

    Args:
      objective (array-like): ``(T + 1,)`` objective after k sweeps (``FitResult.history.objective``).
      movement (array-like): ``(T + 1,)`` squared step lengths aligned with it
        (``FitResult.history.movement``; entry 0 is unused).
      max_window: the largest K tried.
      start: the first index of the window of ``objective`` used (default: all).
      stop: the end of that window (exclusive; default: all).
      tol: changes with ``|F_k - F_{k+K}| <= tol`` are not judged; default ``100 eps max|F|``
        with eps of the objective's dtype (rounding noise once the run has converged).

    Returns:
      A :class:`DecreaseCheck`.
    """
    raw = np.asarray(objective)
    moves = np.asarray(movement, np.float64)
    if raw.ndim != 1 or moves.shape != raw.shape:
        raise ValueError(
            f"movement: expected a 1-D array aligned with objective (shape {raw.shape}), got shape {moves.shape}"
        )
    max_window = check_int("max_window", max_window, low=1)
    start = check_int("start", start, low=0)
    values = raw.astype(np.float64)
    stop = len(values) if stop is None else min(check_int("stop", stop, low=1), len(values))
    values, moves = values[start:stop], moves[start:stop]
    finite = np.isfinite(values)
    eps = np.finfo(raw.dtype).eps if np.issubdtype(raw.dtype, np.floating) else np.finfo(np.float64).eps
    peak = float(np.max(np.abs(values[finite]))) if finite.any() else 0.0
    tol = 100 * eps * peak if tol is None else float(tol)

    rises = np.diff(values)
    scale = np.maximum(np.abs(values[:-1]), np.finfo(np.float64).tiny)
    largest_rise = float(np.nanmax(np.append(rises / scale, 0.0))) if len(rises) else 0.0
    monotone = bool(np.all(~(rises > tol)))

    check = None
    for window in range(1, max_window + 1):
        drops = values[:-window] - values[window:]
        travelled = np.array([np.sum(moves[k + 1 : k + 1 + window]) for k in range(len(values) - window)])
        judged = np.isfinite(drops) & np.isfinite(travelled) & (np.abs(drops) > tol)
        if not judged.any():
            check = DecreaseCheck(window, False, float("nan"), monotone, largest_rise, 0, tol)
            break
        with np.errstate(divide="ignore"):
            ratios = drops[judged] / travelled[judged]  # a rise with no movement is -inf: never sufficient
        constant = float(np.min(ratios))
        check = DecreaseCheck(window, constant > 0, constant, monotone, largest_rise, int(judged.sum()), tol)
        if check.holds:
            break
    return check


class RateReport(NamedTuple):
    """:func:`rate_report`'s result: the decrease condition and the rate fit of one run."""

    decrease: DecreaseCheck
    rate: RateFit | None
    note: str

    def summary(self) -> str:
        """One line: K, a, the rate and theta (for tables); without a rate fit (see ``note``), K and a only."""
        d, r = self.decrease, self.rate
        parts = [f"K={d.window} a={d.constant:.2g}" if d.holds else f"no sufficient decrease up to K={d.window}"]
        if r is None:
            pass
        elif r.preferred == "geometric":
            parts.append(f"geometric rho={r.rho:.3g}" + (" theta=1/2" if r.linear else f" (R2 {r.r2:.2f})"))
        else:
            theta = "n/a" if r.kl_theta is None else f"{r.kl_theta:.2f}"
            parts.append(f"power p={r.power_p:.2g} theta={theta}")
        return "; ".join(parts)


def rate_report(
    objective, movement, *, reference: float | str = 0.0, start: int = 1, stop: int | None = None, max_window: int = 5
) -> RateReport:
    """:func:`sufficient_decrease` and :func:`convergence_rate` of one run's objective.

    Args:
      objective (array-like): as for :func:`sufficient_decrease` (``result.history.objective``).
      movement (array-like): as for :func:`sufficient_decrease` (``result.history.movement``).
      reference: F* for the rate fit (0, a number, or ``"final"``).
      start: the first index of the window of the rate fit.
      stop: the end of that window (the decrease check uses the whole run up to ``stop``).
      max_window: the largest K tried.

    Returns:
      A :class:`RateReport`; ``rate`` is None (and ``note`` says why) when too few points lie
      above the rounding floor to fit.
    """
    decrease = sufficient_decrease(objective, movement, max_window=max_window, stop=stop)
    try:
        return RateReport(decrease, convergence_rate(objective, start=start, stop=stop, reference=reference), "")
    except ValueError as exc:
        return RateReport(decrease, None, f"no rate fit ({exc})")


def _reference(reference, values, finite) -> float:
    if isinstance(reference, str):
        if reference != "final":
            raise ValueError(f"reference: expected a number or 'final', got {reference!r}")
        if not finite.any():
            raise ValueError("losses: no finite value to take as the 'final' reference")
        return float(values[finite][-1])
    value = float(reference)
    if not math.isfinite(value):
        raise ValueError(f"reference: expected a finite number, got {reference!r}")
    return value


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[tuple[float, float], float, float]:
    """Least squares y ~ b x + a: ((b, a), residual sum of squares, R^2)."""
    A = np.stack([x, np.ones_like(x)], axis=1)
    (b, a), *_ = np.linalg.lstsq(A, y, rcond=None)
    rss = float(np.sum((y - (b * x + a)) ** 2))
    tss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - rss / tss if tss > 0 else 1.0
    return (float(b), float(a)), rss, r2
