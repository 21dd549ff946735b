"""Expectations of activations under Gaussian pre-activations: the kernels of population risks.

For z ~ N(μ, v) and a pair (z₁, z₂) jointly Gaussian with means μ₁, μ₂, variances v₁, v₂ and covariance c:

    mean:     g(μ, v)  = E[σ(z)]
    product:  K(·)     = E[σ_a(z₁) σ_b(z₂)]

Closed forms (Gaussian integrals; Williams 1998 for erf, Cho–Saul 2009 for the arc-cosine kernels):

    identity:  g = μ                                 K = μ₁μ₂ + c
    relu:      g = μ Φ(μ/s) + s φ(μ/s)              (s = √v)
    step:      g = Φ(μ/s)                            sign = 2·step − 1
    erf:       g = erf(μ / √(1 + 2v))

and, for centred pre-activations (μ₁ = μ₂ = 0, ρ = c/(s₁s₂) = cos θ):

    relu:  K = s₁s₂ (sin θ + (π − θ) cos θ) / (2π)            (arc-cosine kernel of order 1)
    step:  K = (π − θ) / (2π)                                  (order 0)
    sign:  K = (2/π) arcsin ρ
    erf:   K = (2/π) arcsin(2c / √((1 + 2v₁)(1 + 2v₂)))       (arcsine kernel)

With non-zero means (a bias, or data with a mean) the products follow from Price's theorem ∂K/∂c = E[σ_a'(z₁)σ_b'(z₂)]
integrated from c = 0, where the pair is independent. With a = μ₁/s₁, b = μ₂/s₂ and the substitution c = s₁s₂ sin φ,

    step:  K = Φ(a)Φ(b) + (1/2π) ∫₀^{π/2−θ} e^{−Q(φ)/2} dφ,                 Q(φ) = (a² + b² − 2ab sin φ) / cos²φ
    relu:  K = g₁g₂ + Φ(a)Φ(b) c + (s₁s₂/2π) ∫₀^{π/2−θ} (cos θ − sin φ) e^{−Q(φ)/2} dφ
    erf:   K = g₁g₂ + (2/π) ∫₀^{ψ} e^{−Q'(φ)} dφ,     ψ = arcsin(2c/√(A₁A₂)),  Q' = Q with a, b = μ₁/√A₁, μ₂/√A₂,
           A_i = 1 + 2v_i

(the step integrand is the density of (z₁, z₂) at the origin). The integrands are smooth on their intervals, so a
fixed Gauss–Legendre rule is exact to rounding. The angle θ between the pre-activations is computed from
atan2(√(v₁v₂ − c²), c), whose derivative stays finite for parallel neurons (a particle paired with itself).

Any other pair (tanh, sigmoid, softplus, mixed kinds) is integrated by tensor Gauss–Hermite quadrature of the order
asked for; `quadrature_error` estimates its error by comparing with twice the order.
"""

import math

import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from . import activations

CLOSED_FORM = ("identity", "relu", "step", "sign", "erf")
_LEGENDRE = np.polynomial.legendre.leggauss(32)


def has_closed_form(activation_a: str, activation_b: str | None = None) -> bool:
    """Whether E[σ_a σ_b] (or E[σ_a] alone) has a closed form here: both of one kind in `CLOSED_FORM`, or one is
    the identity and the other is in `CLOSED_FORM` (Stein's lemma: E[z₁σ(z₂)] = μ₁ g₂ + c E[σ'(z₂)])."""
    if activation_b is None:
        return activation_a in CLOSED_FORM
    pair = {activation_a, activation_b}
    return pair <= set(CLOSED_FORM) and (len(pair) == 1 or "identity" in pair)


def _normal_cdf(x):
    return 0.5 * jsp.erfc(-x / math.sqrt(2))


def _normal_pdf(x):
    return jnp.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


def _std(var):
    # s = √v, kept away from 0 so that a neuron with w = 0 (and no bias) gives 0/0-free standardised means.
    return jnp.sqrt(jnp.maximum(var, jnp.finfo(jnp.result_type(var)).tiny))


def _hermite(order: int):
    x, w = np.polynomial.hermite.hermgauss(order)
    return x * math.sqrt(2), w / math.sqrt(math.pi)  # E[f(ξ)], ξ ~ N(0, 1) ≈ Σ w_q f(x_q)


def gaussian_mean(activation: str, mean, var, *, quadrature: int | None = None):
    """g(μ, v) = E[σ(z)], z ~ N(μ, v): closed form for `CLOSED_FORM`, else Gauss–Hermite of order `quadrature`."""
    s = _std(var)
    if activation == "identity":
        return mean + 0 * var
    if activation == "relu":
        return mean * _normal_cdf(mean / s) + s * _normal_pdf(mean / s)
    if activation == "step":
        return _normal_cdf(mean / s)
    if activation == "sign":
        return 2 * _normal_cdf(mean / s) - 1
    if activation == "erf":
        return jsp.erf(mean / jnp.sqrt(1 + 2 * var))
    if quadrature is None:
        raise ValueError(f"activation {activation!r} has no closed-form Gaussian mean; give a quadrature order.")
    x, w = _hermite(quadrature)
    sigma = activations.get(activation)
    return jnp.sum(jnp.asarray(w) * sigma(mean[..., None] + s[..., None] * jnp.asarray(x)), axis=-1)


def _mean_derivative(activation: str, mean, var):
    """E[σ'(z)], z ~ N(μ, v), for the activations of `CLOSED_FORM`."""
    s = _std(var)
    if activation == "identity":
        return jnp.ones_like(mean + var)
    if activation == "relu":
        return _normal_cdf(mean / s)
    if activation == "step":
        return _normal_pdf(mean / s) / s
    if activation == "sign":
        return 2 * _normal_pdf(mean / s) / s
    A = 1 + 2 * var
    return 2 / math.sqrt(math.pi) * jnp.exp(-(mean**2) / A) / jnp.sqrt(A)  # erf


# Degree p of positive homogeneity, σ(λz) = λ^p σ(z) for λ > 0: for centred pairs K scales as (s²)^p with the
# input covariance s² I, so one kernel serves every isotropic component.
HOMOGENEOUS = {"identity": 1, "relu": 1, "step": 0, "sign": 0}


def _angle(var_a, var_b, cov):
    """θ = arccos(c / √(v₁v₂)) as atan2(√(v₁v₂ − c²), c); zero with a zero derivative for parallel pairs."""
    gap = var_a * var_b - cov**2
    positive = gap > 0
    return jnp.arctan2(jnp.where(positive, jnp.sqrt(jnp.where(positive, gap, 1.0)), 0.0), cov)


def _legendre_integral(integrand, upper):
    """∫₀^upper integrand(φ) dφ by 32-point Gauss–Legendre (integrand smooth on the interval)."""
    x, w = (jnp.asarray(v, jnp.result_type(upper)) for v in _LEGENDRE)
    phi = upper[..., None] * (1 + x) / 2
    return upper / 2 * jnp.sum(w * integrand(phi), axis=-1)


def _orthant_exponent(a, b, phi):
    """Q(φ) = (a² + b² − 2ab sin φ) / cos²φ written as (a − b)²/cos²φ + 2ab/(1 + sin φ): no 0/0 at φ → π/2."""
    a, b = a[..., None], b[..., None]
    return (a - b) ** 2 / jnp.cos(phi) ** 2 + 2 * a * b / (1 + jnp.sin(phi))


def gaussian_product(activation_a: str, activation_b: str, mean_a, var_a, mean_b, var_b, cov, *,
                     centred: bool = False, quadrature: int | None = None):
    """K = E[σ_a(z₁) σ_b(z₂)] for (z₁, z₂) Gaussian with means `mean_a`, `mean_b`, variances `var_a`, `var_b` and
    covariance `cov` (all broadcast together).

    **Arguments:**

    - `activation_a`, `activation_b`: names of `mfpde.activations`.
    - `mean_a`, `var_a`, `mean_b`, `var_b`, `cov`: the moments of the pair.
    - `centred`: the means are known to be zero (the closed forms without Price's integral).
    - `quadrature`: the Gauss–Hermite order for pairs without a closed form (see `has_closed_form`).
    """
    if not has_closed_form(activation_a, activation_b):
        if quadrature is None:
            raise ValueError(f"E[σ_a σ_b] for activations ({activation_a!r}, {activation_b!r}) has no closed form; "
                             "give a quadrature order.")
        return _hermite_product(activation_a, activation_b, mean_a, var_a, mean_b, var_b, cov, quadrature)
    if activation_a != activation_b:  # one is the identity: Stein's lemma
        if activation_a != "identity":
            activation_a, activation_b, mean_a, var_a, mean_b, var_b = activation_b, activation_a, mean_b, var_b, mean_a, var_a
        return mean_a * gaussian_mean(activation_b, mean_b, var_b) + cov * _mean_derivative(activation_b, mean_b, var_b)
    kind = activation_a
    if kind == "identity":
        return mean_a * mean_b + cov
    if kind == "erf":
        A1, A2 = 1 + 2 * var_a, 1 + 2 * var_b
        psi = jnp.arcsin(jnp.clip(2 * cov / jnp.sqrt(A1 * A2), -1, 1))
        if centred:
            return 2 / math.pi * psi
        alpha, beta = mean_a / jnp.sqrt(A1), mean_b / jnp.sqrt(A2)
        alpha, beta, psi = jnp.broadcast_arrays(alpha, beta, psi)
        integral = _legendre_integral(lambda phi: jnp.exp(-_orthant_exponent(alpha, beta, phi)), psi)
        return gaussian_mean("erf", mean_a, var_a) * gaussian_mean("erf", mean_b, var_b) + 2 / math.pi * integral
    if centred:
        # s₁s₂ sin θ = √(v₁v₂ − c²) and s₁s₂ cos θ = c: no trigonometric function beyond θ itself
        gap = var_a * var_b - cov**2
        root = jnp.where(gap > 0, jnp.sqrt(jnp.where(gap > 0, gap, 1.0)), 0.0)
        theta = jnp.arctan2(root, cov)
        if kind == "relu":
            return (root + (math.pi - theta) * cov) / (2 * math.pi)
        if kind == "step":
            return (math.pi - theta) / (2 * math.pi)
        return 1 - 2 * theta / math.pi  # sign
    s1, s2 = _std(var_a), _std(var_b)
    theta = _angle(var_a, var_b, cov)
    a, b = mean_a / s1, mean_b / s2
    a, b, theta = jnp.broadcast_arrays(a, b, theta)
    upper = math.pi / 2 - theta
    density = lambda phi: jnp.exp(-0.5 * _orthant_exponent(a, b, phi)) / (2 * math.pi)  # noqa: E731
    Pa, Pb = _normal_cdf(a), _normal_cdf(b)
    if kind == "relu":
        rho = jnp.cos(theta)[..., None]
        integral = _legendre_integral(lambda phi: (rho - jnp.sin(phi)) * density(phi), upper)
        return (gaussian_mean("relu", mean_a, var_a) * gaussian_mean("relu", mean_b, var_b) + Pa * Pb * cov
                + s1 * s2 * integral)
    orthant = Pa * Pb + _legendre_integral(density, upper)
    if kind == "step":
        return orthant
    # sign = 2·step − 1
    return 4 * orthant - 2 * gaussian_mean("step", mean_a, var_a) - 2 * gaussian_mean("step", mean_b, var_b) + 1


def _hermite_product(activation_a, activation_b, mean_a, var_a, mean_b, var_b, cov, order):
    """Tensor Gauss–Hermite: z₁ = μ₁ + s₁ξ₁, z₂ = μ₂ + s₂(ξ₁ cos θ + ξ₂ sin θ), ξ ~ N(0, I₂)."""
    x, w = (jnp.asarray(v) for v in _hermite(order))
    s1, s2 = _std(var_a), _std(var_b)
    theta = _angle(var_a, var_b, cov)
    sa, sb = activations.get(activation_a), activations.get(activation_b)
    e = lambda v: jnp.asarray(v)[..., None]  # noqa: E731
    first = sa(e(mean_a) + e(s1) * x)  # (..., q)
    inner = e(mean_b)[..., None] + e(s2)[..., None] * (e(jnp.cos(theta))[..., None] * x[:, None] + e(jnp.sin(theta))[..., None] * x)
    second = jnp.sum(w * sb(inner), axis=-1)  # E over ξ₂, (..., q)
    return jnp.sum(w * first * second, axis=-1)
