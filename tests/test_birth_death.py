"""Birth and death of mass (flows.BirthDeath): particles and grid against closed forms of the weighted
Ornstein–Uhlenbeck flow, the speed-up on a teacher–student task, and bad input."""

import numpy as np
import pytest
from scipy.stats import norm

import mfpde
from solvers import Grid, Particles

KAPPA, RATE = 1.0, 2.0
TIMES = np.linspace(0.0, 1.0, 5)


def _ou(conserve=True):
    return mfpde.flows.BirthDeath(mfpde.flows.OrnsteinUhlenbeck(kappa=KAPPA), rate=RATE, conserve=conserve)


@pytest.mark.parametrize("conserve", [True, False])
def test_particles_follow_each_particle_in_closed_form(conserve):
    """V = κθ²/2: θ_j(t) = θ_j(0) e^{−κt}, and Φ = V gives m_j(t) = m_j(0) exp(−α θ_j(0)² (1 − e^{−2κt})/4), times
    exp(α ∫Φ̄) (the normalisation to the initial total) with conservation."""
    theta0 = norm.ppf((np.arange(40) + 0.5) / 40)
    masses0 = np.linspace(1.0, 3.0, 40) / 80.0
    prob = mfpde.FlowProblem(_ou(conserve), None, mfpde.measures.Particles(theta=theta0, masses=masses0), (0.0, 1.0))
    ds = mfpde.solve(prob, Particles(save_state=True), saveat=TIMES, rtol=1e-10, atol=1e-12).dataset
    for i, t in enumerate(TIMES):
        m = masses0 * np.exp(-RATE * theta0**2 * (1 - np.exp(-2 * KAPPA * t)) / 4)
        if conserve:
            m *= masses0.sum() / m.sum()
        np.testing.assert_allclose(ds.particle_mass.values[i], m, rtol=1e-8, atol=0)
        np.testing.assert_allclose(ds.theta.values[i, :, 0], theta0 * np.exp(-KAPPA * t), rtol=0, atol=1e-9)
        np.testing.assert_allclose(float(ds.mass[i]), m.sum(), rtol=1e-9)
        mean = m @ (theta0 * np.exp(-KAPPA * t)) / m.sum()
        np.testing.assert_allclose(float(ds.theta_mean[i, 0]), mean, atol=1e-9)
    if not conserve:
        assert float(ds.mass[-1]) < 0.9 * float(ds.mass[0])


def test_grid_follows_the_gaussian_closed_form_at_first_order():
    """From N(0, v₀) the measure stays Gaussian: ∂_t ρ = ∂_θ(ρκθ) − α(V − V̄)ρ gives v̇ = −2κv − ακv², so
    1/v(t) = (1/v₀ + α/2) e^{2κt} − α/2. The τ = 0 grid (upwind) error halves with h; mass stays 1 to rounding."""
    exact = 1 / ((1 + RATE / 2) * np.exp(2 * KAPPA * TIMES) - RATE / 2)
    errors = []
    for cells in (100, 200):
        prob = mfpde.FlowProblem(_ou(), None, mfpde.measures.Gaussian(std=1.0), (0.0, 1.0))
        ds = mfpde.solve(prob, Grid([(-6, 6)], cells), saveat=TIMES).dataset
        np.testing.assert_allclose(ds.mass.values, 1.0, atol=1e-13)
        errors.append(np.max(np.abs(ds.theta_cov.values[:, 0, 0] - exact)))
    assert errors[0] < 0.03 and 1.7 < errors[0] / errors[1] < 2.3, errors


def test_birth_death_trains_a_teacher_student_network_faster():
    """y = tanh(3x₁) − tanh(3x₂), realisable by two neurons (minimum 0): at equal width N = 16, four seeds, the loss
    with birth and death (α = 10) is below plain gradient flow's at every time measured (ratios 0.2–0.7 measured)."""
    X = np.random.default_rng(0).normal(size=(64, 2))
    data = mfpde.Dataset(X, np.tanh(3 * X[:, 0]) - np.tanh(3 * X[:, 1]))
    flow = mfpde.flows.BirthDeath(mfpde.flows.TwoLayer(activation="tanh"), rate=0.0)
    prob = mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(std=1.0), (0.0, 10.0))
    study = mfpde.EnsembleProblem(prob, {"rate": [0.0, 10.0], "seed": [0, 1, 2, 3]})
    ds = mfpde.solve(study, Particles(n=16), saveat=[0.0, 2.0, 5.0, 10.0]).dataset
    ratio = (ds.loss.sel(rate=10.0) / ds.loss.sel(rate=0.0)).values[:, 1:]
    assert np.all(ratio < 0.8) and np.exp(np.mean(np.log(ratio))) < 0.6, ratio
    np.testing.assert_allclose(ds.mass.values, 1.0, rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="`masses` of Particles must be finite and non-negative"):
        mfpde.measures.Particles(theta=[0.0, 1.0], masses=[0.5, -0.1])
    with pytest.raises(ValueError, match="`masses` of Particles must have a positive total mass"):
        mfpde.measures.Particles(theta=[0.0, 1.0], masses=[0.0, 0.0])
    with pytest.raises(ValueError, match="`masses` of Particles must have shape \\(2,\\)"):
        mfpde.measures.Particles(theta=[0.0, 1.0], masses=[1.0])
    with pytest.raises(ValueError, match="`rate` of BirthDeath must be"):
        mfpde.flows.BirthDeath(mfpde.flows.OrnsteinUhlenbeck(), rate=-1.0)
    with pytest.raises(TypeError, match="`flow` of BirthDeath must be a flow on measures"):
        mfpde.flows.BirthDeath(mfpde.flows.Multilayer(activations=("tanh", "tanh")))
    noisy = mfpde.FlowProblem(mfpde.flows.BirthDeath(mfpde.flows.OrnsteinUhlenbeck(temperature=0.1)), None,
                              mfpde.measures.Gaussian(), (0.0, 1.0))
    with pytest.raises(ValueError, match="`temperature` must be 0 for BirthDeath on Particles"):
        mfpde.solve(noisy, Particles(n=4))
    with pytest.raises(ValueError, match="`temperature` must be 0 for BirthDeath on Grid"):
        mfpde.solve(noisy, Grid([(-3, 3)], 16))
