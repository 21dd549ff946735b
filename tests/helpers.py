"""Independent reference implementations used by the tests (plain NumPy, no autodiff, no mfpde code)."""

import numpy as np
import scipy.special

# σ and σ' of every activation, by hand (σ' = 0 for step and sign: their gradient is zero almost everywhere).
ACTIVATIONS = {
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "sigmoid": (scipy.special.expit, lambda z: scipy.special.expit(z) * (1.0 - scipy.special.expit(z))),
    "erf": (scipy.special.erf, lambda z: 2.0 / np.sqrt(np.pi) * np.exp(-(z**2))),
    "identity": (lambda z: z, np.ones_like),
    "softplus": (lambda z: np.logaddexp(0.0, z), scipy.special.expit),
    "step": (lambda z: (z > 0).astype(float), np.zeros_like),
    "sign": (np.sign, np.zeros_like),
}


def two_layer_gradient_flow(theta, X, y, *, alpha=1.0, l2=0.0, bias=False, activation="tanh"):
    """Right-hand side of continuous-time GD of the width-N network, written by hand.

    f(x) = (α/N) Σ_j u_j σ(w_j·x + b_j), J = (1/n) Σ_i ½ (f(x_i) − y_i)² + (l2/2N) Σ_j |θ_j|²,
    θ̇_j = −N ∂J/∂θ_j (the mean-field time unit).
    """
    sigma, dsigma = ACTIVATIONS[activation]
    N = theta.shape[0]
    d = X.shape[1]
    u, w = theta[:, 0], theta[:, 1 : 1 + d]
    b = theta[:, 1 + d] if bias else np.zeros(N)
    pre = X @ w.T + b  # (n, N)
    h = sigma(pre)
    f = alpha * h @ u / N
    r = (f - y[:, 0]) / X.shape[0]  # dJ/df_i
    du = alpha * h.T @ r / N
    dpre = alpha * (r[:, None] * dsigma(pre)) * u[None, :] / N  # (n, N)
    dw = dpre.T @ X
    grads = [du[:, None], dw]
    if bias:
        grads.append(dpre.sum(axis=0)[:, None])
    grad = np.concatenate(grads, axis=1) + l2 * theta / N
    return -N * grad, 0.5 * np.mean((f - y[:, 0]) ** 2)
