"""A plain NumPy float64 reference of Zeng et al.'s two- and three-splitting BCD, one sample at a time.

Written from the update formulas (the module docstring of ``bcd_jax.algorithms.zeng``), sharing
nothing with bcd_jax: Python loops over samples, layers and entries; each weight solve builds its
normal equations as a sum of per-sample outer products; the ReLU / leaky-ReLU prox of U compares
the two linear pieces by hand.

Any piecewise-linear activation -- continuous (ReLU) or not (step, sign, quantised staircases) --
is given as its ``pieces``: plain tuples ``(low, high, slope, intercept)`` in increasing order
from -inf to inf, each closed on the left and open on the right (``sigma`` right-continuous at a
jump). :func:`piecewise_value` evaluates it and :func:`scalar_prox_pieces` is its exact scalar
prox, written from the definition without any grid search; ``forward``, ``three_splitting_sweep``
and ``objective`` take ``pieces=`` (one activation for every hidden layer, or a list with one per
hidden layer) in place of the LeakyReLU slope; :func:`ramped_pieces` gives a staircase's pieces with
its jumps made ramps (``annealed_three_splitting``).

Indexing is the paper's: ``W[j]``, ``V[j]``, ``U[j]`` for j = 1..N (index 0 of W and U unused,
``V[0]`` is the input with its bias column). ``bias_all``: every layer input gets a constant 1.
"""

from __future__ import annotations

import numpy as np

from bcd_jax.testing.reference_akiyama import leaky  # the same hand-written LeakyReLU and its derivative


def with_one(v, bias_all):
    return np.concatenate([v, [1.0]]) if bias_all else np.array(v)


def scalar_prox(a, t, g, slope):
    """argmin_u (sigma(u) - a)^2 + g (u - t)^2 for sigma(u) = max(u, slope u), by comparing both pieces."""
    candidates = [max((a + g * t) / (1 + g), 0.0), min((slope * a + g * t) / (slope**2 + g), 0.0)]

    def cost(u):
        s = u if u >= 0 else slope * u
        return (s - a) ** 2 + g * (u - t) ** 2

    costs = [cost(u) for u in candidates]
    return candidates[0] if costs[0] <= costs[1] else candidates[1]


def piecewise_value(u, pieces):
    """sigma(u) for the activation given by ``pieces`` (the piece whose [low, high) holds u)."""
    for low, high, slope, intercept in pieces:
        if low <= u < high:
            return slope * u + intercept
    raise ValueError(f"u = {u!r} lies on no piece of {pieces!r}")


def _last_below(x):
    """The largest float64 below ``x`` that is not subnormal.

    A piece that ends at a jump is open there; its best point may be the last float below the
    jump. Next to a jump at 0 that float would be subnormal, and XLA on CPU flushes subnormals to
    zero (so the JAX iterate would sit ON the jump, on the other piece): like bcd_jax, take the
    smallest normal number below 0, ``-tiny``, instead."""
    below = np.nextafter(x, -np.inf)
    tiny = np.finfo(np.float64).tiny
    return -tiny if abs(below) < tiny else below


def scalar_prox_pieces(a, t, g, pieces):
    """argmin_u (sigma(u) - a)^2 + g (u - t)^2 for the piecewise-linear sigma of ``pieces``, exactly.

    On the piece ``[low, high)`` with ``sigma(u) = s u + c`` the cost is a convex quadratic, so its
    best point is the unconstrained minimiser ``(s (a - c) + g t) / (s^2 + g)`` clipped to the
    piece (to the last float below ``high`` when sigma jumps there: the piece is open at a jump,
    and its value does not reach ``high``). The minimiser is the best of these candidates; a tie
    goes to the piece further right."""
    best_u, best_cost = None, None
    for k, (low, high, s, c) in enumerate(pieces):
        u = (s * (a - c) + g * t) / (s * s + g)
        if k + 1 < len(pieces):
            next_s, next_c = pieces[k + 1][2], pieces[k + 1][3]
            if s * high + c != next_s * high + next_c:  # a jump: the piece is open at high
                high = _last_below(high)
        u = min(max(u, low), high)
        cost = (s * u + c - a) ** 2 + g * (u - t) ** 2
        if best_cost is None or cost <= best_cost:
            best_u, best_cost = u, cost
    return best_u


def ramped_pieces(pieces, ramp):
    """``pieces`` of a staircase with every jump made a linear ramp of half-width ``ramp * gap / 2``
    (``gap``: the smallest distance between two jumps, or the height of a single jump); pieces with
    a slope (ReLU) and ``ramp = 0`` are returned as they are. Written from the definition in
    ``bcd_jax.algorithms.annealed``'s docstring, not from its code."""
    if ramp == 0 or any(p[2] != 0 for p in pieces):
        return pieces
    levels = [p[3] for p in pieces]
    jumps = [p[0] for p in pieces[1:]]
    gaps = [b - a for a, b in zip(jumps, jumps[1:])]
    w = ramp * (min(gaps) if gaps else abs(levels[1] - levels[0])) / 2
    out, low = [], -np.inf
    for m, t in enumerate(jumps):
        out.append((low, t - w, 0.0, levels[m]))
        slope = (levels[m + 1] - levels[m]) / (2 * w)
        out.append((t - w, t + w, slope, levels[m] - slope * (t - w)))
        low = t + w
    out.append((low, np.inf, 0.0, levels[-1]))
    return tuple(p for p in out if p[0] < p[1])


def layer_pieces(pieces, N):
    """Per hidden layer 1..N-1 (index 0 unused): one activation's pieces repeated, or the list given."""
    if pieces is None:
        return None
    one = all(isinstance(p, tuple) and len(p) == 4 and not isinstance(p[0], tuple) for p in pieces)
    per_layer = [tuple(pieces)] * (N - 1) if one else [tuple(p) for p in pieces]
    if len(per_layer) != N - 1:
        raise ValueError(f"pieces: expected one activation or N - 1 = {N - 1} of them, got {len(per_layer)}")
    return [None, *per_layer]


def _sigma(slope, pieces, j):
    """The activation of hidden layer j: the pieces' sigma when given, else the LeakyReLU of ``slope``."""
    if pieces is None:
        return leaky(slope)[0]
    return np.vectorize(lambda u: piecewise_value(float(u), pieces[j]), otypes=[np.float64])


def ridge(W_old, targets, inputs, scale, alpha, lam):
    """argmin_W sum_i scale/2 ||t_i - W x_i||^2 + alpha/2 ||W - W_old||^2 + lam/2 ||W||^2, row by row."""
    k = inputs[0].shape[0]
    A = (alpha + lam) * np.eye(k)
    B = alpha * W_old.copy()
    for t, x in zip(targets, inputs):
        A += scale * np.outer(x, x)
        B += scale * np.outer(t, x)
    return np.linalg.solve(A, B.T).T


def jacobi(W_old, targets, inputs, scale, alpha, lam):
    """The authors' bias step (their ``updateWb``), row by row: W with the OLD bias held fixed, the
    bias with the OLD W held fixed; ``inputs`` end with the constant 1."""
    Wp, b = W_old[:, :-1], W_old[:, -1]
    k = Wp.shape[1]
    A = (alpha + lam) * np.eye(k)
    B = alpha * Wp.copy()
    total = np.zeros_like(b)
    for t, x in zip(targets, inputs):
        v = x[:-1]
        A += scale * np.outer(v, v)
        B += scale * np.outer(t - b, v)
        total += t - Wp @ v
    W_new = np.linalg.solve(A, B.T).T
    b_new = (alpha * b + scale * total) / (scale * len(targets) + alpha + lam)
    return np.concatenate([W_new, b_new[:, None]], axis=1)


def forward(W, X, slope, skip, bias_all, pieces=None):
    """Blocks at init: U_j = W_j [V_{j-1}; 1], V_j = sigma(U_j) (+ V_{j-1}), V_N = U_N.

    ``pieces``: the hidden activation(s) as pieces (see the module docstring); None: LeakyReLU(slope)."""
    N = len(W) - 1
    pieces = layer_pieces(pieces, N)
    n = X.shape[0]
    V = [[None] * n for _ in range(N + 1)]
    U = [[None] * n for _ in range(N + 1)]
    for i in range(n):
        h = X[i]
        V[0][i] = h
        for j in range(1, N + 1):
            u = W[j] @ (h if j == 1 else with_one(h, bias_all))
            v = u if j == N else _sigma(slope, pieces, j)(u) + (h if skip and j >= 2 else 0.0)
            U[j][i], V[j][i] = u, v
            h = v
    return [np.array(v) for v in V], [None] + [np.array(u) for u in U[1:]]


def three_splitting_sweep(
    W, V, U, Y, gamma, rho, alpha, lam, slope, skip, bias_all, loss_grad=None, bias_update="joint", pieces=None
):
    """One sweep (output block, then V_j, U_j, W_j for j = N-1..1); returns new lists W, V, U.

    ``loss_grad``: None for the squared loss 1/2||v - y||^2 (exact prox), else a function
    ``(v, y) -> gradient`` for the prox-linear output step. ``bias_update="jacobi"``: the weight
    blocks take the authors' Jacobi (W, b) step instead of the joint ridge solve. ``pieces``: the
    hidden activation(s) as pieces (one for all layers, or one per hidden layer; ``slope`` is then
    unused): sigma and the U prox come from them (:func:`scalar_prox_pieces`).
    """
    solve = jacobi if bias_update == "jacobi" else ridge
    W, V, U = [None if w is None else w.copy() for w in W], [v.copy() for v in V], [None] + [u.copy() for u in U[1:]]
    N = len(W) - 1
    n = Y.shape[0]
    layers = layer_pieces(pieces, N)

    def inp(j, i):
        return V[0][i] if j == 1 else with_one(V[j - 1][i], bias_all)

    def prox(a, t, g, j):
        if layers is None:
            return scalar_prox(a, t, g, slope)
        return scalar_prox_pieces(a, t, g, layers[j])

    for i in range(n):
        if loss_grad is None:
            V[N][i] = (Y[i] + gamma * U[N][i] + alpha * V[N][i]) / (1 + gamma + alpha)
        else:
            V[N][i] = (gamma * U[N][i] + alpha * V[N][i] - loss_grad(V[N][i], Y[i])) / (gamma + alpha)
    for i in range(n):
        U[N][i] = (gamma * V[N][i] + rho * (W[N] @ inp(N, i))) / (gamma + rho)
    W[N] = solve(W[N], U[N], [inp(N, i) for i in range(n)], rho, alpha, lam)

    for j in range(N - 1, 0, -1):
        f, f_next = _sigma(slope, layers, j), (_sigma(slope, layers, j + 1) if j + 1 < N else None)
        Wn = W[j + 1][:, :-1] if bias_all else W[j + 1]
        bn = W[j + 1][:, -1] if bias_all else np.zeros(W[j + 1].shape[0])
        couple = skip and j + 1 <= N - 1
        M = rho * Wn.T @ Wn + gamma * (2.0 if couple else 1.0) * np.eye(Wn.shape[1])
        for i in range(n):
            rhs = rho * Wn.T @ (U[j + 1][i] - bn) + gamma * (f(U[j][i]) + (V[j - 1][i] if skip and j >= 2 else 0.0))
            if couple:
                rhs = rhs + gamma * (V[j + 1][i] - f_next(U[j + 1][i]))
            V[j][i] = np.linalg.solve(M, rhs)
        for i in range(n):
            a = V[j][i] - (V[j - 1][i] if skip and j >= 2 else 0.0)
            z = W[j] @ inp(j, i)
            t = (rho * z + alpha * U[j][i]) / (rho + alpha)
            U[j][i] = np.array([prox(a[k], t[k], (rho + alpha) / gamma, j) for k in range(len(a))])
        W[j] = solve(W[j], U[j], [inp(j, i) for i in range(n)], rho, alpha, lam)
    return W, V, U


def two_splitting_sweep(W, V, Y, gamma, alpha, lam, slope, skip, bias_all, loss_grad=None):
    """One sweep of the two-splitting form: V_N, W_N exact; hidden V_j exact below the output layer,
    prox-linear below a hidden layer; hidden W_j prox-linear. Returns new lists W, V."""
    f, df = leaky(slope)
    W, V = [None if w is None else w.copy() for w in W], [v.copy() for v in V]
    N = len(W) - 1
    n = Y.shape[0]

    def inp(j, i):
        return V[0][i] if j == 1 else with_one(V[j - 1][i], bias_all)

    for i in range(n):
        c = W[N] @ inp(N, i)
        if loss_grad is None:
            V[N][i] = (Y[i] + gamma * c + alpha * V[N][i]) / (1 + gamma + alpha)
        else:
            V[N][i] = (gamma * c + alpha * V[N][i] - loss_grad(V[N][i], Y[i])) / (gamma + alpha)
    W[N] = ridge(W[N], V[N], [inp(N, i) for i in range(n)], gamma, alpha, lam)

    for j in range(N - 1, 0, -1):
        Wn = W[j + 1][:, :-1] if bias_all else W[j + 1]
        bn = W[j + 1][:, -1] if bias_all else np.zeros(W[j + 1].shape[0])
        for i in range(n):
            own = f(W[j] @ inp(j, i)) + (V[j - 1][i] if skip and j >= 2 else 0.0)
            if j + 1 == N:
                M = gamma * Wn.T @ Wn + (gamma + alpha) * np.eye(Wn.shape[1])
                rhs = gamma * Wn.T @ (V[N][i] - bn) + gamma * own + alpha * V[j][i]
                V[j][i] = np.linalg.solve(M, rhs)
            else:
                v = V[j][i]
                z = Wn @ v + bn
                gap = V[j + 1][i] - f(z) - (v if skip else 0.0)
                grad = -gamma * (Wn.T @ (df(z) * gap) + (gap if skip else 0.0))
                V[j][i] = (gamma * own + alpha * v - grad) / (gamma + alpha)
        grad_W = np.zeros_like(W[j])
        for i in range(n):
            x = inp(j, i)
            z = W[j] @ x
            gap = V[j][i] - f(z) - (V[j - 1][i] if skip and j >= 2 else 0.0)
            grad_W += -gamma * np.outer(df(z) * gap, x)
        W[j] = (alpha * W[j] - grad_W) / (alpha + lam)
    return W, V


def objective(W, V, U, Y, gamma, rho, lam, slope, skip, bias_all, three, loss=None, pieces=None):
    """F / n (squared loss 1/2||.||^2 unless ``loss(v, y)`` is given; ``pieces`` as in :func:`forward`)."""
    N = len(W) - 1
    layers = layer_pieces(pieces, N)
    n = Y.shape[0]
    total = 0.0
    for i in range(n):
        total += 0.5 * np.sum((V[N][i] - Y[i]) ** 2) if loss is None else loss(V[N][i], Y[i])
        for j in range(1, N + 1):
            x = V[0][i] if j == 1 else with_one(V[j - 1][i], bias_all)
            z = W[j] @ x
            u = U[j][i] if three else z
            pre = u if j == N else _sigma(slope, layers, j)(u) + (V[j - 1][i] if skip and j >= 2 else 0.0)
            total += 0.5 * gamma * np.sum((V[j][i] - pre) ** 2)
            if three:
                total += 0.5 * rho * np.sum((u - z) ** 2)
    total += 0.5 * lam * sum(np.sum(w * w) for w in W[1:])
    return total / n
