"""A plain NumPy float64 reference of the whole-objective sweep (``inner="gd"``), one sample at a time.

Written from the formulas of ``bcd_jax.algorithms.whole_objective``: Python loops over samples,
layers and steps, gradients by hand. The step sizes are ``eta / L`` with the blocks' Lipschitz
constants; the largest eigenvalues in them are estimated the way the library documents
(64 power iterations from the normalised ones vector), here in plain NumPy.

Indexing is the paper's: ``W[j]`` for j = 1..L (index 0 unused), ``V[j]`` for j = 0..L-1 with
``V[0]`` the inputs (bias column included).
"""

from __future__ import annotations

import numpy as np

from bcd_jax.testing.reference_akiyama import leaky  # the same hand-written LeakyReLU and its derivative


def top_gram_eigenvalue(A, iterations=64):
    """lambda_max(A^T A / n) by power iteration on the smaller Gram matrix."""
    n, k = A.shape
    G = A.T @ A if k <= n else A @ A.T
    v = np.ones(G.shape[0]) / np.sqrt(G.shape[0])
    for _ in range(iterations):
        w = G @ v
        v = w / max(np.linalg.norm(w), np.finfo(float).tiny)
    return float(v @ G @ v) / n


def spectral_norm(W):
    return np.sqrt(W.shape[0] * top_gram_eigenvalue(W))


def sweep(W, V, Y, *, gamma, eta_v, eta_w, lam, slope, skip, k_v, k_w, loss_grad, beta, resync=False, decay=1.0):
    """One gd sweep; ``loss_grad(pred, y)`` is the gradient of the per-sample loss, ``beta`` its smoothness.

    Layer j's term has weight ``g[j] = gamma * decay ** (L - 1 - j)``.
    """
    f, df = leaky(slope)
    W = [None if w is None else w.copy() for w in W]
    V = [np.array(v, dtype=float) for v in V]
    L = len(W) - 1
    n = Y.shape[0]
    g = {j: gamma * decay ** (L - 1 - j) for j in range(1, L)}
    if resync:
        for i in range(n):
            for j in range(1, L):
                V[j][i] = f(W[j] @ V[j - 1][i]) + (V[j - 1][i] if skip and j >= 2 else 0.0)

    def own(j, i):
        return f(W[j] @ V[j - 1][i]) + (V[j - 1][i] if skip and j >= 2 else 0.0)

    # W_L: mean_i loss(W v_i, y_i) + lam/2 ||W||^2.
    step = eta_w / (beta * top_gram_eigenvalue(V[L - 1]) + lam)
    for _ in range(k_w):
        grad = lam * W[L]
        for i in range(n):
            grad = grad + np.outer(loss_grad(W[L] @ V[L - 1][i], Y[i]), V[L - 1][i]) / n
        W[L] = W[L] - step * grad
    # V_{L-1}: loss(W_L v, y) + g_{L-1}/2 ||v - a||^2.
    step = eta_v / (beta * spectral_norm(W[L]) ** 2 + g[L - 1])
    for i in range(n):
        a = own(L - 1, i)
        v = V[L - 1][i]
        for _ in range(k_v):
            v = v - step * (W[L].T @ loss_grad(W[L] @ v, Y[i]) + g[L - 1] * (v - a))
        V[L - 1][i] = v
    for j in range(L - 1, 0, -1):
        # W_j: g_j/2 mean_i ||f(W v_{j-1}) (+v_{j-1}) - v_j||^2 + lam/2 ||W||^2.
        step = eta_w / (g[j] * top_gram_eigenvalue(V[j - 1]) + lam)
        for _ in range(k_w):
            grad = lam * W[j]
            for i in range(n):
                z = W[j] @ V[j - 1][i]
                e = f(z) + (V[j - 1][i] if skip and j >= 2 else 0.0) - V[j][i]
                grad = grad + g[j] * np.outer(df(z) * e, V[j - 1][i]) / n
            W[j] = W[j] - step * grad
        if j == 1:
            break
        # V_{j-1}: g_{j-1}/2 ||v - a_{j-1}||^2 + g_j/2 ||f(W_j v) (+v) - v_j||^2.
        lip = spectral_norm(W[j]) + (1.0 if skip else 0.0)
        step = eta_v / (g[j - 1] + g[j] * lip**2)
        for i in range(n):
            a = own(j - 1, i)
            v = V[j - 1][i]
            for _ in range(k_v):
                z = W[j] @ v
                e = f(z) + (v if skip else 0.0) - V[j][i]
                grad = g[j - 1] * (v - a) + g[j] * (W[j].T @ (df(z) * e) + (e if skip else 0.0))
                v = v - step * grad
            V[j - 1][i] = v
    return W, V


def objective(W, V, Y, *, gamma, lam, slope, skip, loss, decay=1.0):
    """The paper-scale objective 2 F: mean_i [2 loss(W_L v, y) + sum_j g_j ||...||^2] + lam sum ||W||^2."""
    f, _ = leaky(slope)
    L = len(W) - 1
    n = Y.shape[0]
    total = 0.0
    for i in range(n):
        total += 2 * loss(W[L] @ V[L - 1][i], Y[i])
        for j in range(1, L):
            pre = f(W[j] @ V[j - 1][i]) + (V[j - 1][i] if skip and j >= 2 else 0.0)
            total += gamma * decay ** (L - 1 - j) * np.sum((pre - V[j][i]) ** 2)
    return total / n + lam * sum(np.sum(w * w) for w in W[1:])


def _pcg(apply_a, solve_m, x, r, iterations):
    """Plain preconditioned CG from x with residual r = b - A x, a fixed number of steps."""
    z = solve_m(r)
    p, rz = z.copy(), r @ z
    for _ in range(iterations):
        ap = apply_a(p)
        pap = p @ ap
        alpha = rz / pap if pap > 0 else 0.0
        x = x + alpha * p
        r = r - alpha * ap
        z = solve_m(r)
        rz_new = r @ z
        p = z + (rz_new / rz if rz > 0 else 0.0) * p
        rz = rz_new
    return x


def exact_sweep(W, V, Y, *, gamma, eta_v, eta_w, lam, slope, skip, k_v, k_w, cg_iterations, decay=1.0):
    """One ``inner="exact"`` sweep for the squared loss, one row / one sample at a time.

    ``W_L``: the (proximal) ridge least-squares solve; ``V_{L-1}``: its per-sample solve; every other block:
    ``k`` safeguarded Newton steps on the current pieces, each solved by ``cg_iterations``
    preconditioned CG steps from the current row (sample), then kept only where it lowers that
    row's (sample's) objective below the gradient step's.
    """
    f, df = leaky(slope)

    def f1(t):  # one entry
        return f(np.array([t]))[0]

    def df1(t):
        return df(np.array([t]))[0]

    W = [None if w is None else w.copy() for w in W]
    V = [np.array(v, dtype=float) for v in V]
    L = len(W) - 1
    n = Y.shape[0]
    g = {j: gamma * decay ** (L - 1 - j) for j in range(1, L)}
    s = 1.0 if skip else 0.0

    def own(j, i):
        return f(W[j] @ V[j - 1][i]) + (V[j - 1][i] if skip and j >= 2 else 0.0)

    def ridge_floor(G):
        # 1e-6 of the Gram's mean diagonal + ten rounding errors of its trace (as documented)
        return 1e-6 * np.trace(G) / G.shape[0] + 10 * np.finfo(float).eps * np.trace(G) + np.finfo(float).tiny

    # W_L: argmin mean_i 1/2 ||W v_i - y_i||^2 + lam/2 ||W||^2 + eps/2 ||W - W_old||^2 (proximal ridge).
    k = V[L - 1].shape[1]
    G, B = np.zeros((k, k)), np.zeros((Y.shape[1], k))
    for i in range(n):
        G += np.outer(V[L - 1][i], V[L - 1][i]) / n
        B += np.outer(Y[i], V[L - 1][i]) / n
    eps = ridge_floor(G)
    W[L] = np.linalg.solve(G + (lam + eps) * np.eye(k), (B + eps * W[L]).T).T
    # V_{L-1}: (W_L^T W_L + g I) v = W_L^T y + g a, per sample.
    M = W[L].T @ W[L] + g[L - 1] * np.eye(k)
    for i in range(n):
        V[L - 1][i] = np.linalg.solve(M, W[L].T @ Y[i] + g[L - 1] * own(L - 1, i))

    for j in range(L - 1, 0, -1):
        # W_j, row by row: gj/2 mean_i (f(w . v_i) - t_i)^2 + lam/2 ||w||^2.
        Vin = V[j - 1]
        d_in = Vin.shape[1]
        T = np.array([V[j][i] - (Vin[i] if skip and j >= 2 else 0.0) for i in range(n)])
        G = sum(np.outer(Vin[i], Vin[i]) for i in range(n)) / n
        ridge = lam + ridge_floor(G)
        M = g[j] * G + ridge * np.eye(d_in)
        step = eta_w / (g[j] * max(top_gram_eigenvalue(Vin), np.sqrt(np.finfo(float).eps)) + lam)

        def row_objective(w, t, gj=g[j], Vin=Vin):
            return sum(0.5 * gj * (f1(w @ Vin[i]) - t[i]) ** 2 / n for i in range(n)) + 0.5 * lam * (w @ w)

        for _ in range(k_w):
            new = np.empty_like(W[j])
            for r in range(W[j].shape[0]):
                w = W[j][r]
                dk = np.array([df1(w @ Vin[i]) for i in range(n)])
                grad = lam * w
                for i in range(n):
                    grad = grad + g[j] * dk[i] * (f1(w @ Vin[i]) - T[i, r]) * Vin[i] / n

                def apply_a(p, dk=dk, gj=g[j], Vin=Vin, ridge=ridge):
                    return ridge * p + sum(gj * dk[i] ** 2 * (Vin[i] @ p) * Vin[i] / n for i in range(n))

                gd = w - step * grad
                newton = _pcg(apply_a, lambda q, M=M: np.linalg.solve(M, q), w.copy(), -grad, cg_iterations)
                new[r] = newton if row_objective(newton, T[:, r]) < row_objective(gd, T[:, r]) else gd
            W[j] = new
        if j == 1:
            break
        # V_{j-1}, sample by sample: g_{j-1}/2 ||v - a||^2 + g_j/2 ||f(W_j v) (+v) - v_j||^2.
        Wj, go, gj = W[j], g[j - 1], g[j]
        r_dim = Wj.shape[1]
        shifted = Wj + s * np.eye(r_dim)
        M = go * np.eye(r_dim) + gj * shifted.T @ shifted
        step = eta_v / (go + gj * (spectral_norm(Wj) + s) ** 2)
        for i in range(n):
            a, b = own(j - 1, i), V[j][i]

            def sample_objective(v, a=a, b=b):
                e = f(Wj @ v) + s * v - b
                return 0.5 * (go * np.sum((v - a) ** 2) + gj * np.sum(e * e))

            v = V[j - 1][i]
            for _ in range(k_v):
                d = df(Wj @ v)
                e = f(Wj @ v) + s * v - b
                grad = go * (v - a) + gj * (Wj.T @ (d * e) + s * e)

                def apply_a(p, d=d):
                    jp = d * (Wj @ p) + s * p
                    return go * p + gj * (Wj.T @ (d * jp) + s * jp)

                gd = v - step * grad
                newton = _pcg(apply_a, lambda q, M=M: np.linalg.solve(M, q), v.copy(), -grad, cg_iterations)
                v = newton if sample_objective(newton) < sample_objective(gd) else gd
            V[j - 1][i] = v
    return W, V
