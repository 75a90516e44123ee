"""Akiyama's theory as tools: step-size bounds, assumption checks, run checks, rates.

The theorems are about the paper's algorithms (:class:`bcd_jax.Akiyama`); the module reads
their configurations and runs, so it sits above the library's core. Everything here is
host-side NumPy (float64) arithmetic (the one exception: the trained
network's forward pass in :func:`generalization_bound`); nothing is traced.

* :func:`theorem_4_1`, :func:`theorem_5_3`: the step-size bounds and the iteration counts
  K, K_V, K_W that Theorems 4.1 (Algorithm 1) and 5.3 (Algorithm 3) prescribe, in the paper's
  convention and translated to a :class:`bcd_jax.Config` (``.to_config()``): the numbers go
  to ``config.hyper``, K_V, K_W and the SVB band to ``config.algorithm``, L and r to
  ``config.network``.
* :func:`data_report`: Assumption 1 (rank X = n), s = sigma_min(X), max_i ||x_i||.
* :func:`check_run`: from a run's history, whether the hidden W_j kept their singular values
  in the SVB band, and the empirical C_V = max lambda_max(V_j V_j^T).
* :func:`generalization_bound`: Theorem 4.3 term by term for a trained model.
* :func:`convergence_rate`: re-exported from :mod:`bcd_jax.rates`, where the rate tools for
  every family live.

Conventions (docs/conventions.md): the paper's F is a sum over samples, bcd_jax reports
means with the 1/2 convention, so a target ``e`` on bcd_jax's ``objective`` (F/2n) is ``epsilon = 2 n e`` here. The
paper's step sizes map to the library's as ``eta_v = 2 eta_V``, ``eta_w = 2 n eta_W^(1)``,
``eta_w1 = 2 n eta_W^(2)`` (``config.hyper``); K, K_V, K_W are ``sweeps``, ``algorithm.k_v``,
``algorithm.k_w``.

Sources: Akiyama, "Block Coordinate Descent for Neural Networks Provably Finds Global
Minima", NeurIPS 2025 (its review copy: "the paper" below), and the authors' NeurIPS 2025
slides (the final statements: "the slides"). The appendices (proofs, Appendix C-F) were not
available; where a constant would have to be read off a proof, the docstring says what was
chosen instead. The rate fits follow Xu, Bao and Xing, "Convergence Rates of Training Deep
Neural Networks via Alternating Minimization Methods", Optimization Letters 2024.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from bcd_jax.activations import Activation, get_activation
from bcd_jax.algorithms import Akiyama
from bcd_jax.config import Config
from bcd_jax.network import Network, input_features, network_output
from bcd_jax.rates import RateFit, convergence_rate
from bcd_jax.validation import check_weights

__all__ = [
    "DataReport",
    "data_report",
    "TheoremBounds",
    "theorem_4_1",
    "theorem_5_3",
    "RunCheck",
    "check_run",
    "GeneralizationBound",
    "generalization_bound",
    "RateFit",
    "convergence_rate",
]


# --------------------------------------------------------------------------------------
# Assumption 1: the data
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataReport:
    """Assumption 1 and the data constants of Theorems 4.1 and 5.3.

    Attributes:
      n, d_in: the shape of X.
      rank: the numerical rank of X (singular values above ``tol``).
      tol: the rank threshold, ``sigma_max(X) * max(n, d_in) * eps(X.dtype)``.
      n_le_d_in: ``n <= d_in`` (needed for rank n).
      full_row_rank: ``rank == n``, the paper's Assumption 1.
      sigma_min: s = sigma_min(X), the n-th singular value (0.0 when n > d_in).
      sigma_max: the largest singular value, ||X||_op.
      x_norm_max: max_i ||x_i||.
    """

    n: int
    d_in: int
    rank: int
    tol: float
    n_le_d_in: bool
    full_row_rank: bool
    sigma_min: float
    sigma_max: float
    x_norm_max: float


def data_report(X) -> DataReport:
    """Checks Assumption 1 (rank X = n) and returns s = sigma_min(X) and max_i ||x_i||.

    The rank uses the tolerance of the input's precision, ``sigma_max * max(n, d_in) * eps``,
    with ``eps`` of X's dtype (float32 data are rank deficient at float32 resolution, even
    though the SVD is computed in float64).

    Args:
      X (array-like): the inputs, ``(n, d_in)``; row i is x_i.

    Returns:
      A :class:`DataReport`.
    """
    return _report(*_matrix("X", X))


def _report(X: np.ndarray, eps: float) -> DataReport:
    n, d_in = X.shape
    sv = np.linalg.svd(X, compute_uv=False)
    tol = float(sv[0] * max(n, d_in) * eps)
    rank = int(np.sum(sv > tol))
    return DataReport(
        n=n,
        d_in=d_in,
        rank=rank,
        tol=tol,
        n_le_d_in=n <= d_in,
        full_row_rank=rank == n,
        sigma_min=float(sv[n - 1]) if n <= d_in else 0.0,
        sigma_max=float(sv[0]),
        x_norm_max=float(np.max(np.linalg.norm(X, axis=1))),
    )


# --------------------------------------------------------------------------------------
# Theorems 4.1 and 5.3: step sizes and iteration counts
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TheoremBounds:
    """What Theorem 4.1 or 5.3 prescribes for ``F <= epsilon``, in both conventions.

    Paper convention (``paper_*``) and bcd_jax's Config fields:

    ============================  =========================  ===========================================
    paper                         field here                 Config field (property here)
    ============================  =========================  ===========================================
    eta_V                         ``paper_eta_v``            ``hyper.eta_v  = 2 eta_V``
    eta_W^(1)  (W_2 .. W_L)       ``paper_eta_w_1``          ``hyper.eta_w  = 2 n eta_W^(1)``
    eta_W^(2)  (W_1)              ``paper_eta_w_2``          ``hyper.eta_w1 = 2 n eta_W^(2)``
    K, K_V, K_W                   ``K``, ``K_V``, ``K_W``    ``sweeps``, ``algorithm.k_v``, ``algorithm.k_w``
    ============================  =========================  ===========================================

    Attributes:
      theorem: ``"4.1"`` or ``"5.3"``.
      algorithm: the bcd_jax algorithm it is about (``"monotone"`` or ``"relu_skip"``).
      svb: the theorem's ``(s1, s2)``.
      n, d_in, depth, width, gamma: n, d_in, L, r, gamma.
      alpha, ell: the activation constants used (``None`` for Theorem 5.3, which uses none).
      c_v: C_V, the assumed bound on lambda_max(V_j V_j^T) during training.
      epsilon: the target for the paper's F (a sum over samples).
      s: sigma_min(X).
      x_norm_max: max_i ||x_i||.
      R: sum_i R_i^2 with R_i = ||W_L V_{L-1,i} - y_i|| at initialisation (the initial output loss).
      R_max: max_i R_i.
      C_K: the theorem's C_K (formula in the function's docstring).
      w_plus_sq, w_minus_sq: ||w_+||^2, ||w_-||^2 of the fixed W_L (Theorem 5.3; else ``None``).
      paper_eta_v_max, paper_eta_w_1_max, paper_eta_w_2_max: the theorem's upper bounds.
      paper_eta_v, paper_eta_w_1, paper_eta_w_2: the step sizes used for the counts (the bounds
        unless given).
      K, K_V, K_W: the prescribed outer, V-inner and W_1-inner iteration counts.
      w1_step_ratio: ``gamma ell^2 sigma_max(X)^2 eta_W^(2)`` (ell = 1 for Theorem 5.3's linear
        fit): the K_W gradient loop on W_1 is guaranteed to descend only while this is < 1
        (README: ``gamma eta_w1 ell^2 lambda_max(X^T X / n) < 2``). The theorems' bounds use
        max_i ||x_i||, not sigma_max(X) >= max_i ||x_i||, so at the bound it can exceed 1 (for
        Gaussian X with n = 500, d_in = 600 it is about 3); pass a smaller ``paper_eta_w_2`` then.
      bias: whether a constant-1 column was appended to X (from ``config.network.bias``).
      config: the Config the setting was read from, if any (the default base of ``to_config``).
      activation: the resolved activation (Theorem 4.1 without a Config), for ``to_config``.
    """

    theorem: str
    algorithm: str
    svb: tuple[float, float]
    n: int
    d_in: int
    depth: int
    width: int
    gamma: float
    alpha: float | None
    ell: float | None
    c_v: float
    epsilon: float
    s: float
    x_norm_max: float
    R: float
    R_max: float
    C_K: float
    w_plus_sq: float | None
    w_minus_sq: float | None
    paper_eta_v_max: float
    paper_eta_w_1_max: float
    paper_eta_w_2_max: float
    paper_eta_v: float
    paper_eta_w_1: float
    paper_eta_w_2: float
    K: int
    K_V: int
    K_W: int
    w1_step_ratio: float
    bias: bool = False
    config: Config | None = dataclasses.field(default=None, repr=False)
    activation: Activation | None = dataclasses.field(default=None, repr=False)

    @property
    def eta_v(self) -> float:
        """Config ``eta_v = 2 eta_V``."""
        return 2.0 * self.paper_eta_v

    @property
    def eta_w(self) -> float:
        """Config ``eta_w = 2 n eta_W^(1)``."""
        return 2.0 * self.n * self.paper_eta_w_1

    @property
    def eta_w1(self) -> float:
        """Config ``eta_w1 = 2 n eta_W^(2)``."""
        return 2.0 * self.n * self.paper_eta_w_2

    @property
    def sweeps(self) -> int:
        return self.K

    @property
    def k_v(self) -> int:
        return self.K_V

    @property
    def k_w(self) -> int:
        return self.K_W

    def to_config(self, base: Config | None = None) -> Config:
        """A :class:`bcd_jax.Config` that runs the theorem's algorithm with these values.

        Sets ``algorithm`` (:class:`bcd_jax.Akiyama` of the theorem's variant with ``k_v``,
        ``k_w``, ``svb`` and fixed step sizes), ``network.depth``, ``network.width``, the
        ``hyper`` numbers ``gamma``, ``eta_v``, ``eta_w``, ``eta_w1`` and ``sweeps = max(K, 1)``
        (a Config runs at least one sweep), and the settings the theorems assume: squared loss,
        no weight decay, the network form the algorithm is written for (``network.skip`` unset)
        and ``bias`` as used for X. Theorem 5.3 also sets ``network.activation="relu"``. Every
        other setting (``seed``, the activation of Theorem 4.1, ``algorithm.inner``, ...) is ``base``'s.

        Args:
          base: the Config to start from; default: the one the bounds were computed from, else
            ``Config()`` with the activation used.

        Returns:
          The Config.

        Raises:
          ValueError: ``base``'s activation constants differ from those the bounds used (4.1).
        """
        if base is None:
            base = self.config
            if base is None:
                base = Config(network=Network(activation=self.activation or "leaky_relu"))
        if not isinstance(base, Config):
            raise ValueError(f"base: expected a bcd_jax.Config or None, got {type(base).__name__}")
        changes = dict(depth=self.depth, width=self.width, loss="squared", bias=self.bias, skip=None)
        if self.theorem == "5.3":
            changes["activation"] = "relu"
        try:
            network = base.network.replace(**changes)
        except ValueError as exc:  # e.g. a per-layer activation list of another depth
            raise ValueError(f"base: {exc}") from None
        if self.theorem == "4.1":
            alpha, ell = _activation_constants(None, network, "base")
            if (alpha, ell) != (self.alpha, self.ell):
                raise ValueError(
                    f"base: its activation has alpha = {alpha}, ell = {ell}, but these bounds were computed "
                    f"for alpha = {self.alpha}, ell = {self.ell}"
                )
        # Structural options the theorems say nothing about are kept from the base's Akiyama.
        kept = {}
        if isinstance(base.algorithm, Akiyama):
            kept = {k: getattr(base.algorithm, k) for k in ("inner", "first_layer_form", "spectral_diagnostics")}
        algorithm = Akiyama(self.algorithm, k_v=self.K_V, k_w=self.K_W, step_size="fixed", svb=tuple(self.svb), **kept)
        hyper = {
            "gamma": self.gamma,
            "eta_v": self.eta_v,
            "eta_w": self.eta_w,
            "eta_w1": self.eta_w1,
            "weight_decay": 0.0,
        }
        return Config(network, algorithm, hyper, sweeps=max(self.K, 1), seed=base.seed)


def theorem_4_1(
    X,
    residuals,
    config: Config | None = None,
    *,
    c_v: float,
    epsilon: float,
    activation=None,
    depth: int | None = None,
    width: int | None = None,
    gamma: float | None = None,
    paper_eta_v: float | None = None,
    paper_eta_w_1: float | None = None,
    paper_eta_w_2: float | None = None,
) -> TheoremBounds:
    """Step-size bounds and K, K_V, K_W of Theorem 4.1 (Algorithm 1, F <= epsilon).

    With s = sigma_min(X), R_i = ||W_L V_{L-1,i} - y_i|| at initialisation, R = sum_i R_i^2,
    R_max = max_i R_i, x_max = max_i ||x_i||, (s1, s2) = (3/4, 5/4)::

        eta_V     <= alpha / (16 gamma ell^4)
        K          = ceil( 2/eta_V * log(3 R / epsilon) )
        eta_W^(1) <= eta_V^-1 / (8 sqrt(r) C_V K) * (alpha/2)^L
        eta_W^(2) <= 1 / (gamma ell^4 x_max^2)
        C_K        = (2/alpha)^L * (4 R_max eta_V + 2/(2 - alpha) * sqrt(epsilon))
        K_V        = ceil( 1/(gamma alpha ell eta_V) * log(48 gamma ell^2 (L-2) r n C_K^2 / (alpha^2 epsilon)) )
        K_W        = ceil( 1/(4 gamma s alpha^2 eta_W^(2)) * log(3 ell^2 x_max^2 r n C_K^2 / (alpha^2 s^2 epsilon)) )

    Sources: the step-size bounds and K, K_V, K_W are the slides' (the final version).
    The paper's review copy differs in three places: ``eta_V <= 1/(8 alpha ell^2)``,
    ``eta_W^(2) <= 1/(2 ell^2 x_max)`` (no square, no gamma), and the logarithms of K_V and
    K_W, ``log(3 gamma (L-2) r n C_K^2 / epsilon)`` and ``log(3 r n C_K^2 / epsilon)``. C_K, R,
    R_max and s are defined only in the paper and taken from there. The K_W prefactor has s (not
    s^2 = lambda_min(X X^T)) in both sources; it is used as printed. A count whose logarithm is
    <= 0 is 0 (e.g. K_V for L = 2, which has no hidden V loop). eta_W^(1)'s bound uses
    max(K, 1). R_i is the Euclidean norm of the residual row, the natural reading for d_out > 1
    (the theorem is stated for d_out = 1).

    The activation constants come from ``activation`` or ``config``: alpha = inf sigma' (> 0 and
    < 2, Assumption 2), ell = Lipschitz constant; for per-layer activations the worst ones,
    min alpha and max ell (every bound is monotone in them).

    Args:
      X (array-like): inputs ``(n, d_in)``; Assumption 1 (rank X = n) is required. With ``config.network.bias`` a
        constant-1 column is appended, as the solver does.
      residuals (array-like): the initial output residuals ``W_L V_{L-1,i} - y_i``, ``(n,)`` or ``(n, d_out)``;
        at the exact initialisation, ``bcd_jax.predict(params, X, config) - Y``.
      config: optional Config supplying the activation, depth and width (``config.network``)
        and gamma (``config.hyper``); its algorithm must be ``"monotone"``. The keywords below
        override it.
      c_v: C_V > 0, the assumed bound on lambda_max(V_j V_j^T) during training (see
        :func:`check_run` for the value seen in a run, Remark 4.2 for an a-priori one).
      epsilon: target for the paper's F (sum over samples; 2n times bcd_jax's ``objective``).
      activation (Activation | str): an :class:`bcd_jax.Activation` or a registry name (resolved with the default
        ``negative_slope`` 0.5); overrides ``config``'s.
      depth: L.
      width: r.
      gamma: gamma.
      paper_eta_v: eta_V, a step size in the paper's convention (default: its bound); it must
        not exceed its bound.
      paper_eta_w_1: eta_W^(1), likewise.
      paper_eta_w_2: eta_W^(2), likewise.

    Returns:
      A :class:`TheoremBounds`; ``.to_config()`` gives the matching Config.

    Raises:
      ValueError: naming the argument, for alpha = 0 (e.g. ReLU; see :func:`theorem_5_3`),
        unknown activation constants, rank X < n, or a step size above its bound.
    """
    L, r, g = _setting(config, depth, width, gamma, "monotone", "4.1")
    alpha, ell = _activation_constants(activation, _network_at(config, L), "activation")
    if alpha >= 2:
        raise ValueError(f"activation: Assumption 2 needs 0 < alpha < 2, got alpha = {alpha}")
    data, R, R_max = _theorem_data(X, residuals, config, "4.1")
    c_v, epsilon = _positive("c_v", c_v), _positive("epsilon", epsilon)
    n, s, x_max = data.n, data.sigma_min, data.x_norm_max

    eta_v_max = alpha / (16 * g * ell**4)
    eta_v = _step("paper_eta_v", paper_eta_v, eta_v_max)
    K = _count(2 / eta_v, 3 * R / epsilon)
    eta_w_1_max = (1 / eta_v) / (8 * math.sqrt(r) * c_v * max(K, 1)) * (alpha / 2) ** L
    eta_w_1 = _step("paper_eta_w_1", paper_eta_w_1, eta_w_1_max)
    eta_w_2_max = 1 / (g * ell**4 * x_max**2)
    eta_w_2 = _step("paper_eta_w_2", paper_eta_w_2, eta_w_2_max)
    C_K = (2 / alpha) ** L * (4 * R_max * eta_v + 2 / (2 - alpha) * math.sqrt(epsilon))
    K_V = _count(1 / (g * alpha * ell * eta_v), 48 * g * ell**2 * (L - 2) * r * n * C_K**2 / (alpha**2 * epsilon))
    K_W = _count(
        1 / (4 * g * s * alpha**2 * eta_w_2), 3 * ell**2 * x_max**2 * r * n * C_K**2 / (alpha**2 * s**2 * epsilon)
    )
    return TheoremBounds(
        theorem="4.1", algorithm="monotone", svb=(0.75, 1.25),
        n=n, d_in=data.d_in, depth=L, width=r, gamma=g, alpha=alpha, ell=ell, c_v=c_v, epsilon=epsilon,
        s=s, x_norm_max=x_max, R=R, R_max=R_max, C_K=C_K, w_plus_sq=None, w_minus_sq=None,
        paper_eta_v_max=eta_v_max, paper_eta_w_1_max=eta_w_1_max, paper_eta_w_2_max=eta_w_2_max,
        paper_eta_v=eta_v, paper_eta_w_1=eta_w_1, paper_eta_w_2=eta_w_2, K=K, K_V=K_V, K_W=K_W,
        w1_step_ratio=g * ell**2 * data.sigma_max**2 * eta_w_2,
        bias=_bias(config), config=config,
        activation=get_activation(activation) if activation is not None else None,
    )  # fmt: skip


def theorem_5_3(
    X,
    residuals,
    w_out,
    config: Config | None = None,
    *,
    c_v: float,
    epsilon: float,
    depth: int | None = None,
    width: int | None = None,
    gamma: float | None = None,
    paper_eta_v: float | None = None,
    paper_eta_w_1: float | None = None,
    paper_eta_w_2: float | None = None,
) -> TheoremBounds:
    """Step-size bounds and K, K_V, K_W of Theorem 5.3 (Algorithm 3, ReLU, F <= epsilon).

    With m = min(||w_+||^2, ||w_-||^2) for the fixed output weight W_L (w_+ = max(W_L, 0),
    w_- = min(W_L, 0)), s, R, R_max, x_max as in :func:`theorem_4_1`, (s1, s2) = (0, 1/4)::

        eta_V     <= 1 / (2 m)
        K          = ceil( 1/(4 eta_V m) * log(3 R / epsilon) )
        eta_W^(1) <= eta_V^-1 / (24 sqrt(r) C_V K) * (2/3)^L
        eta_W^(2) <= 1 / (2 x_max)
        C_K        = (4 R_max eta_V + 5 sqrt(epsilon)) * (3/2)^L
        K_V        = ceil( 3/(4 gamma eta_V) * log(49 (L-2) r n C_K^2 / (3 epsilon)) )
        K_W        = ceil( 1/(4 gamma s eta_W^(2)) * log(C_K^2 / epsilon) )

    Source: the paper's review copy only; the slides state Theorem 5.3 without its
    conditions, and the review copy's statement is badly garbled by the OCR. Two entries look wrong and are
    reported as printed: ``eta_W^(2) <= 1/(2 x_max)`` has ||x_i|| unsquared (the slides corrected
    Theorem 4.1's to ``1/(gamma ell^4 x_max^2)``), and ``eta_V <= 1/(2m)``: at that bound K's
    contraction factor 1 - 4 eta_V m is -1, and the gradient step on ``(W_L v - y)^2`` (stable
    only for ``eta_V < 1/||W_L||^2``, and ``||W_L||^2 >= 2m``) can diverge. The step used by
    default is therefore ``eta_V = 1/(2 ||W_L||^2)`` (<= 1/(4m) <= the printed bound: the one-step
    solve of the output fit, with 1 - 4 eta_V m in [0, 1)); ``paper_eta_v`` may go up to the
    printed bound. Counts with a logarithm <= 0 are 0; eta_W^(1)'s bound uses max(K, 1).

    Args:
      X (array-like): inputs ``(n, d_in)`` with rank X = n (a bias column is appended with ``config.network.bias``).
      residuals (array-like): the initial output residuals, ``(n,)`` or ``(n, 1)``.
      w_out (array-like): the fixed output weight W_L, ``(r,)`` or ``(1, r)``; it needs entries of both signs
        (Lemma 5.1).
      config: optional Config supplying depth, width (``config.network``) and gamma
        (``config.hyper``); its algorithm must be ``"relu_skip"``.
      c_v: as in :func:`theorem_4_1`.
      epsilon: as in :func:`theorem_4_1`.
      depth: L (overrides ``config``).
      width: r (overrides ``config``).
      gamma: gamma (overrides ``config``).
      paper_eta_v: eta_V, a step size in the paper's convention (default: its bound, except as
        said above); it must not exceed its bound.
      paper_eta_w_1: eta_W^(1), likewise (default: its bound).
      paper_eta_w_2: eta_W^(2), likewise (default: its bound).

    Returns:
      A :class:`TheoremBounds` (``alpha``, ``ell`` are ``None``; ``.to_config()`` sets ReLU).
    """
    L, r, g = _setting(config, depth, width, gamma, "relu_skip", "5.3")
    if config is not None:
        names = {a.name for a in _network_at(config, L).layer_activations}
        if names != {"relu"}:
            raise ValueError(f"config: Theorem 5.3 is stated for ReLU; this config's activation is {sorted(names)}")
    w = np.asarray(w_out, dtype=np.float64)
    if w.ndim == 2 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 1 or not np.all(np.isfinite(w)):
        raise ValueError(f"w_out: expected a finite W_L of shape (r,) or (1, r), got shape {np.shape(w_out)}")
    w_plus_sq, w_minus_sq = float(np.sum(np.maximum(w, 0) ** 2)), float(np.sum(np.minimum(w, 0) ** 2))
    m = min(w_plus_sq, w_minus_sq)
    if m <= 0:
        raise ValueError("w_out: W_L needs entries of both signs (Lemma 5.1); min(||w_+||^2, ||w_-||^2) = 0")
    data, R, R_max = _theorem_data(X, residuals, config, "5.3")
    c_v, epsilon = _positive("c_v", c_v), _positive("epsilon", epsilon)
    n, s, x_max = data.n, data.sigma_min, data.x_norm_max

    eta_v_max = 1 / (2 * m)
    eta_v = _step("paper_eta_v", paper_eta_v, eta_v_max, default=1 / (2 * (w_plus_sq + w_minus_sq)))
    K = _count(1 / (4 * eta_v * m), 3 * R / epsilon)
    eta_w_1_max = (1 / eta_v) / (24 * math.sqrt(r) * c_v * max(K, 1)) * (2 / 3) ** L
    eta_w_1 = _step("paper_eta_w_1", paper_eta_w_1, eta_w_1_max)
    eta_w_2_max = 1 / (2 * x_max)
    eta_w_2 = _step("paper_eta_w_2", paper_eta_w_2, eta_w_2_max)
    C_K = (4 * R_max * eta_v + 5 * math.sqrt(epsilon)) * 1.5**L
    K_V = _count(3 / (4 * g * eta_v), 49 * (L - 2) * r * n * C_K**2 / (3 * epsilon))
    K_W = _count(1 / (4 * g * s * eta_w_2), C_K**2 / epsilon)
    return TheoremBounds(
        theorem="5.3", algorithm="relu_skip", svb=(0.0, 0.25),
        n=n, d_in=data.d_in, depth=L, width=r, gamma=g, alpha=None, ell=None, c_v=c_v, epsilon=epsilon,
        s=s, x_norm_max=x_max, R=R, R_max=R_max, C_K=C_K, w_plus_sq=w_plus_sq, w_minus_sq=w_minus_sq,
        paper_eta_v_max=eta_v_max, paper_eta_w_1_max=eta_w_1_max, paper_eta_w_2_max=eta_w_2_max,
        paper_eta_v=eta_v, paper_eta_w_1=eta_w_1, paper_eta_w_2=eta_w_2, K=K, K_V=K_V, K_W=K_W,
        w1_step_ratio=g * data.sigma_max**2 * eta_w_2,
        bias=_bias(config), config=config,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Checks on a run's history
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class RunCheck:
    """Singular values of the hidden W_j against a band, and the empirical C_V, over a run.

    Rows are sweeps: row k-1 is the state after sweep k (the spectral diagnostics describe a
    sweep; check the initial weights with ``init_params`` if needed).

    Attributes:
      band: ``(lo, hi)`` checked, before the ``rtol`` widening.
      rtol: relative tolerance: a value counts as inside when in ``[lo (1-rtol), hi (1+rtol)]``.
      layers: the paper's indices j of the checked W_j (the hidden ones, 2 .. L-1).
      sv_min, sv_max: ``(K, len(layers))`` extreme singular values of those W_j.
      inside: ``(K, len(layers))`` whether each W_j's singular values are in the band.
      inside_per_sweep: ``(K,)`` all checked W_j inside, per sweep.
      all_inside: every entry, every checked layer inside.
      first_exit: ``(row, j)`` of the first W_j found outside (rows in order, then j), or None.
      sv_min_overall, sv_max_overall: the extremes over the whole run and all checked layers
        (NaN when there is no hidden W_j, L = 2).
      c_v_per_sweep: ``(K,)`` max_j lambda_max(V_j V_j^T) per sweep.
      c_v_per_layer: ``(L-1,)`` max over the run, per V_j.
      c_v_empirical: the largest lambda_max(V_j V_j^T) seen, the run's C_V.
      c_v: the C_V checked against (``None`` if none was given).
      c_v_ok: ``c_v_empirical <= c_v`` (``None`` without ``c_v``).
    """

    band: tuple[float, float]
    rtol: float
    layers: tuple[int, ...]
    sv_min: np.ndarray
    sv_max: np.ndarray
    inside: np.ndarray
    inside_per_sweep: np.ndarray
    all_inside: bool
    first_exit: tuple[int, int] | None
    sv_min_overall: float
    sv_max_overall: float
    c_v_per_sweep: np.ndarray
    c_v_per_layer: np.ndarray
    c_v_empirical: float
    c_v: float | None
    c_v_ok: bool | None


def check_run(history, config: Config | None = None, *, svb=None, band=None, rtol: float = 1e-4, c_v=None) -> RunCheck:
    """Whether the hidden W_j kept their singular values in the SVB band, and the empirical C_V.

    For j = 2 .. L-1 and every history entry k, W_j is inside when
    ``lo (1 - rtol) <= sigma_min(W_j) and sigma_max(W_j) <= hi (1 + rtol)``; the empirical C_V
    is ``max_{k, j} lambda_max(V_j V_j^T)`` (a sum over samples, as in the paper). The rows are
    the sweeps 1..K (the spectral diagnostics are the family's extras, which describe a sweep:
    entry 0 of a history has none). A NaN singular value counts as outside.

    The band: Remark 3.1 says the proof keeps the singular values "in a bounded interval", but
    the proof (Appendix C) was not available, so the interval it maintains cannot be read off.
    The default band is therefore the SVB interval [s1, s2] itself, which is stricter than the
    proof needs. The theorem's constants suggest the interval of Theorem 4.1's proof: (alpha/2)^L
    in eta_W^(1) and (2/alpha)^L in C_K fit sigma_min(W_j) >= 1/2, and 2^L in Theorem 4.3 fits
    ||W_j||_op <= 2, i.e. ``band=(0.5, 2.0)`` (an inference, not a quoted statement).
    ``rtol`` absorbs float rounding of the SVD (SVB puts singular values exactly on s1, s2).

    Args:
      history (SweepInfo | SpectralExtras): a run's history (``bcd_jax.fit(...).history``, whose
        ``extras.spectral`` holds ``sv_min``, ``sv_max`` (``(K+1, L)``) and ``v_gram_max``
        (``(K+1, L-1)``)), or those spectral extras themselves.
      config: the run's Config, for ``config.algorithm.svb_bounds`` (the theorem's (s1, s2)
        when the algorithm's ``svb`` is None).
      svb (tuple): ``(s1, s2)``, instead of ``config``.
      band (tuple): ``(lo, hi)`` to check instead of ``(s1, s2)``.
      rtol: relative tolerance of the band (default 1e-4).
      c_v (float): optional C_V to compare the empirical one with (e.g. the one given to a theorem).

    Returns:
      A :class:`RunCheck`.
    """
    if config is not None and not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config or None, got {type(config).__name__}")
    if config is not None and isinstance(config.algorithm, Akiyama) and not config.algorithm.spectral_diagnostics:
        raise ValueError(
            "config: check_run reads the spectral diagnostics (sv_min, sv_max, v_gram_max), which this "
            "run did not record; run with Akiyama(spectral_diagnostics=True)"
        )
    if band is None:
        if svb is None:
            if config is None:
                raise ValueError("band: give band=(lo, hi), svb=(s1, s2) or the run's config")
            if not isinstance(config.algorithm, Akiyama):
                raise ValueError(
                    f"config: its algorithm {config.algorithm.name!r} has no singular value bounding band; "
                    "give band=(lo, hi) or svb=(s1, s2)"
                )
            svb = config.algorithm.svb_bounds
        band = svb
    lo, hi = (float(b) for b in band)
    if not (0 <= lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"band: expected (lo, hi) with 0 <= lo <= hi < inf, got {tuple(band)!r}")
    rtol = float(rtol)
    if not 0 <= rtol < 1:
        raise ValueError(f"rtol: expected a number in [0, 1), got {rtol!r}")
    spectral = getattr(getattr(history, "extras", None), "spectral", history)
    missing = [name for name in ("sv_min", "sv_max", "v_gram_max") if not hasattr(spectral, name)]
    if missing:
        raise ValueError(
            f"history: expected a run of Akiyama's family (its extras hold sv_min, sv_max, v_gram_max); "
            f"got {type(history).__name__} without {missing}"
        )
    sv_min = np.atleast_2d(np.asarray(spectral.sv_min, dtype=np.float64))
    sv_max = np.atleast_2d(np.asarray(spectral.sv_max, dtype=np.float64))
    v_gram = np.atleast_2d(np.asarray(spectral.v_gram_max, dtype=np.float64))
    if hasattr(history, "extras") and sv_min.shape[0] > 1:  # a history: entry 0 (no sweep yet) has no extras
        sv_min, sv_max, v_gram = sv_min[1:], sv_max[1:], v_gram[1:]
    L = sv_min.shape[1]
    if sv_max.shape != sv_min.shape or v_gram.shape != (sv_min.shape[0], L - 1):
        raise ValueError(
            f"history: expected sv_min, sv_max (rows, L) and v_gram_max (rows, L-1); got {sv_min.shape}, "
            f"{sv_max.shape}, {v_gram.shape}"
        )
    layers = tuple(range(2, L))
    mn, mx = sv_min[:, 1 : L - 1], sv_max[:, 1 : L - 1]
    inside = (mn >= lo * (1 - rtol)) & (mx <= hi * (1 + rtol))
    outside = np.argwhere(~inside)
    first_exit = (int(outside[0, 0]), layers[int(outside[0, 1])]) if len(outside) else None
    c_v_empirical = float(np.max(v_gram))
    return RunCheck(
        band=(lo, hi),
        rtol=rtol,
        layers=layers,
        sv_min=mn,
        sv_max=mx,
        inside=inside,
        inside_per_sweep=inside.all(axis=1),
        all_inside=bool(inside.all()),
        first_exit=first_exit,
        sv_min_overall=float(mn.min()) if mn.size else math.nan,
        sv_max_overall=float(mx.max()) if mx.size else math.nan,
        c_v_per_sweep=v_gram.max(axis=1),
        c_v_per_layer=v_gram.max(axis=0),
        c_v_empirical=c_v_empirical,
        c_v=None if c_v is None else float(c_v),
        c_v_ok=None if c_v is None else bool(c_v_empirical <= float(c_v)),
    )


# --------------------------------------------------------------------------------------
# Theorem 4.3: generalization bound
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GeneralizationBound:
    """Theorem 4.3 evaluated term by term (the O~'s constants and log factors set to 1).

    ``total = empirical + complexity + confidence``, an estimate of E[(f(x) - y)^2].

    Attributes:
      n, d_in, depth, width, ell, delta, b_x, b_y: the inputs (B_X, B_Y as used).
      x_norm: ||X||_F = sqrt(sum_i ||x_i||^2).
      spectral_norms: ||W_j||_op of the trained weights, j = 1 .. L.
      spectral_product: prod_j ||W_j||_op.
      norms: ``"theorem"`` (2^L used for the product of the spectral norms) or ``"trained"``.
      norm_product: the product used, 2^L or ``spectral_product``.
      output_range: B_Y + norm_product * ell^(L-1) * B_X, a bound on |f(x) - y|.
      empirical: (1/n) sum_i (f(x_i) - y_i)^2, the training error.
      complexity: (||X||_F / n) * output_range * d_in^(1/2) * L^(3/2) * (2r)^(L/2) * log r.
      confidence: output_range^2 * sqrt(log(1/delta) / n).
      total: the sum of the three.
    """

    n: int
    d_in: int
    depth: int
    width: int
    ell: float
    delta: float
    b_x: float
    b_y: float
    x_norm: float
    spectral_norms: tuple[float, ...]
    spectral_product: float
    norms: str
    norm_product: float
    output_range: float
    empirical: float
    complexity: float
    confidence: float
    total: float


def generalization_bound(
    params,
    X,
    Y,
    config: Config,
    *,
    delta: float,
    b_x: float | None = None,
    b_y: float | None = None,
    norms: str = "theorem",
) -> GeneralizationBound:
    """Theorem 4.3's bound on the test error of a model trained by Algorithm 1, term by term.

    With M = B_Y + 2^L ell^(L-1) B_X, with probability at least 1 - delta::

        E[(f(x) - y)^2] <= (1/n) sum_i (f(x_i) - y_i)^2
                           + O~( ||X||/n * M * d_in^(1/2) * L^(3/2) * (2r)^(L/2) * log r
                                 + M^2 * sqrt(log(1/delta) / n) )

    The formula is the main text's (the paper, Section 4.2); Appendix E, which would give the O~'s
    constants, was not available, so they are set to 1: the numbers are the bound's shape,
    not a certified value. ``||X||`` is read as the Frobenius norm sqrt(sum_i ||x_i||^2), the
    data norm of Bartlett et al. (2017), whose spectral-norm bound the proof uses. M bounds
    |f(x) - y| through |f(x)| <= prod_j ||W_j||_op ell^(L-1) ||x||, so 2^L reads as the proof's
    bound ||W_j||_op <= 2 on each of the L layers (the main text says the spectral norms are
    bounded; the value 2 is inferred from the formula). ``norms="trained"`` puts the trained
    model's prod_j ||W_j||_op in place of 2^L. B_X, B_Y default to the sample's max_i ||x_i||
    and max_i ||y_i||, a plug-in for Assumption 3's almost-sure bounds.

    Args:
      params (tuple of arrays): trained ``(W_1, ..., W_L)`` (``bcd_jax.fit(...).params``).
      X (array-like): the training inputs ``(n, d_in)``.
      Y (array-like): the training targets ``(n,)`` / ``(n, d_out)``.
      config: the run's Config (algorithm ``"monotone"``; activation with known constants).
      delta: confidence parameter in (0, 1).
      b_x (float): B_X (default: the sample maximum of ``||x_i||``).
      b_y (float): B_Y (default: the sample maximum of ``||y_i||``).
      norms: ``"theorem"`` (2^L) or ``"trained"`` (prod_j ||W_j||_op).

    Returns:
      A :class:`GeneralizationBound`.
    """
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a bcd_jax.Config, got {type(config).__name__}")
    if config.algorithm.name != "monotone":
        raise ValueError(f"config: Theorem 4.3 is about Algorithm 1 ('monotone'), got {config.algorithm.name!r}")
    network = config.resolved_network
    _, ell = _activation_constants(None, network, "config")
    delta = float(delta)
    if not 0 < delta < 1:
        raise ValueError(f"delta: expected a number in (0, 1), got {delta!r}")
    if norms not in ("theorem", "trained"):
        raise ValueError(f"norms: expected 'theorem' or 'trained', got {norms!r}")
    Xf, _ = _matrix("X", X, bias=network.bias)
    Yf = np.asarray(Y, dtype=np.float64).reshape(Xf.shape[0], -1)
    check_weights(params, network.layer_shapes(Xf.shape[1] - int(network.bias), Yf.shape[1]), width=network.width)
    weights = [np.asarray(w, dtype=np.float64) for w in params]
    # bcd_jax.predict's forward pass, in the weights' precision.
    dtype = np.asarray(params[0]).dtype
    features = input_features(jnp.asarray(np.asarray(X, dtype)), network.bias)
    pred = np.asarray(network_output(tuple(jnp.asarray(w) for w in params), features, network), dtype=np.float64)
    n, d_in = Xf.shape
    L, r = network.depth, network.width
    b_x = float(np.max(np.linalg.norm(Xf, axis=1))) if b_x is None else _positive("b_x", b_x)
    b_y = float(np.max(np.linalg.norm(Yf, axis=1))) if b_y is None else _positive("b_y", b_y)
    spectral = tuple(float(np.linalg.norm(w, 2)) for w in weights)
    product = float(np.prod(spectral))
    norm_product = 2.0**L if norms == "theorem" else product
    M = b_y + norm_product * ell ** (L - 1) * b_x
    x_norm = float(np.linalg.norm(Xf))
    empirical = float(np.mean(np.sum((pred - Yf) ** 2, axis=1)))
    complexity = x_norm / n * M * math.sqrt(d_in) * L**1.5 * (2 * r) ** (L / 2) * math.log(r)
    confidence = M**2 * math.sqrt(math.log(1 / delta) / n)
    return GeneralizationBound(
        n=n, d_in=d_in, depth=L, width=r, ell=ell, delta=delta, b_x=b_x, b_y=b_y, x_norm=x_norm,
        spectral_norms=spectral, spectral_product=product, norms=norms, norm_product=norm_product,
        output_range=M, empirical=empirical, complexity=complexity, confidence=confidence,
        total=empirical + complexity + confidence,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _matrix(name: str, X, *, bias: bool = False) -> tuple[np.ndarray, float]:
    """X as a finite float64 (n, d) array (with a ones column when ``bias``) and its dtype's eps."""
    arr = np.asarray(X)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name}: expected a non-empty 2-D array (n, d_in), got shape {arr.shape}")
    eps = float(np.finfo(arr.dtype).eps) if np.issubdtype(arr.dtype, np.floating) else float(np.finfo(np.float64).eps)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains non-finite values")
    if bias:
        arr = np.concatenate([arr, np.ones((arr.shape[0], 1))], axis=1)
    return arr, eps


def _bias(config: Config | None) -> bool:
    return bool(config.network.bias) if config is not None else False


def _theorem_data(X, residuals, config, theorem: str) -> tuple[DataReport, float, float]:
    """The DataReport of X (with the bias column of ``config.network.bias``), R and R_max of the residuals."""
    Xf, eps = _matrix("X", X, bias=_bias(config))
    report = _report(Xf, eps)
    if not report.full_row_rank:
        raise ValueError(
            f"X: Theorem {theorem} needs rank X = n (Assumption 1); X is {report.n} x {report.d_in} with rank "
            f"{report.rank}" + ("" if report.n_le_d_in else " (n > d_in)")
        )
    res = np.asarray(residuals, dtype=np.float64)
    if res.ndim == 1:
        res = res[:, None]
    if res.ndim != 2 or res.shape[0] != report.n or not np.all(np.isfinite(res)):
        raise ValueError(
            f"residuals: expected finite initial residuals W_L V_(L-1),i - y_i of shape (n,) or (n, d_out) with "
            f"n = {report.n}, got shape {np.shape(residuals)}"
        )
    R_i = np.linalg.norm(res, axis=1)
    return report, float(np.sum(R_i**2)), float(np.max(R_i))


def _setting(config, depth, width, gamma, algorithm: str, theorem: str) -> tuple[int, int, float]:
    """(L, r, gamma) from the keywords, else from ``config``; checks the config's algorithm and loss."""
    if config is not None:
        if not isinstance(config, Config):
            raise ValueError(f"config: expected a bcd_jax.Config or None, got {type(config).__name__}")
        if config.algorithm.name != algorithm:
            raise ValueError(
                f"config: Theorem {theorem} is about algorithm {algorithm!r}, got {config.algorithm.name!r}"
            )
        if config.network.loss_fn.name != "squared":
            raise ValueError(f"config: Theorem {theorem} is about the squared loss, got loss={config.network.loss!r}")
    values = {"depth": depth, "width": width, "gamma": gamma}
    for name, value in values.items():
        if value is None:
            if config is None:
                raise ValueError(f"{name}: not given and no config to take it from")
            values[name] = config.hyper.gamma if name == "gamma" else getattr(config.network, name)
    for name, low in (("depth", 2), ("width", 1)):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return values["depth"], values["width"], _positive("gamma", values["gamma"])


def _network_at(config: Config | None, depth: int) -> Network | None:
    """``config``'s network at depth ``depth`` (None without a config)."""
    if config is None:
        return None
    network = config.resolved_network
    if depth == network.depth:
        return network
    try:
        return network.replace(depth=depth)
    except ValueError as exc:  # a per-layer activation list of another length
        raise ValueError(f"depth: {depth} does not fit config.network ({exc})") from None


def _activation_constants(activation, network: Network | None, name: str) -> tuple[float, float]:
    """(alpha, ell) for Assumption 2 from ``activation``, else ``network``'s hidden layers;
    per-layer activations give (min alpha, max ell)."""
    if activation is not None:
        if isinstance(activation, Config):
            raise ValueError(f"{name}: expected an Activation or a registry name; pass a Config as config=")
        try:
            acts = (get_activation(activation),)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    elif network is not None:
        acts = network.layer_activations
    else:
        raise ValueError(f"{name}: give an Activation (or a Config) to take alpha and ell from")
    unknown = sorted({a.name for a in acts if a.alpha is None or a.lipschitz is None})
    if unknown:
        raise ValueError(
            f"{name}: the constants alpha (inf sigma') and ell (Lipschitz) of {unknown} are unknown; declare them, "
            "e.g. bcd_jax.Activation(name, fn, alpha=..., lipschitz=...)"
        )
    alpha, ell = min(a.alpha for a in acts), max(a.lipschitz for a in acts)
    if alpha <= 0:
        zero = sorted({a.name for a in acts if a.alpha <= 0})
        raise ValueError(
            f"{name}: Theorem 4.1 needs alpha = inf sigma' > 0 (Assumption 2), but {zero} has alpha = {alpha}; "
            "for ReLU use theorem_5_3 (Algorithm 3)"
        )
    return float(alpha), float(ell)


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return value


def _step(name: str, value, bound: float, default: float | None = None) -> float:
    """The step size to use: ``default`` (else ``bound``) if ``value`` is None, else ``value`` (<= bound).

    ``value`` may exceed ``bound`` by rounding (1e-12 relative), e.g. a bound recomputed by the caller.
    """
    if value is None:
        return bound if default is None else min(default, bound)
    value = _positive(name, value)
    if value > bound * (1 + 1e-12):
        raise ValueError(f"{name}: {value!r} exceeds the theorem's bound {bound!r}")
    return value


def _count(prefactor: float, log_argument: float) -> int:
    """``ceil(prefactor * log(log_argument))``, and 0 when the logarithm is <= 0."""
    if not log_argument > 1:
        return 0
    return int(math.ceil(prefactor * math.log(log_argument)))
