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

With non-zero means (a bias, or data with a mean) write a = μ₁/s₁, b = μ₂/s₂, ρ = c/(s₁s₂), r = √(1 − ρ²),
h₁ = (a − ρb)/r, h₂ = (b − ρa)/r and Φ₂(a, b; ρ) = P(U < a, V < b) for standard (U, V) with correlation ρ. Then

    step:  K = Φ₂(a, b; ρ)
    relu:  K = s₁s₂ [(ab + ρ) Φ₂ + a φ(b) Φ(h₁) + b φ(a) Φ(h₂) + r φ(a) φ(h₂)]       (Rosenbaum 1961)

with the derivatives of Price's theorem, ∂K/∂c = E[σ'(z₁)σ'(z₂)], written out (`_relu_moment`): no quadrature node
is differentiated. Φ₂ is Genz's algorithm (Statist. Comput. 14, 2004; Drezner–Wesolowsky 1990): a 20-node
Gauss–Legendre rule in arcsin ρ for |ρ| < 0.925, and for |ρ| ≥ 0.925 the expansion about ρ = ±1 whose sharp term
e^{−(a−b)²/2r²} is integrated in closed form, double precision for every a, b, ρ. The erf pair keeps Price's integral
in the angle φ, c = s₁s₂ sin φ from 0 (the pair independent) to ψ = arcsin(2c/√(A₁A₂)) < π/2:

    erf:   K = g₁g₂ + (2/π) ∫₀^{ψ} e^{−Q(φ)} dφ,   Q(φ) = (α² + β² − 2αβ sin φ) / cos²φ,  α, β = μ₁/√A₁, μ₂/√A₂,
           A_i = 1 + 2v_i

whose integrand is smooth on the interval, so a fixed Gauss–Legendre rule is exact to rounding. r is computed from
v₁v₂ − c², accurate for nearly parallel neurons; a pair with r below 4√ε (a particle with itself, up to rounding)
takes the parallel limits in closed form, Φ₂(a, b; ±1) = Φ(min(a, b)) and max(Φ(a) − Φ(−b), 0).

Any other pair (tanh, sigmoid, softplus, mixed kinds) is integrated by tensor Gauss–Hermite quadrature of the order
asked for; `quadrature_error` estimates its error by comparing with twice the order.
"""

import math

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from . import activations

CLOSED_FORM = ("identity", "relu", "step", "sign", "erf")
_LEGENDRE = np.polynomial.legendre.leggauss(32)
_HIGH_CORRELATION = 0.925  # Genz's switch from the arcsin ρ rule to the expansion about ρ = ±1


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


def _correlation(var_a, var_b, cov):
    """ρ = c/(s₁s₂) and r = √(1 − ρ²), r from v₁v₂ − c², accurate for nearly parallel pairs. An r below 4√ε is the
    rounding of v₁v₂ − c² for a parallel pair (a particle with itself): such a pair gets r = 0 and ρ = ±1 exactly,
    the parallel limit (with a zero derivative, as ρ has at its maximum along any motion of the pair)."""
    scale = _std(var_a) * _std(var_b)
    gap = var_a * var_b - cov**2
    positive = gap > 0
    r = jnp.minimum(jnp.where(positive, jnp.sqrt(jnp.where(positive, gap, 1.0)), 0.0) / scale, 1.0)
    parallel = r <= 4 * math.sqrt(jnp.finfo(jnp.result_type(r)).eps)
    rho = jnp.where(parallel, jnp.where(cov >= 0, 1.0, -1.0), jnp.clip(cov / scale, -1.0, 1.0))
    return rho, jnp.where(parallel, 0.0, r)


def _sin(x):
    """sin x by its Taylor polynomial to x¹⁷, exact to rounding for |x| ≤ 1.2 (Genz's rule needs |x| ≤ arcsin 0.925
    = 1.18): a third of the time of `jnp.sin` on a CPU, where the sines were most of the cost of Φ₂."""
    x2 = x * x
    s = 1.0
    for n in range(17, 1, -2):
        s = 1 - x2 * (1 / (n * (n - 1))) * s
    return x * s


def _ratio(numerator, r):
    """numerator / r, with its limit ±∞ (and 0 for 0/0) at r = 0."""
    positive = r > 0
    limit = jnp.where(numerator == 0, 0.0, jnp.sign(numerator) * jnp.inf)
    return jnp.where(positive, numerator / jnp.where(positive, r, 1.0), limit)


# Genz's 20-node Gauss–Legendre rule on [0, 2]. The node sums below are `fori_loop`s of fused elementwise kernels (5
# nodes per iteration where it is hot): 4× faster on a CPU than the same sum over a trailing axis of nodes.
_GENZ = np.polynomial.legendre.leggauss(20)


def _genz_rule(dtype):
    x, w = _GENZ
    return jnp.asarray(1 + x, dtype), jnp.asarray(w, dtype)


def _bvn_moderate(a, b, rho):
    """Φ₂ for |ρ| < 0.925: Φ(a)Φ(b) + (1/2π) ∫₀^{arcsin ρ} exp(−(a² + b² − 2ab sin φ)/(2cos²φ)) dφ."""
    half = jnp.arcsin(jnp.clip(rho, -_HIGH_CORRELATION, _HIGH_CORRELATION)) / 2
    ab, hs = a * b, (a**2 + b**2) / 2
    x, w = _genz_rule(ab.dtype)

    def node(i, total):
        sn = _sin(half * x[i])
        return total + w[i] * jnp.exp((sn * ab - hs) / (1 - sn**2))

    total = jax.lax.fori_loop(0, 20, node, jnp.zeros_like(ab), unroll=5)
    return half * total / (2 * math.pi) + _normal_cdf(a) * _normal_cdf(b)


def _bvn_high(a, b, rho, r):
    """Φ₂ for |ρ| ≥ 0.925 and r > 0: Genz's expansion about ρ = ±1 (his BVNU with h, k = −a, −b)."""
    h = -a
    k = jnp.where(rho < 0, b, -b)
    hk = h * k
    r = jnp.where(r > 0, r, 1.0)  # pairs with r = 0 take the exact limit in `_bivariate_normal_cdf`
    r2, bs = r**2, (h - k) ** 2
    c, d = (4 - hk) / 8, (12 - hk) / 80
    exponent = -(bs / r2 + hk) / 2
    bvn = jnp.where(exponent > -100, r * jnp.exp(jnp.maximum(exponent, -100))
                    * (1 - c * (bs - r2) * (1 - d * bs) / 3 + c * d * r2**2), 0.0)
    root = jnp.sqrt(bs)
    tail = jnp.exp(-jnp.minimum(hk, 100) / 2) * math.sqrt(2 * math.pi) * _normal_cdf(-root / r) * root
    bvn = jnp.where(hk > -100, bvn - tail * (1 - c * bs * (1 - d * bs) / 3), bvn)
    x, w = _genz_rule(bs.dtype)

    def node(i, total):
        xs = (r / 2 * x[i]) ** 2
        exponent = -(bs / xs + hk) / 2
        rs = jnp.sqrt(1 - xs)
        ep = jnp.exp(-(hk / 2) * xs / (1 + rs) ** 2) / rs
        term = jnp.exp(jnp.maximum(exponent, -100)) * (1 + c * xs * (1 + 5 * d * xs) - ep)
        return total + w[i] * jnp.where(exponent > -100, term, 0.0)

    total = jax.lax.fori_loop(0, 20, node, jnp.zeros_like(bs))
    bvn = (r / 2 * total - bvn) / (2 * math.pi)
    below = jnp.where(h < 0, _normal_cdf(k) - _normal_cdf(h), _normal_cdf(-h) - _normal_cdf(-k))
    return jnp.where(rho > 0, bvn + _normal_cdf(-jnp.maximum(h, k)), jnp.where(h >= k, -bvn, below - bvn))


def _no_pair_near_one(a, b, rho, r):
    return jnp.zeros_like(a)


@jax.jit  # one compiled program per shape also when called eagerly (a `lax.cond` would otherwise recompile per call)
def _bvn(a, b, rho, r):
    a, b, rho, r = jnp.broadcast_arrays(a, b, rho, r)
    high = (jnp.abs(rho) >= _HIGH_CORRELATION) & (r > 0)
    # Most pairs of a block are far from parallel: the expansion about ρ = ±1 is computed only for blocks that hold one.
    near_one = jax.lax.cond(jnp.any(high), _bvn_high, _no_pair_near_one, a, b, rho, r)
    value = jnp.where(high, near_one, _bvn_moderate(a, b, rho))
    parallel = jnp.where(rho > 0, _normal_cdf(jnp.minimum(a, b)), jnp.maximum(_normal_cdf(a) - _normal_cdf(-b), 0.0))
    return jnp.where(r > 0, value, parallel)


@jax.custom_jvp
def _bivariate_normal_cdf(a, b, rho, r):
    """Φ₂(a, b; ρ) = P(U < a, V < b), (U, V) standard normal with correlation ρ and r = √(1 − ρ²) given apart for its
    accuracy near |ρ| = 1 (its tangent is taken to follow ρ's). Genz's algorithm; at r = 0 the exact limits."""
    return _bvn(a, b, rho, r)


@_bivariate_normal_cdf.defjvp
def _bivariate_normal_cdf_jvp(primals, tangents):
    a, b, rho, r = primals
    da, db, drho, _ = tangents
    h1, h2 = _ratio(a - rho * b, r), _ratio(b - rho * a, r)
    density = jnp.where(r > 0, _normal_pdf(a) * _normal_pdf(h2) / jnp.where(r > 0, r, 1.0), 0.0)  # φ₂(a, b; ρ)
    return (_bivariate_normal_cdf(a, b, rho, r),
            _normal_pdf(a) * _normal_cdf(h2) * da + _normal_pdf(b) * _normal_cdf(h1) * db + density * drho)


def _relu_terms(a, b, rho, r):
    """E[(a + U)⁺(b + V)⁺] = (ab + ρ)Φ₂ + aφ(b)Φ(h₁) + bφ(a)Φ(h₂) + rφ(a)φ(h₂), h₁, h₂ = (a − ρb)/r, (b − ρa)/r,
    and its derivatives ∂/∂a = E[1{U > −a}(b + V)⁺] = bΦ₂ + φ(b)Φ(h₁) + ρφ(a)Φ(h₂), ∂/∂b alike, ∂/∂ρ = Φ₂ (Price)."""
    h1, h2 = _ratio(a - rho * b, r), _ratio(b - rho * a, r)
    pa, pb, Ph1, Ph2 = _normal_pdf(a), _normal_pdf(b), _normal_cdf(h1), _normal_cdf(h2)
    orthant = _bivariate_normal_cdf(a, b, rho, r)
    value = (a * b + rho) * orthant + a * pb * Ph1 + b * pa * Ph2 + r * pa * _normal_pdf(h2)
    return value, b * orthant + pb * Ph1 + rho * pa * Ph2, a * orthant + pa * Ph2 + rho * pb * Ph1, orthant


@jax.custom_jvp
def _relu_moment(a, b, rho, r):
    """E[(a + U)⁺(b + V)⁺] for standard (U, V) with correlation ρ, r = √(1 − ρ²) (see `_relu_terms`)."""
    return _relu_terms(a, b, rho, r)[0]


@_relu_moment.defjvp
def _relu_moment_jvp(primals, tangents):
    da, db, drho, _ = tangents
    value, d_a, d_b, orthant = _relu_terms(*primals)
    return value, d_a * da + d_b * db + orthant * drho


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
    rho, r = _correlation(var_a, var_b, cov)
    a, b = mean_a / s1, mean_b / s2
    if kind == "relu":
        return s1 * s2 * _relu_moment(a, b, rho, r)
    orthant = _bivariate_normal_cdf(a, b, rho, r)
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
