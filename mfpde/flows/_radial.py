import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr
from jaxtyping import Array, Float

from .. import activations
from .._checks import as_float_array
from .._population import Population
from ._base import AbstractFlow

_SMOOTH_QUADRATURE = 160  # Gauss–Hermite nodes for the coefficients of a smooth σ: exact to rounding up to order 64


def _float(argument: str, *, nonnegative: bool = False):
    return lambda value: as_float_array(value, argument, "RadialTwoLayer", nonnegative=nonnegative)


def sphere_moments(dim: int, order: int) -> np.ndarray:
    """μ_n = E[cⁿ], n = 0..order, for the cosine c = e·e′ of two independent uniform directions of R^dim: 0 for odd
    n, Π_{i<n/2} (2i + 1)/(dim + 2i) for even n (c² is Beta(½, (dim − 1)/2))."""
    mu = np.zeros(order + 1)
    mu[0] = 1.0
    for n in range(2, order + 1, 2):
        mu[n] = mu[n - 2] * (n - 1) / (dim + n - 2)
    return mu


def _hermite(x, order: int):
    """ψ_n(x) = He_n(x)/√(n!), n = 0..order, the orthonormal probabilists' Hermite polynomials, stacked last:
    ψ_{n+1} = (x ψ_n − √n ψ_{n−1})/√(n + 1), in a `lax.scan` for arrays (one compiled step for any order)."""
    if isinstance(x, np.ndarray):
        out = [np.ones_like(x), x]
        for n in range(1, order):
            out.append((x * out[n] - math.sqrt(n) * out[n - 1]) / math.sqrt(n + 1))
        return np.stack(out[: order + 1], axis=-1)
    if order == 0:
        return jnp.ones_like(x)[..., None]

    def step(carry, n):
        previous, current = carry
        following = (x * current - jnp.sqrt(n) * previous) / jnp.sqrt(n + 1)
        return (current, following), following

    ns = jnp.arange(1, order, dtype=x.dtype)
    _, rest = jax.lax.scan(step, (jnp.ones_like(x), x), ns)
    return jnp.concatenate([jnp.ones_like(x)[..., None], x[..., None], jnp.moveaxis(rest, 0, -1)], axis=-1)


def hermite_coefficients(activation: str, s, b, order: int):
    """ĥ_n = E[σ(sZ + b) ψ_n(Z)] = sⁿ E[σ⁽ⁿ⁾(sZ + b)]/√(n!), n = 0..order, Z ~ N(0, 1), for scales s ≥ 0 and
    offsets b of one shape; the coefficients stacked last. By Mehler's formula two pre-activations sZ₁ + b, s′Z₂ + b′
    with corr(Z₁, Z₂) = c have E[σσ′] = Σ_n ĥ_n ĥ′_n cⁿ.

    Kinked σ in closed form, from E[δ⁽ᵏ⁾(sZ + b)] = s^{−k−1} He_k(−b/s) φ(b/s), with x = b/s:

    - relu: ĥ₀ = bΦ(x) + sφ(x), ĥ₁ = sΦ(x), ĥ_n = (−1)ⁿ s ψ_{n−2}(x) φ(x)/√(n(n − 1)) for n ≥ 2;
    - step: ĥ₀ = Φ(x), ĥ_n = (−1)^{n−1} ψ_{n−1}(x) φ(x)/√n for n ≥ 1; sign = 2 step − 1; identity: ĥ₀ = b, ĥ₁ = s.

    Smooth σ (tanh, sigmoid, softplus, erf) by Gauss–Hermite quadrature on `_SMOOTH_QUADRATURE` nodes. At s = 0 the
    pre-activation is the constant b: ĥ₀ = σ(b), the others 0. A negative s is taken as |s|: Z and −Z have one law,
    so ĥ_n(−s) = (−1)ⁿ ĥ_n(|s|), the same for the even orders, the only ones an isotropic measure sees."""
    s, b = jnp.broadcast_arrays(jnp.abs(s), b)
    positive = s > 0
    safe = jnp.where(positive, s, 1.0)
    x = b / safe
    n = np.arange(order + 1)
    if activation in ("relu", "step", "sign"):
        pdf = jnp.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
        lag = 2 if activation == "relu" else 1  # ĥ_n holds ψ_{n−lag}
        psi = _hermite(x, max(order - lag, 0))[..., : max(order + 1 - lag, 0)]
        shifted = jnp.concatenate([jnp.zeros((*x.shape, min(lag, order + 1)), x.dtype), psi], axis=-1)
        if activation == "relu":
            scale = np.where(n >= 2, (-1.0) ** n / np.sqrt(np.maximum(n * (n - 1), 1)), 0.0)
            h = (safe * pdf)[..., None] * shifted * scale
            h = h.at[..., 0].set(b * ndtr(x) + safe * pdf)
            if order >= 1:
                h = h.at[..., 1].set(safe * ndtr(x))
            at_zero = jnp.maximum(b, 0.0)
        else:
            scale = np.where(n >= 1, (-1.0) ** (n - 1) / np.sqrt(np.maximum(n, 1)), 0.0)
            h = (pdf[..., None] * shifted * scale).at[..., 0].set(ndtr(x))
            at_zero = (b > 0).astype(b.dtype)
            if activation == "sign":
                h, at_zero = (2 * h).at[..., 0].add(-1.0), 2 * at_zero - 1
    elif activation == "identity":
        h = jnp.zeros((*x.shape, order + 1), x.dtype).at[..., 0].set(b)
        if order >= 1:
            h = h.at[..., 1].set(s)
        at_zero = b
    else:
        sigma = activations.get(activation)
        nodes, weights = np.polynomial.hermite_e.hermegauss(_SMOOTH_QUADRATURE)
        basis = _hermite(nodes, order) * (weights / math.sqrt(2 * math.pi))[:, None]  # (nodes, order + 1)
        h = sigma(s[..., None] * nodes + b[..., None]) @ jnp.asarray(basis, x.dtype)
        at_zero = sigma(b)
    constant = jnp.zeros((*x.shape, order + 1), x.dtype).at[..., 0].set(at_zero)
    return jnp.where(positive[..., None], h, constant)


class RadialTwoLayer(AbstractFlow):
    """The two-layer flow of `TwoLayer` (squared loss) on an isotropic, centred population, reduced to the radius
    r = |w| of the input weights (docs/flows/population.md, "Radial reduction").

    When x | c ~ N(0, s_c² I_d) with constant labels y_c (e.g. `datasets.isotropic_gaussians`) and the initial
    measure is rotation invariant in w, the measure stays so, and its image ρ̃ on θ̃ = (u, r[, b]) moves by the same
    kind of flow in 1 to 3 dimensions, whatever d, with the energy of an isotropic measure,

        R(ρ̃) = R₀ − α Σ_c π_c Σ_j m_j (u_j · y_c) ĥ_{0,c}(r_j, b_j)
               + ½ α² Σ_c π_c Σ_{n ≤ terms} μ_n(d) |Σ_j m_j u_j ĥ_{n,c}(r_j, b_j)|² + ½ Σ_j m_j λ (|u_j|² + r_j² + b_j²),

    where ĥ_{n,c}(r, b) are the Hermite coefficients of σ(s_c r Z + b) (`hermite_coefficients`) and μ_n(d) = E[cⁿ]
    the moments of the cosine of two uniform directions (`sphere_moments`): Mehler's formula averaged over the angle
    between two neurons. The pairwise interaction is a sum of squares, O(N·terms). Its truncation after the order
    `terms` is reported as `expansion_error` (the loss against twice as many terms); μ_n(d) ≈ (n − 1)!!/d^{n/2}, so
    a few terms suffice for large d.

    For τ > 0 the energy also carries −τ(d − 1) Σ_j m_j log r_j, the Jacobian r^{d−1} of polar coordinates: particles
    then follow the radial part dr = (−∂_r Φ + τ(d − 1)/r) dt + √(2τ) dB of the full Langevin dynamics, and the
    Gibbs states are the images of the full ones. `risk` includes that term; `loss` is the population loss.

    Solve it with `Particles` (N reduced particles, each standing for a uniform shell of neurons) or `Grid` over `r`
    (and `u`, `b`), from e.g. `measures.Product(u=measures.Gaussian(...), r=measures.GaussianRadius(d, std))`, the
    image of `measures.Gaussian` in the full flow. The energy is even in each r_j (a particle at −r stands for the
    shell at r), and a grid's zero-flux wall at r = 0 is the symmetric flux of that even extension. A positively
    homogeneous network without bias (relu, step) has a kink at r = 0, where neurons that shrink to w = 0 stay: its
    particles chatter there, taking many small steps; give neurons a bias to avoid it.

    **Arguments:**

    - `activation`, `alpha`, `bias`, `train_output`, `l2`, `l2_output`, `temperature`: as for `TwoLayer` (`l2` on
      |w|² = r²).
    - `terms`: the highest order n of the angular expansion (default 32).

    Coordinate groups: `u` (k), `r` (1), and `b` (1) when `bias`.
    """

    activation: str = eqx.field(static=True, default="relu")
    alpha: Float[Array, ""] = eqx.field(converter=_float("alpha"), default=1.0)
    bias: bool = eqx.field(static=True, default=False)
    train_output: bool = eqx.field(static=True, default=True)
    l2: Float[Array, ""] = eqx.field(converter=_float("l2", nonnegative=True), default=0.0)
    l2_output: Float[Array, ""] | None = eqx.field(
        converter=lambda v: None if v is None else as_float_array(v, "l2_output", "RadialTwoLayer", nonnegative=True),
        default=None,
    )
    temperature: Float[Array, ""] = eqx.field(converter=_float("temperature", nonnegative=True), default=0.0)
    terms: int = eqx.field(static=True, default=32)

    def __check_init__(self):
        activations.get(self.activation)
        if isinstance(self.terms, bool) or not isinstance(self.terms, int) or self.terms < 0:
            raise ValueError(f"`terms` of RadialTwoLayer must be a non-negative integer, got {self.terms!r}.")
        for name in ("alpha", "l2", "temperature"):
            if jnp.ndim(getattr(self, name)) != 0:
                raise ValueError(f"`{name}` of RadialTwoLayer must be a scalar, got shape {jnp.shape(getattr(self, name))}.")

    def check_data(self, data):
        if not isinstance(data, Population):
            raise TypeError(f"`data` of RadialTwoLayer must be an isotropic mfpde.Population (e.g. "
                            f"datasets.isotropic_gaussians), got {type(data).__name__}.")
        if not data.centred or data.scales is None or data.teacher is not None:
            raise ValueError("`data` of RadialTwoLayer must be rotation invariant: centred components with covariances "
                             "s_c² I and no teacher (its directions break the symmetry); solve flows.TwoLayer instead.")

    def groups(self, data) -> dict[str, int]:
        self.check_data(data)
        return {"u": data.k, "r": 1, **({"b": 1} if self.bias else {})}

    def trainable(self, data) -> np.ndarray:
        mask = np.ones(sum(self.groups(data).values()), dtype=bool)
        mask[: data.k] = self.train_output
        return mask

    def loss_value(self, theta, masses, data: Population, *, terms: int | None = None):
        """The population loss ½ E|f(x) − y|² of the isotropic measure whose image is Σ_j m_j δ_{θ̃_j}, expanded to
        the order `terms` (default: the flow's)."""
        terms = self.terms if terms is None else terms
        k = data.k
        u, r = theta[:, :k], theta[:, k]
        b = theta[:, k + 1] if self.bias else jnp.zeros_like(r)
        a = self.alpha * masses[:, None] * u  # α m_j u_j
        mu = jnp.asarray(sphere_moments(data.d, terms), theta.dtype)
        scales = jnp.asarray(data.scales, theta.dtype)
        h = hermite_coefficients(self.activation, scales[:, None] * r, b, terms)  # (C, N, terms + 1)
        projection = jnp.einsum("jk,cjn->ckn", a, h)  # Σ_j α m_j u_j ĥ_{n,c}(r_j, b_j)
        y = data.labels
        per_component = (0.5 * jnp.sum(y**2, axis=1) - jnp.sum(y * projection[:, :, 0], axis=1)
                         + 0.5 * jnp.sum(mu * jnp.sum(projection**2, axis=1), axis=1))
        return 0.5 * k * data.noise**2 + jnp.sum(data.weights * per_component)

    def energy(self, theta, masses, data, *, chunk_size=None):
        k = data.k
        lam = jnp.full(theta.shape[1], self.l2, theta.dtype)
        if self.l2_output is not None:
            lam = lam.at[:k].set(self.l2_output)
        lam = lam * jnp.asarray(self.trainable(data), theta.dtype)
        r = theta[:, k]
        polar = (data.d - 1) * jnp.sum(masses * jnp.log(jnp.maximum(r, jnp.finfo(r.dtype).tiny)))
        return (self.loss_value(theta, masses, data) + 0.5 * jnp.sum(masses[:, None] * lam * theta**2)
                - jnp.where(self.temperature > 0, self.temperature * polar, 0.0))

    def observables(self, theta, masses, data, *, chunk_size=None):
        loss = self.loss_value(theta, masses, data)
        return {"loss": loss, "expansion_error": jnp.abs(self.loss_value(theta, masses, data, terms=2 * self.terms) - loss)}

    def describe(self, data):
        return {
            "loss": ((), {"long_name": "population loss ½ E|f(x) − y|² of the rotation-invariant network", "units": "1"}),
            "expansion_error": ((), {"long_name": f"estimated truncation error of the loss's angular expansion (order "
                                                  f"{self.terms} against {2 * self.terms})", "units": "1"}),
        }
