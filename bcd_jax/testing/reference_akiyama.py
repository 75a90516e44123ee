"""A plain NumPy float64 reference of the paper's Algorithms 1 and 3, one sample at a time.

Deliberately slow and obvious: Python loops over samples and inner iterations, every
gradient written out by hand, nothing shared with ``bcd_jax`` except the documented
conventions (the module docstring of ``bcd_jax/algorithms/akiyama.py``):

* per-sample losses are ``1/2 ||.||^2``; a weight gradient is the MEAN over the n samples
  of the per-sample gradients;
* ``W_L`` steps with ``eta_w``; ``V_{L-1,i}`` takes one step with ``eta_v``;
* hidden ``W_j`` takes one step with ``gamma * eta_w``; then every ``V_{j-1,i}`` takes K_V
  steps with ``gamma * eta_v``; finally ``W_1`` takes K_W steps with ``gamma * eta_w1``.

Algorithm 3 (``relu_skip``) adds ``+ V_{j-1,i}`` inside the layer residual for j >= 2 (and
so an extra ``+ e`` in the V gradient), projects ``V <- max(V, 0)`` after the output step
and after each K_V loop, never updates ``W_L`` and fits ``W_1`` to ``W_1 x_i - V_{1,i}``.

Weights are indexed like the paper: ``W[j]`` for j = 1..L and ``V[j]`` for j = 0..L-1 with
``V[0] = X`` (index 0 of ``W`` is unused).
"""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------------------
# Activations and their derivatives, by hand (scalar maths, applied entry by entry)
# --------------------------------------------------------------------------------------


def leaky(slope):
    def f(z):
        return np.array([t if t >= 0 else slope * t for t in z])

    def df(z):
        return np.array([1.0 if t >= 0 else slope for t in z])

    return f, df


def _relu():
    def f(z):
        return np.array([t if t > 0 else 0.0 for t in z])

    def df(z):
        return np.array([1.0 if t > 0 else 0.0 for t in z])

    return f, df


def _identity():
    return (lambda z: np.array(z, dtype=float)), (lambda z: np.ones(len(z)))


def _tanh_plus():
    """sigma(z) = z + 0.5 tanh(z), the user-supplied callable of the tests."""

    def f(z):
        return np.array([t + 0.5 * math.tanh(t) for t in z])

    def df(z):
        return np.array([1.0 + 0.5 * (1.0 - math.tanh(t) ** 2) for t in z])

    return f, df


def reference_activation(name: str, negative_slope: float = 0.5):
    """``(sigma, sigma')`` for one sample's vector, written by hand."""
    if name == "leaky_relu":
        return leaky(negative_slope)
    if name == "relu":
        return _relu()
    if name == "identity":
        return _identity()
    if name == "tanh_plus":
        return _tanh_plus()
    raise KeyError(f"no hand-written reference for activation {name!r}")


class Kinks:
    """Records the smallest |pre-activation| seen, to prove no kink was hit."""

    def __init__(self):
        self.min_abs = math.inf

    def see(self, z):
        self.min_abs = min(self.min_abs, float(np.min(np.abs(z))))


# --------------------------------------------------------------------------------------
# Initialisation and network
# --------------------------------------------------------------------------------------


def as_paper(weights):
    """``(W_1..W_L)`` -> list with ``W[0] = None`` so ``W[j]`` is the paper's W_j."""
    return [None] + [np.array(w, dtype=np.float64) for w in weights]


def forward_hidden(W, X, act, skip, kinks=None):
    """``V_{j,i}`` of the exact initialisation, one sample at a time; returns [X, V_1..V_{L-1}]."""
    f, _ = act
    L = len(W) - 1
    n = X.shape[0]
    V = [np.array(X, dtype=np.float64)] + [np.zeros((n, W[j].shape[0])) for j in range(1, L)]
    for i in range(n):
        for j in range(1, L):
            z = W[j] @ V[j - 1][i]
            if kinks is not None:
                kinks.see(z)
            V[j][i] = f(z) + (V[j - 1][i] if (skip and j >= 2) else 0.0)
    return V


def predict(W, X, act, skip):
    V = forward_hidden(W, X, act, skip)
    L = len(W) - 1
    return np.stack([W[L] @ V[L - 1][i] for i in range(X.shape[0])])


# --------------------------------------------------------------------------------------
# One sweep
# --------------------------------------------------------------------------------------


def sweep(W, V, Y, *, act, spec, gamma, eta_v, eta_w, eta_w1, k_v, k_w, kinks=None):
    """One outer iteration of Algorithm 1 / 3. ``V[0]`` is X. Returns new (W, V) lists.

    ``spec`` holds the paper's switches (``skip``, ``project_nonneg``, ``train_output_weight``,
    ``linear_first_layer_fit``): ``bcd_jax.Akiyama(variant).spec``.
    """
    f, df = act
    W = [None] + [w.copy() for w in W[1:]]
    V = [v.copy() for v in V]
    L = len(W) - 1
    n = Y.shape[0]
    skip, project = spec.skip, spec.project_nonneg

    def see(z):
        if kinks is not None:
            kinks.see(z)

    # Algorithm 1 line 2: W_L <- W_L - eta_w * mean_i grad 1/2||W_L V_{L-1,i} - y_i||^2.
    if spec.train_output_weight:
        grad = np.zeros_like(W[L])
        for i in range(n):
            r = W[L] @ V[L - 1][i] - Y[i]
            grad += np.outer(r, V[L - 1][i])
        W[L] = W[L] - eta_w * grad / n

    # Lines 3-4 (Algorithm 3 lines 2-4): one step on each V_{L-1,i}, then (V)^+.
    for i in range(n):
        v = V[L - 1][i]
        v = v - eta_v * (W[L].T @ (W[L] @ v - Y[i]))
        if project:
            v = np.maximum(v, 0.0)
        V[L - 1][i] = v

    # Lines 5-9: j = L-1 .. 2.
    for j in range(L - 1, 1, -1):
        # One step on W_j for mean_i 1/2||sigma(W_j V_{j-1,i}) (+V_{j-1,i}) - V_{j,i}||^2.
        grad = np.zeros_like(W[j])
        for i in range(n):
            a = V[j - 1][i]
            z = W[j] @ a
            see(z)
            e = f(z) + (a if skip else 0.0) - V[j][i]
            grad += np.outer(df(z) * e, a)
        W[j] = W[j] - gamma * eta_w * grad / n

        # K_V steps on each V_{j-1,i} with the NEW W_j, then (V)^+ after the inner loop.
        for i in range(n):
            u = V[j - 1][i].copy()
            target = V[j][i]
            for _ in range(k_v):
                z = W[j] @ u
                see(z)
                e = f(z) + (u if skip else 0.0) - target
                g = W[j].T @ (df(z) * e)
                if skip:
                    g = g + e
                u = u - gamma * eta_v * g
            if project:
                u = np.maximum(u, 0.0)
            V[j - 1][i] = u

    # Lines 10-11: K_W steps on W_1 (input V_0 = X is fixed).
    for _ in range(k_w):
        grad = np.zeros_like(W[1])
        for i in range(n):
            x = V[0][i]
            z = W[1] @ x
            if spec.linear_first_layer_fit:
                r = z - V[1][i]
            else:
                see(z)
                r = df(z) * (f(z) - V[1][i])
            grad += np.outer(r, x)
        W[1] = W[1] - gamma * eta_w1 * grad / n
    return W, V


def run(W, V, Y, num_sweeps, **kw):
    for _ in range(num_sweeps):
        W, V = sweep(W, V, Y, **kw)
    return W, V


# --------------------------------------------------------------------------------------
# Diagnostics (paper's squared norms, no 1/2, averaged over samples)
# --------------------------------------------------------------------------------------


def diagnostics(W, V, Y, *, act, spec, gamma):
    f, _ = act
    L = len(W) - 1
    n = Y.shape[0]
    out = np.mean([np.sum((W[L] @ V[L - 1][i] - Y[i]) ** 2) for i in range(n)])
    layers = []
    for j in range(1, L):
        terms = []
        for i in range(n):
            pre = f(W[j] @ V[j - 1][i]) + (V[j - 1][i] if (spec.skip and j >= 2) else 0.0)
            terms.append(np.sum((pre - V[j][i]) ** 2))
        layers.append(np.mean(terms))
    layers = np.array(layers)
    pred = predict(W, V[0], act, spec.skip)
    mse = np.mean([np.sum((pred[i] - Y[i]) ** 2) for i in range(n)])
    svals = [np.linalg.svd(W[j], compute_uv=False) for j in range(1, L + 1)]
    gram = [np.linalg.eigvalsh(V[j] @ V[j].T)[-1] for j in range(1, L)]
    return {
        "objective": out + gamma * layers.sum(),
        "output_loss": out,
        "layer_losses": layers,
        "train_mse": mse,
        "sv_min": np.array([s.min() for s in svals]),
        "sv_max": np.array([s.max() for s in svals]),
        "v_gram_max": np.array(gram),
    }
