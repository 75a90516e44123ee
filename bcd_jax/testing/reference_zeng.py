"""A plain NumPy float64 reference of Zeng et al.'s two- and three-splitting BCD, one sample at a time.

Written from the update formulas (the module docstring of ``bcd_jax.algorithms.zeng``), sharing
nothing with bcd_jax: Python loops over samples, layers and entries; each weight solve builds its
normal equations as a sum of per-sample outer products; the ReLU / leaky-ReLU prox of U compares
the two linear pieces by hand.

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


def forward(W, X, slope, skip, bias_all):
    """Blocks at init: U_j = W_j [V_{j-1}; 1], V_j = sigma(U_j) (+ V_{j-1}), V_N = U_N."""
    f, _ = leaky(slope)
    N = len(W) - 1
    n = X.shape[0]
    V = [[None] * n for _ in range(N + 1)]
    U = [[None] * n for _ in range(N + 1)]
    for i in range(n):
        h = X[i]
        V[0][i] = h
        for j in range(1, N + 1):
            u = W[j] @ (h if j == 1 else with_one(h, bias_all))
            v = u if j == N else f(u) + (h if skip and j >= 2 else 0.0)
            U[j][i], V[j][i] = u, v
            h = v
    return [np.array(v) for v in V], [None] + [np.array(u) for u in U[1:]]


def three_splitting_sweep(
    W, V, U, Y, gamma, rho, alpha, lam, slope, skip, bias_all, loss_grad=None, bias_update="joint"
):
    """One sweep (output block, then V_j, U_j, W_j for j = N-1..1); returns new lists W, V, U.

    ``loss_grad``: None for the squared loss 1/2||v - y||^2 (exact prox), else a function
    ``(v, y) -> gradient`` for the prox-linear output step. ``bias_update="jacobi"``: the weight
    blocks take the authors' Jacobi (W, b) step instead of the joint ridge solve.
    """
    solve = jacobi if bias_update == "jacobi" else ridge
    f, _ = leaky(slope)
    W, V, U = [None if w is None else w.copy() for w in W], [v.copy() for v in V], [None] + [u.copy() for u in U[1:]]
    N = len(W) - 1
    n = Y.shape[0]

    def inp(j, i):
        return V[0][i] if j == 1 else with_one(V[j - 1][i], bias_all)

    for i in range(n):
        if loss_grad is None:
            V[N][i] = (Y[i] + gamma * U[N][i] + alpha * V[N][i]) / (1 + gamma + alpha)
        else:
            V[N][i] = (gamma * U[N][i] + alpha * V[N][i] - loss_grad(V[N][i], Y[i])) / (gamma + alpha)
    for i in range(n):
        U[N][i] = (gamma * V[N][i] + rho * (W[N] @ inp(N, i))) / (gamma + rho)
    W[N] = solve(W[N], U[N], [inp(N, i) for i in range(n)], rho, alpha, lam)

    for j in range(N - 1, 0, -1):
        Wn = W[j + 1][:, :-1] if bias_all else W[j + 1]
        bn = W[j + 1][:, -1] if bias_all else np.zeros(W[j + 1].shape[0])
        couple = skip and j + 1 <= N - 1
        M = rho * Wn.T @ Wn + gamma * (2.0 if couple else 1.0) * np.eye(Wn.shape[1])
        for i in range(n):
            rhs = rho * Wn.T @ (U[j + 1][i] - bn) + gamma * (f(U[j][i]) + (V[j - 1][i] if skip and j >= 2 else 0.0))
            if couple:
                rhs = rhs + gamma * (V[j + 1][i] - f(U[j + 1][i]))
            V[j][i] = np.linalg.solve(M, rhs)
        for i in range(n):
            a = V[j][i] - (V[j - 1][i] if skip and j >= 2 else 0.0)
            z = W[j] @ inp(j, i)
            t = (rho * z + alpha * U[j][i]) / (rho + alpha)
            U[j][i] = np.array([scalar_prox(a[k], t[k], (rho + alpha) / gamma, slope) for k in range(len(a))])
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


def objective(W, V, U, Y, gamma, rho, lam, slope, skip, bias_all, three, loss=None):
    """F / n (squared loss 1/2||.||^2 unless ``loss(v, y)`` is given)."""
    f, _ = leaky(slope)
    N = len(W) - 1
    n = Y.shape[0]
    total = 0.0
    for i in range(n):
        total += 0.5 * np.sum((V[N][i] - Y[i]) ** 2) if loss is None else loss(V[N][i], Y[i])
        for j in range(1, N + 1):
            x = V[0][i] if j == 1 else with_one(V[j - 1][i], bias_all)
            z = W[j] @ x
            u = U[j][i] if three else z
            pre = u if j == N else f(u) + (V[j - 1][i] if skip and j >= 2 else 0.0)
            total += 0.5 * gamma * np.sum((V[j][i] - pre) ** 2)
            if three:
                total += 0.5 * rho * np.sum((u - z) ** 2)
    total += 0.5 * lam * sum(np.sum(w * w) for w in W[1:])
    return total / n
