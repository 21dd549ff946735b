"""Finite-volume operators of the grid solver: Scharfetter–Gummel fluxes, the diffusion part, and its exact solve.

All rates act on cell *masses* m (an array of shape `cells`), with the cell volume V = Π h_a folded in: the mass
flowing through the face k+½ along axis a per unit time is F = J·(V/h_a) with J the flux density of docs/algorithms/grid.md, so

    F_{k+½} = (τ/h_a²) [ B(ΔΦ/τ) m_k − B(−ΔΦ/τ) m_{k+1} ],   ṁ_k = −Σ_a (F_{k+½} − F_{k−½}),

with F = 0 on walls and the last face wrapping round on periodic axes. The sum of ṁ telescopes to zero (mass is
conserved to rounding), and m_k ∝ exp(−Φ_k/τ) makes every F vanish (B(−z) = e^z B(z)), so the Gibbs state is
exactly stationary.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

_SERIES = 1e-5  # below this |z|, B(z) by its Taylor series (relative error < 1e-21)


def bernoulli(z: Array) -> Array:
    """B(z) = z / (e^z − 1), accurate for all z: the series 1 − z/2 + z²/12 near 0, z·e^{−z} → 0 for z → +∞
    (e^z overflows to inf, giving exactly 0), −z for z → −∞."""
    small = jnp.abs(z) < _SERIES
    safe = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 - z / 2 + z * z / 12, safe / jnp.expm1(safe))


def drift_weights(dphi: Array, tau: Array) -> tuple[Array, Array]:
    """(τ B(ΔΦ/τ), τ B(−ΔΦ/τ)): the weights of m_k and m_{k+1} in the face flux (times h²).

    For τ = 0 their limit, the upwind weights (max(−ΔΦ, 0), max(ΔΦ, 0)): mass moves down the potential with
    velocity −ΔΦ/h, taken from the upwind cell.
    """
    positive = tau > 0
    safe_tau = jnp.where(positive, tau, 1.0)
    z = dphi / safe_tau
    forward = jnp.where(positive, safe_tau * bernoulli(z), jnp.maximum(-dphi, 0.0))
    backward = jnp.where(positive, safe_tau * bernoulli(-z), jnp.maximum(dphi, 0.0))
    return forward, backward


def _next(x: Array, axis: int, periodic: bool) -> tuple[Array, Array]:
    """(x_k, x_{k+1}) over the faces along `axis`: n − 1 interior faces, or n faces on a periodic axis."""
    if periodic:
        return x, jnp.roll(x, -1, axis=axis)
    n = x.shape[axis]
    return jax.lax.slice_in_dim(x, 0, n - 1, axis=axis), jax.lax.slice_in_dim(x, 1, n, axis=axis)


def _divergence(flux: Array, axis: int, periodic: bool) -> Array:
    """−(F_{k+½} − F_{k−½}) for the face fluxes `flux` along `axis` (zero on walls)."""
    if periodic:
        return jnp.roll(flux, 1, axis=axis) - flux
    pad = [(0, 0)] * flux.ndim
    pad[axis] = (1, 1)
    padded = jnp.pad(flux, pad)
    n = padded.shape[axis]
    return jax.lax.slice_in_dim(padded, 0, n - 1, axis=axis) - jax.lax.slice_in_dim(padded, 1, n, axis=axis)


def sg_rate(m: Array, phi: Array, tau: Array, spacing: tuple[float, ...], periodic: tuple[bool, ...],
            *, subtract_diffusion: bool = False) -> Array:
    """ṁ of the Scharfetter–Gummel scheme; with `subtract_diffusion`, ṁ minus the pure diffusion τΔ_h m (the
    explicit part of the IMEX split: B − 1 in place of B, conservative in the same flux form)."""
    rate = jnp.zeros_like(m)
    for axis, (h, per) in enumerate(zip(spacing, periodic)):
        if m.shape[axis] == 1:
            continue
        m0, m1 = _next(m, axis, per)
        p0, p1 = _next(phi, axis, per)
        forward, backward = drift_weights(p1 - p0, tau)
        if subtract_diffusion:
            forward, backward = forward - tau, backward - tau
        rate = rate + _divergence((forward * m0 - backward * m1) / (h * h), axis, per)
    return rate


def diffusion_rate(m: Array, tau: Array, spacing: tuple[float, ...], periodic: tuple[bool, ...]) -> Array:
    """τ Δ_h m with zero-flux walls (periodic where asked): the stiff, linear part of the scheme."""
    rate = jnp.zeros_like(m)
    for axis, (h, per) in enumerate(zip(spacing, periodic)):
        if m.shape[axis] == 1:
            continue
        m0, m1 = _next(m, axis, per)
        rate = rate + _divergence(tau * (m0 - m1) / (h * h), axis, per)
    return rate


# Discrete cosine transform (type II, unnormalised: X_k = Σ_i x_i cos(πk(2i+1)/(2n))) along one axis, by one real
# FFT of length n (Makhoul's reordering): 1.4-2.6x faster than jax.scipy.fft.dct on CPU (benchmarks/dct.py), so kept.


def _dct(x: Array, axis: int) -> Array:
    x = jnp.moveaxis(x, axis, -1)
    n = x.shape[-1]
    v = jnp.concatenate([x[..., ::2], x[..., 1::2][..., ::-1]], axis=-1)
    half = jnp.fft.rfft(v, axis=-1)
    full = jnp.concatenate([half, jnp.conj(half[..., 1 : (n + 1) // 2][..., ::-1])], axis=-1)
    twiddle = np.exp(-0.5j * np.pi * np.arange(n) / n)
    return jnp.moveaxis(jnp.real(full * twiddle.astype(full.dtype)), -1, axis)


def _idct(X: Array, axis: int) -> Array:
    """The inverse of `_dct` along `axis`."""
    X = jnp.moveaxis(X, axis, -1)
    n = X.shape[-1]
    reflected = jnp.concatenate([jnp.zeros_like(X[..., :1]), X[..., 1:][..., ::-1]], axis=-1)
    twiddle = np.exp(0.5j * np.pi * np.arange(n) / n)
    spectrum = jax.lax.complex(X, -reflected) * twiddle.astype(jnp.complex128 if X.dtype == jnp.float64 else jnp.complex64)
    v = jnp.fft.irfft(spectrum[..., : n // 2 + 1], n=n, axis=-1)
    even, odd = v[..., : (n + 1) // 2], v[..., (n + 1) // 2 :][..., ::-1]
    if n % 2:
        odd = jnp.pad(odd, [(0, 0)] * (odd.ndim - 1) + [(0, 1)])
    x = jnp.stack([even, odd], axis=-1).reshape(*v.shape[:-1], -1)[..., :n]
    return jnp.moveaxis(x, -1, axis)


class SpectralDiffusion(eqx.Module):
    """The eigen-decomposition of the diffusion operator L = τΔ_h (zero-flux walls: cosine modes; periodic axes:
    Fourier modes). `ratio` = λ_k / λ_max ∈ [0, 1] (independent of τ), `probe` an eigenvector of λ_max."""

    cells: tuple[int, ...] = eqx.field(static=True)
    periodic: tuple[bool, ...] = eqx.field(static=True)
    ratio: Float[Array, "..."]
    probe: Float[Array, "..."]

    def __init__(self, cells, spacing, periodic, dtype):
        self.cells, self.periodic = tuple(cells), tuple(periodic)
        eig = np.zeros(self.cells)
        top = []
        for axis, (n, h, per) in enumerate(zip(cells, spacing, periodic)):
            k = np.arange(n)
            lam = 4 / h**2 * np.sin(np.pi * k / n if per else np.pi * k / (2 * n)) ** 2
            top.append(int(np.argmax(lam)))
            shape = [1] * len(cells)
            shape[axis] = n
            eig = eig + lam.reshape(shape)
        largest = eig.max()
        self.ratio = jnp.asarray(eig / largest if largest > 0 else eig, dtype)
        probe = np.ones(())
        for n, per, k in zip(cells, periodic, top):
            i = np.arange(n)
            mode = np.cos(2 * np.pi * k * i / n) if per else np.cos(np.pi * k * (2 * i + 1) / (2 * n))
            probe = np.multiply.outer(probe, mode)
        self.probe = jnp.asarray(probe, dtype)

    def transform(self, x: Array) -> Array:
        """To the eigenbasis: cosine transforms along walled axes, then Fourier transforms along periodic ones."""
        for axis, (n, per) in enumerate(zip(self.cells, self.periodic)):
            if n > 1 and not per:
                x = _dct(x, axis)
        for axis, (n, per) in enumerate(zip(self.cells, self.periodic)):
            if n > 1 and per:
                x = jnp.fft.fft(x, axis=axis)
        return x

    def inverse(self, X: Array) -> Array:
        for axis, (n, per) in enumerate(zip(self.cells, self.periodic)):
            if n > 1 and per:
                X = jnp.fft.ifft(X, axis=axis)
        X = jnp.real(X) if jnp.iscomplexobj(X) else X
        for axis, (n, per) in enumerate(zip(self.cells, self.periodic)):
            if n > 1 and not per:
                X = _idct(X, axis)
        return X

    def solve(self, rhs: Array, mu: Array) -> Array:
        """x with (I − cL) x = rhs, given μ = 1 − c·λ_max (so 1 − cλ_k = 1 − (1 − μ)·ratio_k)."""
        denominator = (1 - (1 - mu) * self.ratio).astype(rhs.dtype)
        spectrum = self.transform(rhs)
        if jnp.iscomplexobj(spectrum):
            spectrum = spectrum / denominator.astype(spectrum.dtype)
        else:
            spectrum = spectrum / denominator
        return self.inverse(spectrum).astype(rhs.dtype)


class _SpectralState(eqx.Module):
    step: Array
    result: optx.RESULTS


class SpectralRootFinder(optx.AbstractRootFinder):
    """Solves the implicit stage equations of an IMEX Runge–Kutta method whose implicit term is the diffusion
    L = τΔ_h, exactly and in one step, by the discrete cosine (and Fourier) transform.

    Whatever form the stage equation takes (diffrax writes it for the stage value f or the increment k), it is
    affine, g(x) = (I − cL)x − b with an unknown stage coefficient c. One evaluation on the top eigenvector e of L
    reads off μ = 1 − cλ_max = ⟨g(x + e) − g(x), e⟩/⟨e, e⟩; then x − (I − cL)⁻¹ g(x) is the root, found in
    O(K log K) without forming any matrix. The residual is checked afterwards: a stage equation that is not of this
    form (this root finder given to another problem) fails with `nonlinear_divergence` instead of returning a wrong
    stage.
    """

    diffusion: SpectralDiffusion
    rtol: float = 1e-8
    atol: float = 0.0
    norm: object = eqx.field(static=True, default=optx.max_norm)

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        if "init_state" in options and isinstance(options["init_state"], _SpectralState):
            return options["init_state"]
        return _SpectralState(jnp.array(0), optx.RESULTS.successful)

    def step(self, fn, y, args, options, state, tags):
        gy, aux = fn(y, args)
        e = self.diffusion.probe.astype(y.dtype)
        ge, _ = fn(y + e, args)
        mu = jnp.vdot(ge - gy, e) / jnp.vdot(e, e)
        new_y = y - self.diffusion.solve(gy, mu)
        residual, _ = fn(new_y, args)
        # An exact solve leaves rounding: a few ulps of the terms of g, |x| and cλ_max|x| ≈ |1 − μ||x|.
        scale = (1 + jnp.abs(1 - mu)) * jnp.max(jnp.abs(new_y)) + jnp.max(jnp.abs(gy))
        ok = jnp.all(jnp.isfinite(new_y)) & (jnp.max(jnp.abs(residual)) <= 1e3 * jnp.finfo(y.dtype).eps * scale + self.atol)
        result = optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.nonlinear_divergence)
        return new_y, _SpectralState(state.step + 1, result), aux

    def terminate(self, fn, y, args, options, state, tags):
        return state.step >= 1, state.result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}

