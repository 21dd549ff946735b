"""The radial reduction of the two-layer flow on an isotropic population (`flows.RadialTwoLayer`): its Hermite
coefficients against Gaussian integrals done by scipy, its energy against the closed-form kernels integrated over
the angle between two neurons, its particles against the full network's started from the same radii, its grid
against its particles, its Gibbs state against the chi law, and bad input."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

import mfpde
from mfpde import datasets, flows, measures
from mfpde._gaussian import gaussian_mean, gaussian_product
from mfpde.flows._radial import hermite_coefficients
from solvers import GibbsFixedPoint, Grid, Particles

_SIGMA = {"relu": lambda z: np.maximum(z, 0.0), "step": lambda z: (z > 0) * 1.0, "sign": np.sign,
          "identity": lambda z: z, "tanh": np.tanh, "erf": scipy.special.erf, "softplus": lambda z: np.logaddexp(0, z),
          "sigmoid": scipy.special.expit}


@pytest.mark.parametrize("activation", sorted(_SIGMA))
def test_hermite_coefficients_are_gaussian_integrals(activation):
    """ĥ_n(s, b) = E[σ(sZ + b) He_n(Z)]/√(n!) by adaptive quadrature (split at a kink), for n ≤ 10, and at s = 0."""
    sigma, order = _SIGMA[activation], 10
    for s, b in ((1.3, 0.4), (0.7, -1.1)):
        h = np.asarray(hermite_coefficients(activation, jnp.asarray(s), jnp.asarray(b), order))
        for n in range(order + 1):
            integrand = lambda z: (sigma(s * z + b) * scipy.special.eval_hermitenorm(n, z)  # noqa: E731
                                   * scipy.stats.norm.pdf(z) / np.sqrt(scipy.special.factorial(n)))
            expected = scipy.integrate.quad(integrand, -30, 30, points=[-b / s], limit=400, epsabs=1e-13)[0]
            np.testing.assert_allclose(h[n], expected, atol=1e-11, err_msg=f"n = {n}")
    at_zero = np.asarray(hermite_coefficients(activation, jnp.asarray(0.0), jnp.asarray(0.5), 3))
    np.testing.assert_allclose(at_zero, [sigma(0.5), 0, 0, 0], atol=1e-15)


def _angle_density(d):
    """The density of the cosine of two independent uniform directions of R^d on [−1, 1]."""
    return lambda c: (1 - c * c) ** ((d - 3) / 2) / scipy.special.beta(0.5, (d - 1) / 2)


@pytest.mark.parametrize("d, terms", [(40, 24), (6, 200)])
def test_radial_loss_is_the_full_loss_averaged_over_the_angle(d, terms):
    """Two reduced neurons (u, r, b) of an isotropic two-class population: the loss of the measure they stand for
    (each a uniform shell of directions), from the library's closed-form Gaussian kernels (the bivariate normal CDF
    with the bias) integrated over the cosine c of two directions with its density by scipy, against the angular
    expansion."""
    pop = datasets.isotropic_gaussians(d=d, delta=0.5)
    theta = np.array([[0.8, 1.2, 0.3], [-0.5, 0.7, -0.4]])  # (u, r, b)
    masses = np.array([0.3, 0.7])
    a = masses * theta[:, 0]
    expected = 0.0
    for pi, s, y in zip((0.5, 0.5), pop.scales, (1.0, -1.0)):
        means = [float(gaussian_mean("relu", jnp.float64(b), jnp.float64((s * r) ** 2))) for _, r, b in theta]
        pair = np.zeros((2, 2))
        for j, (_, r1, b1) in enumerate(theta):
            for l, (_, r2, b2) in enumerate(theta):
                def kernel(c):
                    return float(gaussian_product("relu", "relu", jnp.float64(b1), jnp.float64((s * r1) ** 2),
                                                  jnp.float64(b2), jnp.float64((s * r2) ** 2),
                                                  jnp.float64(s * s * r1 * r2 * c)))
                pair[j, l] = scipy.integrate.quad(lambda c: kernel(c) * _angle_density(d)(c), -1, 1, epsabs=1e-13)[0]
        expected += pi * (0.5 * y * y - y * a @ np.array(means) + 0.5 * a @ pair @ a)
    flow = flows.RadialTwoLayer("relu", bias=True, terms=terms)
    loss = flow.loss_value(jnp.asarray(theta), jnp.asarray(masses), pop)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-9)


def _coupled(N, seed, bias, copies=1, d=40, t1=1.0):
    """The full network of N neurons and its radial reduction started from the same radii (and output weights and
    biases): the full loss and the radial loss at 0 and t1. Each neuron is held by `copies` identical particles
    (the same network, and the same compiled program as N·copies neurons)."""
    rng = np.random.default_rng(seed)
    w, u = rng.standard_normal((N, d)) / np.sqrt(d), rng.standard_normal((N, 1))
    extra = {"b": 0.5 * rng.standard_normal((N, 1))} if bias else {}
    w, u, extra = np.repeat(w, copies, 0), np.repeat(u, copies, 0), {k: np.repeat(v, copies, 0) for k, v in extra.items()}
    pop = datasets.isotropic_gaussians(d=d, delta=0.5)
    full = mfpde.FlowProblem(flows.TwoLayer("relu", bias=bias), pop, measures.Particles(u=u, w=w, **extra), (0.0, t1))
    radial = mfpde.FlowProblem(flows.RadialTwoLayer("relu", bias=bias), pop,
                               measures.Particles(u=u, r=np.linalg.norm(w, axis=1, keepdims=True), **extra), (0.0, t1))
    # Tsit5, which the probes pick for both, given: no probe programs to compile.
    return [mfpde.solve(problem, Particles(), saveat=[0.0, t1], solver=diffrax.Tsit5()).dataset.loss.values
            for problem in (full, radial)]


def _mean_gap(N, bias, copies=1, seeds=(0, 1)):
    return np.mean([np.max(np.abs(np.subtract(*_coupled(N, seed, bias, copies)))) for seed in seeds])


def test_radial_particles_follow_the_full_network_from_the_same_radii():
    """At d = 40, N neurons' directions are uniform up to their fluctuation, and the loss curves of the full network
    and of its reduction started from the same radii differ by about 0.25/N (measured: 0.0095, 0.0041, 0.0010 at
    N = 16, 64, 256, means over 3 draws): the gap shrinks as N grows."""
    small, large = _mean_gap(16, bias=False, copies=4), _mean_gap(64, bias=False)
    assert large < 0.7 * small and large < 6e-3, (small, large)


@pytest.mark.slow
def test_radial_particles_follow_the_full_network_with_biases():
    """As above with trained biases: a network that is not positively homogeneous (the bivariate normal CDF in the full
    kernel, the whole Hermite series in the reduced one)."""
    small, large = _mean_gap(128, bias=True, copies=4), _mean_gap(512, bias=True)
    assert large < 0.5 * small and large < 1e-3, (small, large)


@pytest.mark.slow  # 25 s; the notebook test runs the radial grid against reduced particles at a small size
def test_radial_grid_converges_to_the_radial_particles():
    """The reduced flow of a softplus network (u fixed, no bias: one gridded coordinate r) on grids of 50 and 100
    cells against 4096 reduced particles at the chi law's stratified quantiles: the grid's first-order upwind error
    halves with h (measured 6.2e-5, 3.0e-5, 1.5e-5, 7.5e-6 at 50, 100, 200, 400 cells)."""
    d, t1 = 40, 1.0
    pop = datasets.isotropic_gaussians(d=d, delta=0.5)
    flow = flows.RadialTwoLayer("softplus", train_output=False)
    N = 4096
    r = scipy.stats.chi(d, scale=1 / np.sqrt(d)).ppf((np.arange(N) + 0.5) / N)[:, None]
    reference = mfpde.FlowProblem(flow, pop, measures.Particles(u=np.ones((N, 1)), r=r), (0.0, t1))
    particles = mfpde.solve(reference, Particles(), saveat=[t1]).dataset.loss.values[0]
    problem = mfpde.FlowProblem(flow, pop, measures.Product(u=measures.Gaussian(1.0, 0.0),
                                                            r=measures.GaussianRadius(d, 1 / np.sqrt(d))), (0.0, t1))
    errors = []
    for cells in (50, 100):
        grid = Grid(bounds=[(0.0, 2.5)], cells=cells, axes=("r",), fixed={"u": 1.0})
        errors.append(abs(float(mfpde.solve(problem, grid, saveat=[t1]).dataset.loss.values[0]) - particles))
    assert 0.4 * errors[0] < errors[1] < 0.6 * errors[0] and errors[1] < 5e-5, errors


def test_radial_gibbs_state_is_the_chi_law():
    """Without data (α = 0) the full Gibbs state is N(0, τ/λ I_d); its radius has the chi law scaled by √(τ/λ), which
    the Jacobian term −τ(d − 1) log r gives the reduced flow: the Gibbs fixed point on a grid in r against
    scipy's chi distribution, cell by cell."""
    d, tau, lam = 10, 0.2, 0.8
    pop = datasets.isotropic_gaussians(d=d, delta=0.5)
    flow = flows.RadialTwoLayer("relu", alpha=0.0, train_output=False, l2=lam, temperature=tau)
    init = measures.Product(u=measures.Gaussian(1.0, 0.0), r=measures.GaussianRadius(d, 0.3))
    grid = Grid(bounds=[(0.0, 4.0)], cells=400, axes=("r",), fixed={"u": 1.0})
    ds = mfpde.solve(mfpde.StationaryProblem(flow, pop, init), GibbsFixedPoint(grid)).dataset
    edges = np.linspace(0.0, 4.0, 401)
    expected = np.diff(scipy.stats.chi(d, scale=np.sqrt(tau / lam)).cdf(edges)) / (edges[1] - edges[0])
    np.testing.assert_allclose(ds.density.values, expected, atol=2e-3 * expected.max())


def test_population_gibbs_state_is_where_the_noisy_radial_flow_settles():
    """A noisy reduced flow with data (softplus, τ > 0, weight decay): the self-consistent Gibbs state found by
    GibbsFixedPoint on a population risk against the grid integrated in time until it no longer moves."""
    d = 10
    pop = datasets.isotropic_gaussians(d=d, delta=0.5)
    flow = flows.RadialTwoLayer("softplus", alpha=2.0, train_output=False, l2=0.5, temperature=0.05)
    init = measures.Product(u=measures.Gaussian(-1.0, 0.0), r=measures.GaussianRadius(d, 0.3))
    grid = Grid(bounds=[(0.0, 3.0)], cells=120, axes=("r",), fixed={"u": -1.0})
    gibbs = mfpde.solve(mfpde.StationaryProblem(flow, pop, init), GibbsFixedPoint(grid)).dataset
    settled = mfpde.solve(mfpde.FlowProblem(flow, pop, init, (0.0, 40.0)), grid, saveat=[30.0, 40.0]).dataset
    np.testing.assert_allclose(settled.density.values[0], settled.density.values[1], atol=1e-6)  # no longer moving
    np.testing.assert_allclose(gibbs.density.values, settled.density.values[1], atol=1e-5 * gibbs.density.values.max())
    np.testing.assert_allclose(float(gibbs.loss), float(settled.loss[1]), rtol=1e-7)


def test_radial_flow_refuses_data_without_the_symmetry():
    flow = flows.RadialTwoLayer()
    with pytest.raises(TypeError, match="`data` of RadialTwoLayer must be an isotropic mfpde.Population"):
        flow.groups(datasets.teacher(0, n=8, d=2))
    shifted = mfpde.Population(np.ones((1, 3)))
    with pytest.raises(ValueError, match="`data` of RadialTwoLayer must be rotation invariant"):
        flow.groups(shifted)
    with pytest.raises(ValueError, match="`data` of RadialTwoLayer must be rotation invariant"):
        flow.groups(datasets.teacher_population(0, d=3, activation="relu"))
    with pytest.raises(ValueError, match="`terms` of RadialTwoLayer"):
        flows.RadialTwoLayer(terms=-1)
    with pytest.raises(ValueError, match="`dim` of GaussianRadius must be a positive integer"):
        measures.GaussianRadius(0)
    with pytest.raises(ValueError, match="`std` of GaussianRadius must be a positive scalar"):
        measures.GaussianRadius(3, 0.0)
    with pytest.raises(ValueError, match="GaussianRadius is a measure of one coordinate"):
        measures.GaussianRadius(3).sample(jax.random.key(0), 4, {"u": 1, "r": 1})
